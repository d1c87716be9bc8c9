"""Dock widget "Train model": simulation-driven training in napari's ``thread_worker``.

``train.iter_train`` yields ``TrainProgress`` events; the widget shows a progress bar, a live loss
curve, the latest validation metrics, and registers every saved checkpoint in the session's model
list, so the predict widget offers it at once. Cancel stops at the next step and keeps the last
checkpoint (the training loop rewrites it atomically at each validation).
"""

from __future__ import annotations

import math
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, LineEdit, SpinBox
from qtpy.QtCore import QPointF, QSize, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

from ..camera import Camera
from ..errors import InputError, VarEmitterError
from ..localize.options import DEVICES
from .forms import CameraForm
from .session import SESSION, disconnect_when_destroyed
from .worker_panel import PanelWidget, WorkerPanel, relay_errors

if TYPE_CHECKING:
    import napari

DEFAULT_OUT = Path.home() / "napari-var-emitter-models" / "model.pt"
_METRIC_ORDER = (
    "jaccard",
    "sparse_jaccard",
    "dense_jaccard",
    "rmse_nm",
    "sparse_rmse_nm",
    "dense_rmse_nm",
    "efficiency",
    "recall",
    "precision",
    "threshold",
)


class LossCurve(QWidget):
    """A tiny QPainter plot of the training loss (log scale), no plotting library."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.values: list[float] = []
        self.setMinimumHeight(90)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(260, 110)

    def clear(self) -> None:
        self.values = []
        self.update()

    def append(self, value: float) -> None:
        if value is not None and math.isfinite(value):
            self.values.append(float(value))
            self.update()

    def paintEvent(self, _event) -> None:  # noqa: N802 - Qt API
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = self.rect().adjusted(4, 14, -4, -4)
        painter.setPen(QPen(QColor(128, 128, 128)))
        painter.drawRect(rect)
        if not self.values:
            painter.drawText(self.rect().adjusted(6, 0, 0, 0), Qt.AlignmentFlag.AlignLeft, "loss")
            return
        ys = [math.log10(v) if v > 0 else math.log10(1e-12) for v in self.values]
        lo, hi = min(ys), max(ys)
        span = hi - lo or 1.0
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
        painter.setPen(QPen(QColor(255, 160, 40), 1.5))
        painter.drawPolyline(points)
        painter.setPen(QPen(QColor(200, 200, 200)))
        painter.drawText(
            self.rect().adjusted(6, 0, 0, 0),
            Qt.AlignmentFlag.AlignLeft,
            f"loss {self.values[-1]:.4g} (min {min(self.values):.4g}, log scale)",
        )


def format_metrics(val) -> str:
    """One line of validation metrics from a MetricReport-like object or a dict."""
    if val is None:
        return ""
    if is_dataclass(val):
        values = {f.name: getattr(val, f.name) for f in fields(val)}
    elif isinstance(val, dict):
        values = dict(val)
    else:
        return str(val)
    numbers = {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    keys = [k for k in _METRIC_ORDER if k in numbers] or list(numbers)[:6]
    return ", ".join(f"{k} {numbers[k]:.4g}" for k in keys)


def run_training(cfg):
    """Generator run in the worker thread: pass the training loop's TrainProgress events through."""
    from .. import train

    last = None
    for event in relay_errors(train.iter_train(cfg)):
        last = event
        yield event
    return last


class TrainWidget(PanelWidget):
    """Train (or fine-tune) a model on simulated movies for the camera and PSF you set."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.last_event = None
        self.cfg = None

        # 1. form: model, camera and PSF (from the predict widget), training settings
        from ..model.config import PRESETS

        self.preset = ComboBox(label="model size", choices=list(PRESETS), value="default")
        self.camera_form = CameraForm(SESSION.camera)
        self.camera_widgets = self.camera_form.fields
        self.psf_min = FloatSpinBox(label="PSF sigma min (nm)", min=10, max=1000, step=5, value=100.0)
        self.psf_max = FloatSpinBox(label="PSF sigma max (nm)", min=10, max=1000, step=5, value=150.0)
        self.fine_tune = CheckBox(label="fine-tune from the bundled model", value=True)
        self.steps = SpinBox(label="steps", min=1, max=1_000_000, value=2000)
        self.batch_size = SpinBox(label="batch size", min=1, max=1024, value=16)
        self.lr = FloatSpinBox(label="learning rate", min=1e-6, max=1.0, step=1e-4, value=1e-3)
        self.val_every = SpinBox(label="validate every", min=1, max=1_000_000, value=200)
        self.device = ComboBox(label="device", choices=DEVICES, value="auto")
        self.out = FileEdit(label="save to", mode="w", filter="*.pt", value=DEFAULT_OUT)
        self.model_name = LineEdit(label="model name", value="trained")
        self.form = Container(
            widgets=[
                self.preset,
                *self.camera_form.fields.values(),
                self.psf_min,
                self.psf_max,
                self.fine_tune,
                self.steps,
                self.batch_size,
                self.lr,
                self.val_every,
                self.device,
                self.out,
                self.model_name,
            ]
        )

        # 2. buttons, progress, loss curve, metrics
        self.panel = WorkerPanel("Train model", "Train", failed="training failed")
        self.train_button, self.cancel_button = self.panel.run_button, self.panel.cancel_button
        self.progress, self.status = self.panel.progress, self.panel.status
        self.loss_curve = LossCurve()
        self.metrics = QLabel("")
        self.metrics.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.form.native)
        layout.addWidget(self.panel)
        layout.addWidget(self.loss_curve)
        layout.addWidget(self.metrics)
        layout.addStretch(1)

        # 3. connections
        self.train_button.clicked.connect(self.start)
        SESSION.camera_changed.connect(self.set_camera)
        # the session outlives this widget: drop the connection with the Qt object
        disconnect_when_destroyed(self, SESSION.camera_changed, self.set_camera)

    # --- settings ------------------------------------------------------------------------------
    def set_camera(self, camera: Camera) -> None:
        self.camera_form.set_camera(camera)

    def camera(self) -> Camera:
        return self.camera_form.camera()

    def make_config(self):
        """The TrainConfig of the form; InputError with one clear message for bad values."""
        from .. import train
        from ..model.checkpoint import bundled_path

        lo, hi = float(self.psf_min.value), float(self.psf_max.value)
        if lo > hi:
            raise InputError(f"PSF sigma range is empty: min {lo} nm > max {hi} nm")
        out = self.out.value
        if out is None or str(out) in ("", "."):
            raise InputError("choose where to save the model (a .pt file)")
        out = Path(out)
        if out.suffix.lower() != ".pt":
            out = out.with_suffix(".pt")
        if out.exists() and out.is_dir():
            raise InputError(f"{out} is a folder; choose a .pt file to save the model to")
        init_from = None
        if self.fine_tune.value:
            if not bundled_path().exists():
                raise InputError(
                    "no bundled model to fine-tune from; untick 'fine-tune from the bundled model'"
                )
            init_from = "bundled"
        return train.TrainConfig(
            preset=str(self.preset.value),
            camera=self.camera(),
            psf_sigma_nm=(lo, hi),
            steps=int(self.steps.value),
            batch_size=int(self.batch_size.value),
            lr=float(self.lr.value),
            device=str(self.device.value),
            out=str(out),
            init_from=init_from,
            val_every=int(self.val_every.value),
        )

    # --- running -------------------------------------------------------------------------------
    def start(self) -> None:
        if self.running:
            self.panel.refuse("training is already running")
            return
        try:
            cfg = self.make_config()
            Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        except (VarEmitterError, OSError) as exc:
            self.panel.refuse(str(exc))
            return
        self.cfg = cfg
        self.last_event = None
        self.loss_curve.clear()
        self.metrics.setText("")
        self.panel.start(
            run_training,
            cfg,
            total=cfg.steps,
            message=f"training for {cfg.steps} steps...",
            on_progress=self._on_progress,
            on_aborted=self._on_aborted,
            on_finished=self._on_finished,
        )

    def cancel(self) -> None:
        if self.running:
            self.panel.cancel()
            self.status.setText("cancelling after this step...")

    def _on_progress(self, event) -> None:
        self.last_event = event
        self.progress.setRange(0, int(event.total_steps))
        self.progress.setValue(int(event.step))
        self.loss_curve.append(event.loss)
        if getattr(event, "val", None) is not None:
            self.metrics.setText(f"validation at step {event.step}: {format_metrics(event.val)}")
        if getattr(event, "checkpoint", None):
            SESSION.add_model(self.model_name.value or "trained", event.checkpoint)
        status = f"step {event.step}/{event.total_steps}, loss {event.loss:.4g}"
        skipped = int(getattr(event, "skipped", 0) or 0)
        if skipped:
            status += f" ({skipped} step(s) skipped: NaN or infinite loss)"
        self.status.setText(status)

    def _on_aborted(self) -> None:
        out = Path(self.cfg.out)
        if out.exists():
            SESSION.add_model(self.model_name.value or "trained", out)
            self.status.setText(f"cancelled; the last checkpoint is kept at {out}")
        else:
            self.status.setText("cancelled before the first checkpoint; nothing was saved")

    def _on_finished(self) -> None:
        text = self.status.text()
        if text.startswith("cancelled") or text.startswith(self.panel.failed):
            return
        out = Path(self.cfg.out)
        if out.exists():
            SESSION.add_model(self.model_name.value or "trained", out)
            self.status.setText(f"done: model saved to {out}; choose it in 'Predict emitters'")
