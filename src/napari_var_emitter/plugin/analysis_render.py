"""The "Render" tab of "Analyze localizations": a super-resolution image of the whole table.

A histogram (localizations per render pixel, fast for millions) or Gaussians of each localization's
uncertainty (:func:`..analysis.render.render_gaussians`), at a chosen render pixel in nm,
optionally coloured by time (the frames cut into spans, each span a colour of a colour map: an RGB
image). It runs in the background, a progress bar following the rows, Cancel stopping between
steps, and is added as "<name> render" on the localizations' geometry (docs/CONVENTIONS.md,
section 1: a map of factor 1 / zoom).
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, Label, SpinBox

from ..analysis import render
from ..analysis.render import color_by_time
from ..errors import InputError
from . import layer_tables as T
from .analysis_drift import Tab
from .layers import OUTPUT_OF, map_geometry, render_limits
from .worker_panel import WorkerPanel, relay_errors

MAX_RENDER_BYTES = 2 << 30  # a render (all its time spans) larger than this is refused
COLORMAPS = ("turbo", "viridis", "plasma", "hsv")


def zoom_for(pixel_size_nm: float, render_nm: float) -> int:
    """Render pixels per camera pixel: the whole number nearest ``pixel_size_nm / render_nm``."""
    return max(1, round(pixel_size_nm / render_nm))


class RenderPanel(Tab):
    def __init__(self, owner) -> None:
        super().__init__(owner)
        self.render_nm = FloatSpinBox(
            label="render pixel (nm)",
            min=0.5,
            max=10000,
            step=1,
            value=10,
            tooltip="the size of one pixel of the image; rounded so that a camera pixel holds a "
            "whole number of them",
        )
        self.method = ComboBox(
            label="method",
            choices=[("histogram", "histogram"), ("Gaussians (uncertainty)", "gaussians")],
            value="histogram",
            tooltip="histogram: localizations per pixel (fast for millions); Gaussians: each localization "
            "drawn as a Gaussian of its uncertainty (slower: it runs in steps and can be cancelled)",
        )
        self.by_time = CheckBox(text="colour by time", value=False)
        self.time_bins = SpinBox(
            label="time spans",
            min=2,
            max=64,
            value=8,
            visible=False,
            tooltip="the frames cut into equal spans",
        )
        self.colormap = ComboBox(label="time colours", choices=COLORMAPS, value="turbo", visible=False)
        self.size = Label(value="")
        form = Container(
            widgets=[self.render_nm, self.method, self.by_time, self.time_bins, self.colormap, self.size]
        )
        self.lay_out(form, WorkerPanel("Render", "Render"))
        self.panel.cancel_button.setVisible(True)  # the render stops between steps
        self.by_time.changed.connect(self._by_time_changed)
        self.render_nm.changed.connect(self.describe)
        self.panel.run_button.clicked.connect(self.run)

    def _by_time_changed(self, _value=None) -> None:
        self.time_bins.visible = self.colormap.visible = bool(self.by_time.value)

    def settings(self):
        """(layer, table, zoom, frame shape), checked; InputError for a render too large."""
        layer = self.owner.layer()
        if layer is None:
            raise InputError("no Points layer: predict emitters, or open a localization table")
        locs, px = self.owner.table(), self.owner.pixel_size_nm()
        zoom = zoom_for(px, float(self.render_nm.value))
        shape = T.frame_shape_of(layer.metadata, locs)
        spans = int(self.time_bins.value) if self.by_time.value else 1
        size = 4 * spans * shape[0] * shape[1] * zoom**2
        if size > MAX_RENDER_BYTES:
            raise InputError(
                f"a render of {shape[0] * zoom}x{shape[1] * zoom} pixels ({spans} span(s)) would take "
                f"{size / 2**30:.1f} GB: choose a larger render pixel"
            )
        return layer, locs, zoom, shape

    def describe(self, _value=None) -> None:
        layer = self.owner.layer()
        if layer is None:
            self.size.value = ""
            return
        px = self.owner.pixel_size_nm()
        zoom = zoom_for(px, float(self.render_nm.value))
        self.size.value = f"{zoom}x the camera pixels: {px / zoom:.3g} nm render pixels"

    def run(self) -> None:
        try:
            layer, locs, zoom, shape = self.settings()
        except InputError as exc:
            self.panel.refuse(str(exc))
            return
        spans = int(self.time_bins.value) if self.by_time.value else 0
        self.panel.start(
            render_job,
            locs,
            shape,
            zoom,
            str(self.method.value),
            spans,
            total=max(len(locs), 1),
            message=f"rendering {len(locs):,} localizations...",
            on_progress=lambda event: self.panel.progress.setValue(event.done),
            on_returned=lambda image: self._done(layer, image, zoom, len(locs)),
        )

    def _done(self, layer, image, zoom: int, n: int) -> None:
        from napari.utils.colormaps import ensure_colormap

        px = T.pixel_size_of(layer)
        scale, translate = map_geometry(
            (1 / zoom, 1 / zoom), list(layer.scale)[-2:], list(layer.translate)[-2:]
        )
        kwargs = {
            "name": f"{layer.name} render",
            "scale": scale,
            "translate": translate,
            "metadata": {"render_factor": zoom, "render_pixel_nm": px / zoom, OUTPUT_OF: layer.name},
        }
        if image.ndim == 3:  # per time span: an RGB image
            centres = (np.arange(len(image)) + 0.5) / len(image)
            colors = ensure_colormap(str(self.colormap.value)).map(centres)[:, :3]
            data = color_by_time(image, colors)
            kwargs["rgb"] = True
            how = f"coloured by time ({len(image)} spans, {self.colormap.value})"
        else:
            data = image
            kwargs.update(colormap="inferno", contrast_limits=render_limits(image))
            how = str(self.method.value)
        self.owner.add_layer((data, kwargs, "image"), below=layer)
        self.status.setText(
            f"rendered {n:,} localizations, {how}, {data.shape[1]}x{data.shape[0]} pixels of "
            f"{px / zoom:.3g} nm in '{kwargs['name']}'"
        )


def render_job(locs, frame_shape, zoom: int, method: str, time_bins: int):
    """Generator run in the worker: :func:`..analysis.render.iter_render`."""
    steps = render.iter_render(
        locs, frame_shape, zoom, method=method, time_bins=time_bins, rows_per_step=render.ROWS_PER_STEP
    )
    return (yield from relay_errors(steps))
