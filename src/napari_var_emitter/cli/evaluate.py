"""``napari-var-emitter evaluate TRUTH LOCS``: SMLM challenge metrics (docs/CONVENTIONS.md)."""

from __future__ import annotations

import argparse

from ..errors import InputError
from .common import add_table_pixel_size, table_pixel_size


def add(sub) -> None:
    p = sub.add_parser("evaluate", help="compare localizations with a ground truth (SMLM challenge metrics)")
    p.add_argument("truth", metavar="TRUTH.csv", help="the true emitters: ThunderSTORM CSV or Picasso HDF5")
    p.add_argument("locs", metavar="LOCS.csv", help="the localizations: ThunderSTORM CSV or Picasso HDF5")
    add_table_pixel_size(p, camera_file=True)
    p.add_argument("--tolerance-nm", type=float, default=250.0, help="matching radius [nm]")
    p.add_argument("--match", choices=("hungarian", "greedy"), default="hungarian")
    p.set_defaults(run=run)


def format_report(report) -> str:
    """A two-column text table of a MetricReport's numbers."""
    rows = [
        ("Jaccard index [%]", "jaccard"),
        ("RMSE lateral [nm]", "rmse_nm"),
        ("efficiency E [%]", "efficiency"),
        ("recall", "recall"),
        ("precision", "precision"),
        ("bias x [nm]", "bias_x_nm"),
        ("bias y [nm]", "bias_y_nm"),
        ("RMSE / CRLB (isol.)", "rmse_over_crlb"),
        ("uncertainty calib.", "calibration"),
        ("true positives", "tp"),
        ("false positives", "fp"),
        ("false negatives", "fn"),
    ]
    lines = []
    for label, name in rows:
        value = getattr(report, name, None)
        if value is None:
            continue
        text = f"{value:d}" if isinstance(value, int) else f"{float(value):.4g}"
        lines.append(f"{label:<20} {text:>10}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..analysis.metrics import evaluate
    from ..io.tables import read_localizations

    if not args.tolerance_nm > 0:
        raise InputError(f"--tolerance-nm must be > 0, got {args.tolerance_nm}")
    # CSV (ours, ThunderSTORM; in nm) or Picasso HDF5 (in its own pixels, which then win)
    given = table_pixel_size(args)
    truth, truth_meta = read_localizations(args.truth, given)
    locs, locs_meta = read_localizations(args.locs, given)
    pixel_size_nm = given
    for meta in (truth_meta, locs_meta):
        if meta["format"] != "csv":
            pixel_size_nm = float(meta["pixel_size_nm"])
    if {truth_meta["format"], locs_meta["format"]} != {"csv"} and pixel_size_nm != given:
        if truth_meta["format"] == "csv":
            truth, _ = read_localizations(args.truth, pixel_size_nm)
        if locs_meta["format"] == "csv":
            locs, _ = read_localizations(args.locs, pixel_size_nm)
    sizes = {float(m["pixel_size_nm"]) for m in (truth_meta, locs_meta) if m["format"] != "csv"}
    if len(sizes) > 1:
        raise InputError(f"the two Picasso files have different pixel sizes: {sorted(sizes)} nm")
    report = evaluate(locs, truth, pixel_size_nm, tolerance_nm=args.tolerance_nm, method=args.match)
    print(
        f"{len(locs)} localizations vs {len(truth)} true emitters, {args.match} matching "
        f"within {args.tolerance_nm:g} nm"
    )
    print(format_report(report))
    return 0
