"""Peak memory of a long movie predicted from the "Predict emitters" widget with its defaults.

xvfb-run -a -s "-screen 0 1280x1024x24" python training/bench_widget_memory.py [--frames 10000] [--size 256]

Writes a seeded movie (uint16, sparse emitters) to a TIFF file, opens it lazily (read frame chunk by
frame chunk, as napari shows a memory-mapped or dask stack), adds it to a viewer, opens the widget,
presses Predict with the default settings (no maps for a stack this long: the localizations only)
and waits. Prints one Markdown table row: frames, size, localizations, minutes, frames/s and the
process's peak resident memory (VmHWM from /proc) once the viewer is open (the peak is
reset after the movie is written) and at the end of the run.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile


def peak_rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def write_movie(path: Path, n_frames: int, size: int, seed: int = 20_001) -> None:
    """A sparse movie, written block by block (never held whole in memory)."""
    from napari_var_emitter.simulation import SimulationConfig, simulate_movie

    config = SimulationConfig(frame_size=(size, size), density_per_um2=0.3)
    block = 500
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for k, start in enumerate(range(0, n_frames, block)):
            frames = simulate_movie(config, min(block, n_frames - start), seed=seed + k).frames
            for frame in np.clip(np.round(frames.numpy()), 0, 65535).astype(np.uint16):
                tif.write(frame, contiguous=True)


def reset_peak_rss() -> None:
    """Start the peak over from the current resident memory (Linux: clear_refs 5), so that writing
    the movie does not count."""
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args(argv)

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_var_emitter.io.stream import open_frames

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "movie.tif"
        write_movie(path, args.frames, args.size)
        frames = open_frames(path)
        viewer = napari.Viewer(show=False)
        viewer.add_image(frames, name="movie", contrast_limits=(0, 2000), multiscale=False)
        _, widget = viewer.window.add_plugin_dock_widget("napari-var-emitter", "Predict emitters")
        reset_peak_rss()
        before = peak_rss_mb()
        app = QApplication.instance()
        start = time.perf_counter()
        widget.run_button.click()
        while widget.running:
            app.processEvents()
            time.sleep(0.05)
        seconds = time.perf_counter() - start
        n = len(widget.outcome.localizations) if widget.outcome is not None else 0
        print(
            "| frames | size | maps | localizations | minutes | frames/s | peak memory before / after [MB] |"
        )
        print("|---|---|---|---|---|---|---|")
        print(
            f"| {args.frames:,} | {args.size} x {args.size} | {len(widget.outcome.job.maps)} | {n:,} | "
            f"{seconds / 60:.1f} | {args.frames / seconds:.1f} | {before:,.0f} / {peak_rss_mb():,.0f} |"
        )
        print(f"status: {widget.status.text()}", file=sys.stderr)
        viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
