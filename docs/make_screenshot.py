#!/usr/bin/env python
"""Make docs/screenshot.png: the sample movie, its progressive maps and the emitter points.

Drives the real "Predict emitters" dock widget with the bundled model, as a person would.
Needs a display: ``xvfb-run -a -s "-screen 0 1280x1024x24" python docs/make_screenshot.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

OUT = Path(__file__).with_name("screenshot.png")


def main() -> int:
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1280, 860)
    _, widget = viewer.window.add_plugin_dock_widget("napari-var-emitter", "Predict emitters")
    viewer.open_sample("napari-var-emitter", "simulated_smlm_movie")
    widget.scales.value = list(widget.scales.choices)  # every progressive level
    widget.run_button.click()
    app = QApplication.instance()
    while widget.running:
        app.processEvents()
    for layer in viewer.layers:  # show the finest map and the points over the movie
        if "probability" in layer.name:
            layer.visible = layer.name.endswith("64x64") or layer.name.endswith("8x8")
            layer.opacity = 0.45
            layer.blending = "additive"
        if layer.name.endswith("super-resolution") or layer.name.endswith("ground truth"):
            layer.visible = False
    viewer.dims.set_point(0, 5)
    app.processEvents()
    viewer.screenshot(str(OUT), canvas_only=False)
    print(f"wrote {OUT}")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
