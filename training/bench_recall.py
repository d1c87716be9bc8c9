"""Which emitters a model finds: recall by photons and by distance to the nearest other emitter.

python training/bench_recall.py --set HD-low --frames 300 [--validation]
                                --models bundled,runs/other.pt [--threshold 0.7]

Runs ``predict`` (progressive mode, the set's true camera, as benchmark.py's ``var`` row) with each
model on one of benchmark.py's synthetic sets, matches the localizations to the truth (hungarian,
250 nm) and prints one markdown table: per bin of the true emitters' photons, of the distance to
their nearest neighbour in the same frame, and of that neighbour's brightness (for neighbours
closer than 2 px), the number of true emitters and each model's recall. Comparing two weights on
the same frames shows where one gains or loses: among dim isolated spots, or beside brighter ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark import ALL_SETS, REPO, make_set  # noqa: E402
from napari_var_emitter.analysis.metrics import match  # noqa: E402
from napari_var_emitter.localize import PredictOptions, predict, resolve_model  # noqa: E402

PHOTON_BINS = (0, 500, 800, 1100, 2000, 5000, 10000, np.inf)
DISTANCE_BINS_PX = (0, 1, 1.5, 2, 3, np.inf)
RATIO_BINS = (0, 0.7, 1.5, np.inf)  # the nearest neighbour's photons / the emitter's
CLOSE_PX = 2.0


def nearest_neighbours(truth) -> tuple[np.ndarray, np.ndarray]:
    """Per true emitter: the distance (px) to the nearest other emitter of its frame (inf if alone)
    and that neighbour's photons over its own. Frames are a third axis, further apart than any two
    emitters of one frame (as ``analysis.metrics.isolated`` does)."""
    n = len(truth.x)
    if n < 2:
        return np.full(n, np.inf), np.zeros(n)
    gap = float(np.hypot(np.ptp(truth.x), np.ptp(truth.y))) + 1.0
    points = np.column_stack([truth.x, truth.y, truth.frame * gap])
    d, j = cKDTree(points).query(points, k=2, distance_upper_bound=gap)  # itself, then the nearest
    distance, alone = d[:, 1], ~np.isfinite(d[:, 1])
    neighbour = np.where(alone, 0, j[:, 1])
    ratio = np.where(alone, 0.0, truth.photons[neighbour] / truth.photons)
    return distance, ratio


def found(bench, model_name: str, threshold: float | None) -> np.ndarray:
    """Which true emitters the model's localizations match."""
    model = resolve_model(model_name, bench.frames, bench.camera).model
    options = PredictOptions(camera=bench.camera, threshold=threshold)
    locs = predict(bench.frames, model, options=options).localizations
    _, truth_index = match(locs, bench.truth, bench.camera.pixel_size_nm)
    hit = np.zeros(len(bench.truth.x), bool)
    hit[truth_index] = True
    return hit


def _label(edges, k: int, unit: str) -> str:
    lo, hi = edges[k], edges[k + 1]
    return f"{lo:g}+ {unit}" if np.isinf(hi) else f"{lo:g}-{hi:g} {unit}"


def recall_table(truth, hits: dict[str, np.ndarray]) -> str:
    distance, ratio = nearest_neighbours(truth)
    groups = [("all", np.ones(len(truth.x), bool))]
    for edges, values, unit, mask in (
        (PHOTON_BINS, truth.photons, "photons", None),
        (DISTANCE_BINS_PX, distance, "px to the nearest", None),
        (RATIO_BINS, ratio, f"x its photons, within {CLOSE_PX:g} px", distance < CLOSE_PX),
    ):
        for k in range(len(edges) - 1):
            inside = (values >= edges[k]) & (values < edges[k + 1])
            groups.append((_label(edges, k, unit), inside if mask is None else inside & mask))
    names = list(hits)
    lines = [
        "| true emitters | n | " + " | ".join(f"recall {n} [%]" for n in names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for label, sel in groups:
        n = int(sel.sum())
        if n == 0:
            continue
        cells = [f"{100 * hits[m][sel].mean():.1f}" for m in names]
        lines.append(f"| {label} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    synthetic = [s for s in ALL_SETS if s != "deepstorm_demo1"]
    parser.add_argument("--set", default="HD-low", choices=synthetic, help="a synthetic set of benchmark.py")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--validation", action="store_true", help="the set on its validation seed")
    parser.add_argument("--models", default="bundled", help="comma-separated model names or checkpoints")
    parser.add_argument(
        "--threshold", type=float, default=None, help="detection threshold (each model's own)"
    )
    args = parser.parse_args(argv)
    bench = make_set(args.set, args.frames, REPO / "tests" / "data", validation=args.validation)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    hits = {m: found(bench, m, args.threshold) for m in models}
    seeds = "validation" if args.validation else "test"
    print(f"{args.set}, {args.frames} frames ({seeds} seed), {len(bench.truth.x)} true emitters\n")
    print(recall_table(bench.truth, hits))
    return 0


if __name__ == "__main__":
    sys.exit(main())
