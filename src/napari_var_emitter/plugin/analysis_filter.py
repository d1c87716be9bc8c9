"""The "Filter" tab of "Analyze localizations": keep the localizations within ranges, as Picasso's
filter does.

One histogram per column (photons, precision in nm, probability, frame, PSF width in nm) with its
min and max fields, set to the layer's whole range when the layer is chosen; the fields' bounds
are marked on the histogram. "Apply" adds "<name> filtered": the rows within every range changed
from the whole range, with every feature column.
"""

from __future__ import annotations

import math

import numpy as np
from qtpy.QtWidgets import QDoubleSpinBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from ..analysis.selection import FILTER_COLUMNS, filter_mask, filter_values
from . import layer_tables as T
from .plots import HistogramPlot

# column -> (title, decimals of its fields)
TITLES = {
    "photons": ("photons", 0),
    "uncertainty_nm": ("precision", 1),
    "probability": ("probability", 3),
    "frame": ("frame", 0),
    "sigma_nm": ("PSF sigma", 1),
}
LIMIT = 1e12


class RangeRow(QWidget):
    """A histogram of one column and its min and max fields."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        title, self.decimals = TITLES[name]
        self.plot = HistogramPlot(title, FILTER_COLUMNS[name][1], height=72)
        self.low, self.high = QDoubleSpinBox(), QDoubleSpinBox()
        row = QHBoxLayout()
        for label, box in (("min", self.low), ("max", self.high)):
            box.setRange(-LIMIT, LIMIT)
            box.setMinimumWidth(80)  # its size hint would fit the whole range's digits
            box.setDecimals(self.decimals)
            box.setSingleStep(10.0**-self.decimals if self.decimals else 1.0)
            box.valueChanged.connect(self._mark)
            row.addWidget(QLabel(label))
            row.addWidget(box, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 4)
        layout.addWidget(self.plot)
        layout.addLayout(row)
        self.extent = (math.nan, math.nan)  # the fields' values for the whole range

    def set_values(self, values: np.ndarray) -> None:
        """Show the histogram of ``values`` and set the fields to their whole range."""
        finite = values[np.isfinite(values)]
        self.plot.set_values(finite)
        known = bool(len(finite))
        for box in (self.low, self.high):
            box.setEnabled(known)
        scale = 10.0**self.decimals
        low = math.floor(float(finite.min()) * scale) / scale if known else 0.0
        high = math.ceil(float(finite.max()) * scale) / scale if known else 0.0
        self.extent = (low, high) if known else (math.nan, math.nan)
        self.low.setValue(low)
        self.high.setValue(high)
        self.setToolTip("" if known else "unknown in this table: not filtered")

    def bounds(self) -> tuple[float, float] | None:
        """(min, max) where the fields narrow the whole range, else None (not filtered)."""
        if not self.low.isEnabled():
            return None
        low, high = self.low.value(), self.high.value()
        if (low, high) == self.extent:
            return None
        return low, high

    def _mark(self, _value=None) -> None:
        self.plot.set_marks(self.low.value(), self.high.value())


class FilterPanel(QWidget):
    def __init__(self, owner) -> None:
        super().__init__()
        self.owner = owner
        self.rows = {name: RangeRow(name) for name in FILTER_COLUMNS}
        self.apply_button = QPushButton("Apply")
        self.reset_button = QPushButton("Reset ranges")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        buttons = QHBoxLayout()
        buttons.addWidget(self.apply_button)
        buttons.addWidget(self.reset_button)
        layout = QVBoxLayout(self)
        for row in self.rows.values():
            layout.addWidget(row)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.apply_button.clicked.connect(self.apply)
        self.reset_button.clicked.connect(self.layer_changed)

    def layer_changed(self, _value=None) -> None:
        """Histograms and whole ranges of the chosen layer."""
        layer = self.owner.layer()
        if layer is None:
            for row in self.rows.values():
                row.set_values(np.zeros(0))
            return
        locs, px = self.owner.table(), self.owner.pixel_size_nm()
        for name, row in self.rows.items():
            row.set_values(filter_values(locs, name, px))
        self.status.setText("")

    def ranges(self) -> dict[str, tuple[float, float]]:
        """The ranges that narrow the whole range of their column."""
        return {name: row.bounds() for name, row in self.rows.items() if row.bounds() is not None}

    def apply(self) -> None:
        layer = self.owner.layer()
        if layer is None:
            self.status.setText("not started: no Points layer")
            return
        locs, px = self.owner.table(), self.owner.pixel_size_nm()
        ranges = self.ranges()
        keep = filter_mask(locs, ranges, px)
        name = f"{layer.name} filtered"
        self.owner.add_layer(T.derived_layer(layer, locs.subset(keep), name, rows=keep), above=layer)
        what = ", ".join(
            f"{TITLES[n][0]} {low:g}-{high:g}{' nm' if FILTER_COLUMNS[n][1] == 'nm' else ''}"
            for n, (low, high) in ranges.items()
        )
        share = 100.0 * keep.sum() / max(len(keep), 1)
        self.status.setText(
            f"kept {int(keep.sum()):,} of {len(keep):,} localizations ({share:.0f}%) in '{name}'"
            f"{': ' + what if what else ' (no range narrowed)'}"
        )
