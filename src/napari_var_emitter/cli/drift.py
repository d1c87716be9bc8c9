"""``napari-var-emitter drift IN.csv --out OUT.csv``: remove the stage drift from a localization table.

Every row is kept, in its order, with its id and every other column; only x and y change. A CSV in
and a CSV out: the input's lines are copied with the two position fields rewritten, so columns
this package does not know travel along too. The drift trace (frame, dx, dy in nm) is written
beside the output as ``OUT.drift.csv``.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from ..errors import CsvFormatError, InputError
from .common import add_table_pixel_size, say, table_pixel_size

TRACE_SUFFIX = ".drift.csv"


def add(sub) -> None:
    p = sub.add_parser(
        "drift", help="correct the stage drift of a localization table (redundant cross-correlation)"
    )
    p.add_argument("table", metavar="IN.csv", help="localization table: ThunderSTORM CSV or Picasso HDF5")
    p.add_argument("--out", required=True, metavar="OUT.csv", help="the corrected table (.csv or .hdf5)")
    p.add_argument(
        "--segments",
        type=int,
        default=None,
        help="time segments to cross-correlate (default: one per 2,000 localizations, 3 to 20)",
    )
    p.add_argument(
        "--fiducials",
        action="store_true",
        help="follow fiducial beads (emitters present in most frames) instead of cross-correlating",
    )
    p.add_argument("--max-drift-nm", type=float, default=1000.0, help="the largest drift searched [nm]")
    add_table_pixel_size(p)
    p.add_argument("--quiet", action="store_true", help="no summary line on stderr")
    p.set_defaults(run=run)


def trace_path(out: Path) -> Path:
    return out.with_name(out.stem + TRACE_SUFFIX)


def run(args: argparse.Namespace) -> int:
    from ..analysis.drift import estimate_drift, estimate_drift_fiducials
    from ..io.tables import read_localizations, table_format, write_localizations

    source, out = Path(args.table), Path(args.out)
    kind_in, kind_out = table_format(source), table_format(out)  # unknown suffixes refused first
    if out.resolve() == source.resolve():
        raise InputError("--out must not be the input table: write the corrected table beside it")
    if not out.parent.is_dir() and str(out.parent) != "":
        raise InputError(f"output folder {out.parent} does not exist")
    locs, meta = read_localizations(source, table_pixel_size(args))
    px = float(meta["pixel_size_nm"])
    if args.fiducials:
        drift = estimate_drift_fiducials(locs, pixel_size_nm=px, max_drift_nm=args.max_drift_nm)
    else:
        drift = estimate_drift(locs, pixel_size_nm=px, segments=args.segments, max_drift_nm=args.max_drift_nm)
    corrected = drift.apply(locs)
    if kind_in == kind_out == "csv":
        _rewrite_csv(source, out, (corrected.x + 0.5) * px, (corrected.y + 0.5) * px)
    else:
        extra = {k: meta[k] for k in ("frame_shape", "n_frames") if k in meta}
        write_localizations(corrected, out, pixel_size_nm=px, **extra)
    drift.to_csv(trace_path(out), px)
    span = np.hypot(drift.dx.max() - drift.dx.min(), drift.dy.max() - drift.dy.min()) * px
    how = f"{drift.n_fiducials} fiducials" if args.fiducials else f"{len(drift.segment_frames)} segments"
    say(
        args,
        f"{len(corrected)} localizations corrected ({how}; drift spans {span:.0f} nm) -> {out}, "
        f"trace -> {trace_path(out)}",
    )
    return 0


def _rewrite_csv(source: Path, out: Path, x_nm: np.ndarray, y_nm: np.ndarray) -> None:
    """``source`` line by line with its ``x [nm]`` and ``y [nm]`` fields replaced, written atomically."""
    from ..io.atomic import atomic_path

    with open(source, encoding="utf-8-sig", newline="") as handle:
        header_line = handle.readline()
        header = [h.strip().strip('"').strip() for h in next(csv.reader([header_line]))]
        try:
            cx, cy = header.index("x [nm]"), header.index("y [nm]")
        except ValueError:
            raise CsvFormatError(f'{source} lacks the columns "x [nm]" and "y [nm]"') from None
        with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8", newline="") as target:
            target.write(header_line if header_line.endswith("\n") else header_line + "\n")
            writer = csv.writer(target, lineterminator="\n")
            row_index = 0
            for row in csv.reader(handle):
                if not row:
                    continue
                row[cx], row[cy] = repr(float(x_nm[row_index])), repr(float(y_nm[row_index]))
                writer.writerow(row)
                row_index += 1
    if row_index != len(x_nm):
        raise CsvFormatError(f"{source} changed while it was corrected ({row_index} rows, {len(x_nm)} read)")
