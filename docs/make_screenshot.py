#!/usr/bin/env python
"""Make the pictures of README.md, driving the real plugin as a person would: the sample movie is
opened first, then Plugins > Predict emitters, then Predict with the default settings.

- ``docs/screenshot.png``: the viewer after Predict: the movie, the finest probability map over it,
  the emitters as rings, and the dock with its results panel;
- ``docs/results_panel.png``: the results panel alone (counts, photons, precision, the colour bar);
- ``docs/coarse_to_fine.png``: one frame and its probability maps coarse to fine (8x8 to 64x64),
  one grid tile each.

Needs a display: ``xvfb-run -a -s "-screen 0 1920x1200x24" python docs/make_screenshot.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import napari
import numpy as np
from PIL import Image, ImageDraw
from qtpy.QtWidgets import QApplication

DOCS = Path(__file__).parent
FRAME = 5


def _wait(widget) -> None:
    app = QApplication.instance()
    while widget.running:
        app.processEvents()
    app.processEvents()


def coarse_to_fine(viewer, side: int = 256, gap: int = 8) -> Image.Image:
    """One frame of the movie and each level's probability map of it, side by side, labelled."""
    from napari.utils.colormaps import ensure_colormap

    frame = np.asarray(viewer.layers["Simulated SMLM movie"].data[FRAME], dtype=float)
    low, high = np.percentile(frame, [1, 99.9])
    tiles = [("frame", np.repeat(np.clip((frame - low) / (high - low), 0, 1)[..., None], 3, -1))]
    magma = ensure_colormap("magma")
    for layer in viewer.layers:
        if "probability" in layer.name:
            level = np.asarray(layer.data[FRAME], dtype=float)
            tiles.append((layer.name.split()[-1], magma.map(level.ravel())[:, :3].reshape(*level.shape, 3)))
    width = len(tiles) * side + (len(tiles) - 1) * gap
    figure = Image.new("RGB", (width, side + 24), "white")
    draw = ImageDraw.Draw(figure)
    for k, (label, rgb) in enumerate(tiles):
        tile = Image.fromarray((255 * rgb).astype(np.uint8)).resize((side, side), Image.NEAREST)
        figure.paste(tile, (k * (side + gap), 0))
        draw.text((k * (side + gap) + side // 2 - 4 * len(label), side + 6), label, fill="black")
    return figure


def main() -> int:
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1800, 1050)
    viewer.open_sample("napari-var-emitter", "simulated_smlm_movie")  # the data first ...
    _, widget = viewer.window.add_plugin_dock_widget("napari-var-emitter", "Predict emitters")  # ... then
    widget.run_button.click()  # the defaults: the whole movie, every map level
    _wait(widget)
    viewer.layers["Simulated SMLM movie ground truth"].visible = False
    viewer.dims.set_point(0, FRAME)
    viewer.reset_view()
    QApplication.instance().processEvents()
    viewer.screenshot(str(DOCS / "screenshot.png"), canvas_only=False)
    widget.results.grab().save(str(DOCS / "results_panel.png"))

    coarse_to_fine(viewer).save(DOCS / "coarse_to_fine.png")
    print(f"wrote {DOCS / 'screenshot.png'}, {DOCS / 'results_panel.png'}, {DOCS / 'coarse_to_fine.png'}")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
