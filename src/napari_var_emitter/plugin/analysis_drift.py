"""The "Drift" and "Resolution" tabs of "Analyze localizations": jobs that run in the background.

Drift: redundant cross-correlation of time segments or fiducials (:mod:`..analysis.drift`); the
trace dx, dy (nm) against frame is plotted and can be saved as CSV, and the corrected table (every
row, in order) is added as "<name> drift-corrected" or replaces the layer. Resolution: Fourier ring
correlation (:mod:`..analysis.frc`), its curve with the 1/7 threshold and the resolution in nm.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, SpinBox
from qtpy.QtWidgets import QFileDialog, QPushButton, QVBoxLayout, QWidget

from ..errors import VarEmitterError
from ..io.localizations import Localizations
from . import layer_tables as T
from .plots import CurvePlot
from .worker_panel import WorkerPanel, relay_errors

RCC, FIDUCIALS = "rcc", "fiducials"


def drift_job(
    locs: Localizations, pixel_size_nm: float, method: str, segments: int, radius_nm: float, n_frames
):
    """Generator run in the worker: the drift of ``locs`` and the corrected table."""
    from ..analysis.drift import estimate_drift, estimate_drift_fiducials

    def work():
        yield 0
        if method == RCC:
            drift = estimate_drift(
                locs, pixel_size_nm=pixel_size_nm, segments=segments or None, n_frames=n_frames
            )
        else:
            drift = estimate_drift_fiducials(
                locs, pixel_size_nm=pixel_size_nm, radius_nm=radius_nm, n_frames=n_frames
            )
        yield 1
        return drift, drift.apply(locs)

    return (yield from relay_errors(work()))


def frc_job(locs: Localizations, pixel_size_nm: float, render_nm: float):
    """Generator run in the worker: the FRC of ``locs``."""
    from ..analysis.frc import frc

    def work():
        yield 0
        result = frc(locs, pixel_size_nm=pixel_size_nm, render_nm=render_nm or None)
        yield 1
        return result

    return (yield from relay_errors(work()))


class Tab(QWidget):
    """A tab of the analysis widget: a form, a worker panel, a plot, top to bottom (:meth:`lay_out`)."""

    def __init__(self, owner) -> None:
        super().__init__()
        self.owner = owner

    def lay_out(self, form: Container, panel: WorkerPanel, plot=None) -> None:
        self.form, self.panel, self.plot = form, panel, plot
        self.status = panel.status
        self.panel.cancel_button.setVisible(False)  # one library call: nothing to stop between steps
        layout = QVBoxLayout(self)
        for part in (form.native, panel, plot):
            if part is not None:
                layout.addWidget(part)
        layout.addStretch(1)

    @property
    def running(self) -> bool:
        return self.panel.running

    def _source(self):
        """(layer, whole table, pixel size), or None after saying why not."""
        layer = self.owner.layer()
        if layer is None:
            self.panel.refuse("no Points layer: predict emitters, or open a localization table")
            return None
        return layer, self.owner.table(), self.owner.pixel_size_nm()


class DriftPanel(Tab):
    def __init__(self, owner) -> None:
        super().__init__(owner)
        self.method = ComboBox(
            label="method",
            choices=[("cross-correlation (RCC)", RCC), ("fiducials", FIDUCIALS)],
            value=RCC,
            tooltip="RCC: time segments rendered and cross-correlated (any sample with structure); "
            "fiducials: beads present in most frames, tracked and averaged",
        )
        self.segments = SpinBox(
            label="time segments",
            min=0,
            max=200,
            value=0,
            tooltip="RCC: the movie is cut into this many spans of frames (at least 3); "
            "0 = one per 2000 localizations, 3 to 20",
        )
        self.radius = FloatSpinBox(
            label="fiducial radius (nm)",
            min=5,
            max=5000,
            step=10,
            value=100,
            visible=False,
            tooltip="a fiducial's localizations lie within this distance of its place",
        )
        self.replace = CheckBox(
            text="replace the layer", value=False, tooltip="replace the layer's points by the corrected ones"
        )
        form = Container(widgets=[self.method, self.segments, self.radius, self.replace])
        panel = WorkerPanel("Correct drift", "Correct drift")
        self.save_button = QPushButton("Save trace...")
        self.save_button.setEnabled(False)
        panel.buttons.addWidget(self.save_button)
        self.lay_out(form, panel, CurvePlot("drift (nm)", "frame"))
        self.drift = None
        self.drift_pixel_size_nm = math.nan
        self.method.changed.connect(self._method_changed)
        self.panel.run_button.clicked.connect(self.run)
        self.save_button.clicked.connect(self._save_clicked)

    def _method_changed(self, _value=None) -> None:
        self.segments.visible = self.method.value == RCC
        self.radius.visible = self.method.value == FIDUCIALS

    def run(self) -> None:
        source = self._source()
        if source is None:
            return
        layer, locs, px = source
        name = layer.name if self.replace.value else f"{layer.name} drift-corrected"
        self.panel.start(
            drift_job,
            locs,
            px,
            self.method.value,
            int(self.segments.value),
            float(self.radius.value),
            T.n_frames_of(layer.metadata, locs),
            total=1,
            message=f"estimating the drift of {len(locs):,} localizations...",
            on_returned=lambda result: self._done(layer, px, name, *result),
        )

    def _done(self, layer, px: float, name: str, drift, corrected: Localizations) -> None:
        self.drift, self.drift_pixel_size_nm = drift, px
        dx, dy = drift.dx * px, drift.dy * px
        how = f"{drift.n_fiducials} fiducial(s)" if drift.method == "fiducials" else "cross-correlation"
        self.plot.set_curves(drift.frames, {"dx": dx, "dy": dy}, note=f"{how}")
        self.save_button.setEnabled(True)
        self.owner.add_layer(T.derived_layer(layer, corrected, name), above=layer)
        self.status.setText(
            f"drift by {how}: up to {np.abs(dx).max():.0f} nm in x, {np.abs(dy).max():.0f} nm in y over "
            f"{len(dx)} frames; {len(corrected):,} localizations corrected in '{name}'"
        )

    def _save_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save drift trace", "drift.csv", "CSV (*.csv)")
        if path:
            self.save_trace(path)

    def save_trace(self, path: str | Path) -> Path | None:
        """Write the last trace as ``frame,dx [nm],dy [nm]`` (frames 1-based)."""
        if self.drift is None:
            self.panel.refuse("no drift yet: press Correct drift first")
            return None
        try:
            written = self.drift.to_csv(path, self.drift_pixel_size_nm)
        except (VarEmitterError, OSError) as exc:
            self.panel.refuse(f"cannot write {path}: {exc}")
            return None
        self.status.setText(f"drift trace saved to {written}")
        return written


class FRCPanel(Tab):
    def __init__(self, owner) -> None:
        super().__init__(owner)
        self.render_nm = FloatSpinBox(
            label="render pixel (nm, 0 = auto)",
            min=0,
            max=500,
            step=1,
            value=0,
            tooltip="the histogram pixel of the two halves; 0 = 5 nm (coarser for a field wider "
            "than 4096 such pixels)",
        )
        panel = WorkerPanel("Resolution (FRC)", "Compute FRC")
        self.lay_out(Container(widgets=[self.render_nm]), panel, CurvePlot("FRC", "1/nm"))
        self.result = None
        self.panel.run_button.clicked.connect(self.run)

    def run(self) -> None:
        source = self._source()
        if source is None:
            return
        _layer, locs, px = source
        self.panel.start(
            frc_job,
            locs,
            px,
            float(self.render_nm.value),
            total=1,
            message=f"Fourier ring correlation of {len(locs):,} localizations...",
            on_returned=self._done,
        )

    def _done(self, result) -> None:
        self.result = result
        found = math.isfinite(result.resolution_nm)
        text = (
            f"resolution {result.resolution_nm:.1f} nm" if found else "no resolution: no threshold crossing"
        )
        self.plot.set_curves(result.frequencies, {"FRC": result.curve}, hline=result.threshold, note=text)
        halves = f"halves of {result.n_locs_halves[0]:,} and {result.n_locs_halves[1]:,} localizations"
        self.status.setText(
            f"{text} (FRC = 1/7; {halves}, blocks of {result.block_frames} frames, "
            f"{result.render_nm:g} nm render)"
        )
