#!/usr/bin/env python
"""Make docs/screenshot.png: the sample movie, its progressive maps (8x8 to 64x64), the emitter
points and the super-resolution render, one grid tile each.

Drives the real "Predict emitters" dock widget with the bundled model, as a person would.
Needs a display: ``xvfb-run -a -s "-screen 0 1920x1200x24" python docs/make_screenshot.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

OUT = Path(__file__).with_name("screenshot.png")


def main() -> int:
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1800, 1000)
    _, widget = viewer.window.add_plugin_dock_widget("napari-var-emitter", "Predict emitters")
    viewer.open_sample("napari-var-emitter", "simulated_smlm_movie")
    widget.scales.value = list(widget.scales.choices)  # every progressive level
    widget.run_button.click()
    app = QApplication.instance()
    while widget.running:
        app.processEvents()
    # one tile per layer: the movie, its maps coarse to fine, the emitters, the super-resolution render
    for layer in viewer.layers:
        layer.visible = not layer.name.endswith("ground truth")
        if "probability" in layer.name:
            layer.colormap = "magma"
            layer.contrast_limits = (0.0, 1.0)
        if layer.name.endswith("emitters"):
            layer.size = 2.5
    viewer.grid.enabled = True
    viewer.grid.shape = (2, 4)
    viewer.dims.set_point(0, 5)
    viewer.reset_view()
    app.processEvents()
    viewer.screenshot(str(OUT), canvas_only=False)
    print(f"wrote {OUT}")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
