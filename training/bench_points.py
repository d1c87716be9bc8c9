"""How quickly napari adds, draws and pans a localization table of 200,000, 1 million and 2 million
rows: shown whole as one Points layer, or as the plugin shows a table above its limit (a histogram
render and a random subsample of 200,000 points, the whole table kept in the layer's metadata).

Needs a display (under a virtual one: ``xvfb-run -a python training/bench_points.py``). Prints one
Markdown table: seconds to add the layers, to draw them once (``viewer.screenshot``), and to pan,
zoom and step to another frame and draw again.

    python training/bench_points.py [--sizes 200000,1000000,2000000] [--limit 200000]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from napari_var_emitter.analysis.render import render_histogram
from napari_var_emitter.io.localizations import Localizations
from napari_var_emitter.plugin import layers as L

FRAME_SHAPE = (256, 256)
N_FRAMES = 20_000
RENDER_FACTOR = 5  # 20 nm render pixels of 100 nm camera pixels


def table(n: int, seed: int = 0) -> Localizations:
    """``n`` localizations spread over a 256 x 256 camera and 20,000 frames."""
    rng = np.random.default_rng(seed)
    return Localizations(
        frame=np.sort(rng.integers(0, N_FRAMES, n)),
        x=rng.uniform(0, FRAME_SHAPE[1] - 1, n),
        y=rng.uniform(0, FRAME_SHAPE[0] - 1, n),
        photons=rng.gamma(4.0, 500.0, n),
        background=20.0,
        bkgstd=4.0,
        sigma=1.2,
        uncertainty=rng.uniform(0.05, 0.3, n),
        probability=rng.uniform(0.5, 1.0, n),
        grid_factor=1.0,
    )


def time_viewer(locs: Localizations, subsample: bool, limit: int) -> tuple[float, float, float]:
    """(add, draw, pan) seconds in a new viewer."""
    import napari

    viewer = napari.Viewer(show=True)
    try:
        start = time.perf_counter()
        if subsample:  # as the reader opens a large table: a histogram render of 20 nm pixels
            image = render_histogram(locs, FRAME_SHAPE, RENDER_FACTOR)
            scale, translate = L.map_geometry((1 / RENDER_FACTOR,) * 2, (1, 1), (0, 0))
            viewer.add_image(image, scale=scale, translate=translate, contrast_limits=L.render_limits(image))
        data, kwargs, _ = L.table_layer(locs, "table", limit=limit if subsample else len(locs))
        viewer.add_points(data, **kwargs)
        added = time.perf_counter()
        viewer.screenshot(canvas_only=True)
        drawn = time.perf_counter()
        camera = getattr(viewer, "scene", viewer).camera  # napari 0.9 moved it to the scene
        camera.center = (0, FRAME_SHAPE[0] / 4, FRAME_SHAPE[1] / 4)
        camera.zoom *= 2
        viewer.dims.set_current_step(0, N_FRAMES // 2)
        viewer.screenshot(canvas_only=True)
        panned = time.perf_counter()
    finally:
        viewer.close()
    return added - start, drawn - added, panned - drawn


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="200000,1000000,2000000", help="numbers of localizations")
    parser.add_argument("--limit", type=int, default=L.MAX_POINTS, help="points shown of a subsampled table")
    args = parser.parse_args(argv)
    sizes = [int(v) for v in args.sizes.split(",")]
    print("| localizations | shown as | add (s) | draw (s) | pan, zoom, step (s) |")
    print("|---:|---|---:|---:|---:|")
    for n in sizes:
        locs = table(n)
        for subsample in (False, True):
            if subsample and n <= args.limit:
                continue  # the plugin shows such a table whole
            add, draw, pan = time_viewer(locs, subsample, args.limit)
            how = f"render + {args.limit:,} points" if subsample else "all points"
            print(f"| {n:,} | {how} | {add:.2f} | {draw:.2f} | {pan:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
