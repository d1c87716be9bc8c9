"""Dock widget "Analyze localizations": drift, resolution, filter and render of a Points layer.

It works on a Points layer of localizations: the emitters of "Predict emitters", or a table opened
by the reader (ThunderSTORM CSV, Picasso HDF5). Lengths are in nm of the layer's
``metadata["pixel_size_nm"]`` (100 nm when it has none). A layer that shows a subsample of a large
table is analysed on its whole table (:mod:`.layer_tables`). Each tab is one task; the slow ones
(drift, FRC, render) run in the background with their own progress bar and status line
(:class:`.worker_panel.WorkerPanel`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from magicgui.widgets import ComboBox, Container, Label
from qtpy.QtWidgets import QTabWidget, QVBoxLayout, QWidget

from ..io.localizations import Localizations
from . import layer_tables as T
from .analysis_drift import DriftPanel, FRCPanel
from .analysis_filter import FilterPanel
from .analysis_render import RenderPanel
from .forms import scrolled

if TYPE_CHECKING:
    import napari

TITLE = "Analyze localizations"
MIN_WIDTH = 400  # px: as "Predict emitters"


class AnalysisWidget(QWidget):
    """Choose a Points layer, then a tab: Drift, Resolution (FRC), Filter, Render."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.points = ComboBox(label="localizations", choices=self._points_choices)
        self.info = Label(value="")
        self.info.native.setWordWrap(True)
        self.form = Container(widgets=[self.points, self.info])
        self.drift = DriftPanel(self)
        self.frc = FRCPanel(self)
        self.filter = FilterPanel(self)
        self.render = RenderPanel(self)
        self.tabs = QTabWidget()
        for panel, name in (
            (self.drift, "Drift"),
            (self.frc, "Resolution"),
            (self.filter, "Filter"),
            (self.render, "Render"),
        ):
            self.tabs.addTab(panel, name)
        content = QWidget()
        inner = QVBoxLayout(content)
        inner.addWidget(self.form.native)
        inner.addWidget(self.tabs)
        inner.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(scrolled(content))
        self.setMinimumWidth(MIN_WIDTH)

        self._chosen: str | None = None  # the name of the layer the user chose
        self._resetting = False
        self.points.changed.connect(self._chose)
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.reordered):
            event.connect(self._reset_choices)
        self._chose()

    # --- the layer --------------------------------------------------------------------------
    def _points_choices(self, _widget=None):
        from napari.layers import Points

        return [
            (layer.name, layer)
            for layer in self.viewer.layers
            if isinstance(layer, Points) and layer.ndim in (2, 3)
        ]

    def _reset_choices(self, _event=None) -> None:
        """New choices after layers were added, removed or moved: the layer chosen stays chosen, or
        the layer that took its name (a layer replaced by its drift-corrected table)."""
        before = self.points.value
        self._resetting = True
        try:
            self.points.reset_choices()
            same_name = [layer for _, layer in self._points_choices() if layer.name == self._chosen]
            if same_name and self.points.value is not same_name[0]:
                self.points.value = same_name[0]
        finally:
            self._resetting = False
        if self.points.value is not before:
            self._layer_changed()

    def layer(self):
        """The chosen Points layer, or None."""
        return self.points.value

    def table(self) -> Localizations:
        """The whole table of the chosen layer."""
        return T.table_of(self.layer())

    def pixel_size_nm(self) -> float:
        return T.pixel_size_of(self.layer())

    def _chose(self, _value=None) -> None:
        if not self._resetting:
            self._chosen = None if self.layer() is None else self.layer().name
            self._layer_changed()

    def _layer_changed(self, _value=None) -> None:
        layer = self.layer()
        if layer is None:
            self.info.value = "no Points layer: predict emitters, or open a localization table"
        else:
            n = T.n_localizations(layer)
            given = "pixel_size_nm" in layer.metadata
            source = "" if given else ", not given: the default"
            subsample = f" ({len(layer.data):,} shown)" if T.is_subsampled(layer) else ""
            self.info.value = (
                f"{n:,} localizations{subsample}; pixel size {self.pixel_size_nm():g} nm{source}"
            )
        self.filter.layer_changed()
        self.render.describe()

    def add_layer(self, layer_data, above=None, below=None):
        """Add a layer just above the layer ``above`` or just below ``below`` (a layer of the same
        name is replaced where it is), and return it."""
        from .layers import add_or_replace

        layers = self.viewer.layers
        replacing = layer_data[1]["name"] in layers
        new = add_or_replace(self.viewer, layer_data)
        anchor = above if above is not None else below
        if not replacing and anchor is not None and anchor in layers and anchor is not new:
            target = layers.index(anchor) + (1 if above is not None else 0)
            layers.move(layers.index(new), target)
        return new
