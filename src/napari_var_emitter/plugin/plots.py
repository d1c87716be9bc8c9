"""Small plots drawn with QPainter (no plotting library): a line, curves against x, a histogram, a
colour bar.

Each resizes with its dock and keeps a modest height, so the widgets fit a 1080p screen.
"""

from __future__ import annotations

import math

import numpy as np
from qtpy.QtCore import QPointF, QRectF, QSize, Qt
from qtpy.QtGui import QColor, QLinearGradient, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

LINE = QColor(255, 160, 40)
SECOND = QColor(60, 190, 255)  # a second curve
MARK = QColor(255, 255, 255)
FRAME = QColor(128, 128, 128)
TEXT = QColor(200, 200, 200)
# viridis at 0, 0.25, 0.5, 0.75, 1 (the emitters' colour map)
VIRIDIS = ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725")


class _Plot(QWidget):
    """A titled frame that resizes with the dock."""

    def __init__(self, title: str, parent: QWidget | None = None, height: int = 90) -> None:
        super().__init__(parent)
        self.title = title
        self.setMinimumHeight(height - 20)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self._height = height

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(260, self._height)

    def _area(self, painter: QPainter) -> QRectF:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(QPen(FRAME))
        rect = QRectF(self.rect().adjusted(4, 16, -4, -4))
        painter.drawRect(rect)
        return rect

    def _caption(self, painter: QPainter, text: str) -> None:
        painter.setPen(QPen(TEXT))
        painter.drawText(self.rect().adjusted(6, 0, 0, 0), Qt.AlignmentFlag.AlignLeft, text)


class LinePlot(_Plot):
    """A line through ``values`` (optionally on a log scale), its last value in the caption."""

    def __init__(self, title: str, log: bool = False, parent: QWidget | None = None, height=90, mean=False):
        super().__init__(title, parent, height)
        self.log, self.mean = log, mean  # the caption gives the last value, or with ``mean`` the mean
        self.values: list[float] = []

    def clear(self) -> None:
        self.values = []
        self.update()

    def set_values(self, values) -> None:
        self.values = [float(v) for v in values if v is not None and math.isfinite(v)]
        self.update()

    def append(self, value: float) -> None:
        if value is not None and math.isfinite(value):
            self.values.append(float(value))
            self.update()

    def caption(self) -> str:
        if not self.values:
            return self.title
        scale = ", log scale" if self.log else ""
        low, high = min(self.values), max(self.values)
        value = f"mean {sum(self.values) / len(self.values):.4g}" if self.mean else f"{self.values[-1]:.4g}"
        return f"{self.title} {value} (min {low:.4g}, max {high:.4g}{scale})"

    def paintEvent(self, _event) -> None:  # noqa: N802 - Qt API
        painter = QPainter(self)
        rect = self._area(painter)
        self._caption(painter, self.caption())
        if not self.values:
            return
        ys = [math.log10(max(v, 1e-12)) if self.log else v for v in self.values]
        lo, hi = min(ys), max(ys)
        span = (hi - lo) or 1.0
        n = len(ys)
        points = QPolygonF(
            [
                QPointF(
                    rect.left() + rect.width() * (i / max(n - 1, 1)),
                    rect.bottom() - rect.height() * (y - lo) / span,
                )
                for i, y in enumerate(ys)
            ]
        )
        painter.setPen(QPen(LINE, 1.5))
        painter.drawPolyline(points)


class HistogramPlot(_Plot):
    """Bars of a histogram of ``values`` between their 1st and 99th percentiles, with its median."""

    def __init__(
        self, title: str, unit: str, bins: int = 30, parent: QWidget | None = None, height: int = 90
    ):
        super().__init__(title, parent, height)
        self.unit, self.bins = unit, bins
        self.counts = np.zeros(0)
        self.edges = np.zeros(0)
        self.median = math.nan
        self.marks: tuple[float, ...] = ()  # values marked by vertical lines (a filter's bounds)

    def set_marks(self, *values: float) -> None:
        self.marks = tuple(float(v) for v in values)
        self.update()

    def set_values(self, values) -> None:
        values = np.asarray(values, dtype=float)
        values = values[np.isfinite(values)]
        if len(values):
            lo, hi = np.percentile(values, [1, 99])
            self.counts, self.edges = np.histogram(
                values, bins=self.bins, range=(lo, hi if hi > lo else lo + 1)
            )
            self.median = float(np.median(values))
        else:
            self.counts, self.edges, self.median = np.zeros(0), np.zeros(0), math.nan
        self.update()

    def caption(self) -> str:
        if not len(self.counts):
            return f"{self.title}: none"
        return (
            f"{self.title}: median {self.median:.3g} {self.unit} ({self.edges[0]:.3g}-{self.edges[-1]:.3g})"
        )

    def paintEvent(self, _event) -> None:  # noqa: N802 - Qt API
        painter = QPainter(self)
        rect = self._area(painter)
        self._caption(painter, self.caption())
        if not len(self.counts) or self.counts.max() == 0:
            return
        width = rect.width() / len(self.counts)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(LINE)
        for k, count in enumerate(self.counts):
            h = rect.height() * count / self.counts.max()
            painter.drawRect(QRectF(rect.left() + k * width, rect.bottom() - h, max(width - 1, 1), h))
        span = self.edges[-1] - self.edges[0]
        painter.setPen(QPen(MARK, 1.5))
        for value in self.marks:
            if math.isfinite(value) and span > 0 and self.edges[0] <= value <= self.edges[-1]:
                x = rect.left() + rect.width() * (value - self.edges[0]) / span
                painter.drawLine(QPointF(x, rect.top()), QPointF(x, rect.bottom()))


class CurvePlot(_Plot):
    """Curves of y against a shared x (one colour each: orange, then blue), with an optional
    horizontal line (a threshold); the caption names the curves, and the axes' ranges are written
    in the corners."""

    COLORS = (LINE, SECOND)

    def __init__(self, title: str, x_label: str, parent: QWidget | None = None, height: int = 130):
        super().__init__(title, parent, height)
        self.x_label = x_label
        self.x = np.zeros(0)
        self.curves: dict[str, np.ndarray] = {}
        self.hline = math.nan
        self.note = ""

    def clear(self) -> None:
        self.set_curves(np.zeros(0), {})

    def set_curves(self, x, curves: dict, hline: float = math.nan, note: str = "") -> None:
        self.x = np.asarray(x, dtype=float)
        self.curves = {name: np.asarray(y, dtype=float) for name, y in curves.items()}
        self.hline, self.note = float(hline), note
        self.update()

    def caption(self) -> str:
        if not self.curves:
            return self.title
        names = ", ".join(f"{name} ({('orange', 'blue')[k % 2]})" for k, name in enumerate(self.curves))
        return f"{self.title}: {names}{'; ' + self.note if self.note else ''}"

    def _ranges(self) -> tuple[float, float, float, float]:
        ys = np.concatenate([y[np.isfinite(y)] for y in self.curves.values()] + [np.zeros(0)])
        if math.isfinite(self.hline):
            ys = np.append(ys, self.hline)
        x = self.x[np.isfinite(self.x)]
        x0, x1 = (float(x.min()), float(x.max())) if len(x) else (0.0, 1.0)
        y0, y1 = (float(ys.min()), float(ys.max())) if len(ys) else (0.0, 1.0)
        return x0, (x1 if x1 > x0 else x0 + 1), y0, (y1 if y1 > y0 else y0 + 1)

    def paintEvent(self, _event) -> None:  # noqa: N802 - Qt API
        painter = QPainter(self)
        rect = self._area(painter)
        self._caption(painter, self.caption())
        if not self.curves or not len(self.x):
            return
        x0, x1, y0, y1 = self._ranges()

        def at(x, y) -> QPointF:
            return QPointF(
                rect.left() + rect.width() * (x - x0) / (x1 - x0),
                rect.bottom() - rect.height() * (y - y0) / (y1 - y0),
            )

        for k, y in enumerate(self.curves.values()):
            ok = np.isfinite(self.x) & np.isfinite(y)
            step = max(1, int(ok.sum()) // 2000)  # a long trace is drawn from every few points
            points = [at(a, b) for a, b in zip(self.x[ok][::step], y[ok][::step], strict=True)]
            painter.setPen(QPen(self.COLORS[k % len(self.COLORS)], 1.5))
            painter.drawPolyline(QPolygonF(points))
        if math.isfinite(self.hline):
            painter.setPen(QPen(MARK, 1, Qt.PenStyle.DashLine))
            painter.drawLine(at(x0, self.hline), at(x1, self.hline))
        painter.setPen(QPen(TEXT))
        inner = rect.adjusted(3, 1, -3, -1)
        top, bottom = Qt.AlignmentFlag.AlignTop, Qt.AlignmentFlag.AlignBottom
        left, right = Qt.AlignmentFlag.AlignLeft, Qt.AlignmentFlag.AlignRight
        painter.drawText(inner, top | left, f"{y1:.3g}")
        painter.drawText(inner, bottom | left, f"{y0:.3g}  ({self.x_label} {x0:.3g})")
        painter.drawText(inner, bottom | right, f"{x1:.3g}")


class ColorBar(_Plot):
    """The emitters' colour map (viridis, probability 0 to 1) with the detection threshold marked."""

    def __init__(self, title: str = "emitter rings: detection probability", parent: QWidget | None = None):
        super().__init__(title, parent, height=42)
        self.threshold = math.nan

    def paintEvent(self, _event) -> None:  # noqa: N802 - Qt API
        painter = QPainter(self)
        rect = QRectF(self.rect().adjusted(4, 16, -4, -12))
        gradient = QLinearGradient(rect.topLeft(), rect.topRight())
        for k, color in enumerate(VIRIDIS):
            gradient.setColorAt(k / (len(VIRIDIS) - 1), QColor(color))
        painter.fillRect(rect, gradient)
        self._caption(painter, self.title)
        painter.setPen(QPen(TEXT))
        bottom = self.rect().adjusted(6, 0, -6, 0)
        painter.drawText(bottom, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignBottom, "0")
        painter.drawText(bottom, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignBottom, "1")
        if math.isfinite(self.threshold):
            x = rect.left() + rect.width() * self.threshold
            painter.setPen(QPen(QColor(255, 255, 255), 2))
            painter.drawLine(QPointF(x, rect.top()), QPointF(x, rect.bottom()))
