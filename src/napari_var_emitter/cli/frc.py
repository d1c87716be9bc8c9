"""``napari-var-emitter frc LOCS.csv``: the image resolution of a localization table, by Fourier ring
correlation (1/7 threshold)."""

from __future__ import annotations

import argparse
import json
import math

from .common import add_table_pixel_size, table_pixel_size


def add(sub) -> None:
    p = sub.add_parser("frc", help="image resolution of a localization table by Fourier ring correlation")
    p.add_argument("table", metavar="LOCS.csv", help="localization table: ThunderSTORM CSV or Picasso HDF5")
    p.add_argument("--json", action="store_true", help="print one JSON object: resolution_nm and the curve")
    p.add_argument(
        "--render-nm", type=float, default=None, help="pixel of the rendered halves [nm] (default 5)"
    )
    p.add_argument(
        "--block-frames",
        type=int,
        default=None,
        help="frames per block; blocks go to one half or the other at random (default: 1/40 of the movie)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random split into halves")
    add_table_pixel_size(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis.frc import frc
    from ..io.tables import read_localizations

    locs, meta = read_localizations(args.table, table_pixel_size(args))
    result = frc(
        locs,
        pixel_size_nm=float(meta["pixel_size_nm"]),
        render_nm=args.render_nm,
        block_frames=args.block_frames,
        seed=args.seed,
    )
    if args.json:
        print(json.dumps(result.to_dict()))
    elif math.isfinite(result.resolution_nm):
        n = sum(result.n_locs_halves)
        print(f"resolution {result.resolution_nm:.1f} nm (FRC at 1/7, {n} localizations)")
    else:
        print("resolution not found: the FRC curve does not cross 1/7 (try a smaller --render-nm)")
    return 0
