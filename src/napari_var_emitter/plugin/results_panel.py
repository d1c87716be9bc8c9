"""The results panel of "Predict emitters": what the last run found, at a glance.

Emitters per frame (a small plot), histograms of photons and of localization precision in nm, the
density per um^2, the camera and the model used, and the colour bar of the emitter rings.
"""

from __future__ import annotations

from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

from ..analysis.summary import Summary
from .plots import ColorBar, HistogramPlot, LinePlot


class ResultsPanel(QWidget):
    """Hidden until a run has results; :meth:`show_summary` fills it."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.text = QLabel("")
        self.text.setWordWrap(True)
        self.per_frame = LinePlot("emitters per frame:", mean=True)
        self.photons = HistogramPlot("photons", "photons")
        self.precision = HistogramPlot("precision", "nm")
        self.legend = ColorBar()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for widget in (self.text, self.legend, self.per_frame, self.photons, self.precision):
            layout.addWidget(widget)
        self.summary: Summary | None = None
        self.setVisible(False)

    def show_summary(self, summary: Summary, threshold: float) -> None:
        self.summary = summary
        self.text.setText("\n".join(summary.lines()))
        self.per_frame.set_values(summary.per_frame)
        self.photons.set_values(summary.photons)
        self.precision.set_values(summary.precision_nm)
        self.legend.threshold = threshold
        self.legend.update()
        self.setVisible(True)
