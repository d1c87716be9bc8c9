"""How much of a frame a gate on emitters could skip: tiles with an emitter, and the area they cost.

python training/bench_gate.py [--frames 200] [--sets LD-high,LD-low,HD-high,pupil-LD]
                              [--localizations FILE.csv --size H,W]

A network that works only where the emitters are computes each tile that holds an emitter, plus a
halo of context on every side (the full-resolution layers need their neighbours). Here the gate is
perfect: it opens a tile exactly when a true emitter lies in the tile or its halo (benchmark.py's
synthetic sets, their true positions). For each tile size and halo the table gives the share of tiles
opened and the pixels computed as a share of the frame's (tiles with their halos overlap, so this can
pass 100 %). ``--localizations`` adds a row from a localization table (docs/CONVENTIONS.md's CSV,
e.g. ``predict`` on real frames of ``--size`` pixels) in place of a truth.
A real gate opens more (false candidates) or loses emitters (missed dim ones); this is its best case.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark import REPO, make_set  # noqa: E402
from napari_var_emitter.io.localizations import read_csv  # noqa: E402

TILINGS = ((32, 4), (16, 0), (16, 4), (8, 4))  # (tile px, halo px)


def tile_shares(frame, x, y, n_frames: int, size: tuple[int, int], tile: int, halo: int):
    """(share of tiles opened, pixels computed / frame pixels) for emitters at (x, y) px."""
    ny, nx = -(-size[0] // tile), -(-size[1] // tile)
    opened = np.zeros((n_frames, ny, nx), bool)
    # pixel i spans [i - 0.5, i + 0.5) (napari); tile k with its halo spans pixels
    # [k * tile - halo, (k + 1) * tile + halo), so it holds u = x + 0.5 for k in [lo, hi]
    u, v = np.asarray(x) + 0.5, np.asarray(y) + 0.5
    lo_x = np.clip(np.floor((u - halo) / tile).astype(int), 0, nx - 1)
    hi_x = np.clip(np.floor((u + halo) / tile).astype(int), 0, nx - 1)
    lo_y = np.clip(np.floor((v - halo) / tile).astype(int), 0, ny - 1)
    hi_y = np.clip(np.floor((v + halo) / tile).astype(int), 0, ny - 1)
    for f, x0, x1, y0, y1 in zip(frame, lo_x, hi_x, lo_y, hi_y, strict=True):
        opened[f, y0 : y1 + 1, x0 : x1 + 1] = True
    share = float(opened.mean())
    return share, share * ((tile + 2 * halo) / tile) ** 2


def row(name: str, frame, x, y, n_frames: int, size) -> dict:
    out = {"data": name, "emitters / frame": f"{len(x) / n_frames:.1f}"}
    for tile, halo in TILINGS:
        share, area = tile_shares(frame, x, y, n_frames, size, tile, halo)
        out[f"{tile} px + {halo}"] = f"{100 * share:.0f} % / {100 * area:.0f} %"
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--sets", default="LD-high,LD-low,HD-high,pupil-LD")
    p.add_argument("--localizations", type=Path, help="a localization CSV to add as a row")
    p.add_argument("--size", default="128,128", help="H,W of the frames behind --localizations")
    args = p.parse_args(argv)

    rows = []
    for name in [s for s in args.sets.split(",") if s]:
        bench = make_set(name, args.frames, REPO / "tests" / "data")
        rows.append(row(name, bench.truth.frame, bench.truth.x, bench.truth.y, args.frames, (64, 64)))
    if args.localizations is not None:
        locs = read_csv(args.localizations, 100.0)
        size = tuple(int(v) for v in args.size.split(","))
        n_frames = int(locs.frame.max()) + 1 if len(locs.frame) else 1
        rows.append(row(args.localizations.name, locs.frame, locs.x, locs.y, n_frames, size))

    keys = list(rows[0])
    print("Tiles opened / pixels computed, for tile size + halo on each side (a perfect gate):\n")
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(r.get(k, "") for k in keys) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
