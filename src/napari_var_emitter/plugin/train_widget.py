"""Dock widget "Train model": simulation-driven training in napari's ``thread_worker``.

``train.iter_train`` yields ``TrainProgress`` events; the widget shows a progress bar, a live loss
curve, the latest validation metrics, and registers every saved checkpoint in the session's model
list, so the predict widget offers it at once. Cancel stops at the next step and keeps the last
checkpoint (the training loop rewrites it atomically at each validation).
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, LineEdit, SpinBox
from qtpy.QtWidgets import QLabel, QPushButton, QVBoxLayout, QWidget

from ..camera import Camera
from ..errors import InputError, VarEmitterError
from ..localize.options import DEVICES
from ..train import TrainConfig
from .forms import CameraForm, chosen_file, scrolled
from .plots import LinePlot
from .session import SESSION, disconnect_when_destroyed, user_folder
from .worker_panel import PanelWidget, WorkerPanel, relay_errors

if TYPE_CHECKING:
    import napari

DEFAULT_OUT = user_folder() / "model.pt"
# validation metrics: (key, label, unit, digits); prefixes name the two validation movies
METRICS = (
    ("jaccard", "Jaccard index", "%", 1),
    ("rmse_nm", "RMSE", "nm", 1),
    ("efficiency", "efficiency", "", 1),
    ("recall", "recall", "%", 1),
    ("precision", "precision", "%", 1),
)
MOVIES = (("sparse_", "sparse movie (0.3 /um^2)"), ("dense_", "dense movie (2 /um^2)"), ("", "validation"))
METRICS_HELP = (
    "Validation on two fixed simulated movies with the training camera: the Jaccard index (matched "
    "emitters over all, %), the RMSE of matched positions (nm) and the efficiency that combines them "
    "(SMLM challenge 2016, docs/CONVENTIONS.md, section 4). The threshold is the detection "
    "probability that gives the best efficiency on them; it is saved with the model."
)


def format_metrics(val) -> str:
    """Validation metrics in words with units, per validation movie, from a dict or a dataclass."""
    if val is None:
        return ""
    if is_dataclass(val):
        values = {f.name: getattr(val, f.name) for f in fields(val)}
    elif isinstance(val, dict):
        values = dict(val)
    else:
        return str(val)
    numbers = {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    parts = []
    for prefix, movie in MOVIES:
        found = [
            f"{label} {numbers[prefix + key]:.{digits}f}{' ' + unit if unit and unit != '%' else unit}"
            for key, label, unit, digits in METRICS
            if prefix + key in numbers
        ]
        if found:
            parts.append(f"{movie}: {', '.join(found)}")
    if "threshold" in numbers:
        parts.append(f"detection threshold {numbers['threshold']:.2f}")
    return "; ".join(parts)


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
        defaults = TrainConfig()
        self.background_min, self.background_max = (
            FloatSpinBox(label=f"background {end} (photons)", min=0, max=1e5, step=5, value=value)
            for end, value in zip(("min", "max"), defaults.background_photons, strict=True)
        )
        self.density_min, self.density_max = (
            FloatSpinBox(label=f"density {end} (/um^2)", min=0, max=50, step=0.1, value=value)
            for end, value in zip(("min", "max"), defaults.density_per_um2, strict=True)
        )
        self.psf_file = FileEdit(
            label="PSF from beads",
            mode="r",
            filter="*.json",
            value="",
            tooltip="a PSF measured from beads (calibrate --beads): the movies are drawn with it, not a "
            "Gaussian of the width above",
        )
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
                self.background_min,
                self.background_max,
                self.density_min,
                self.density_max,
                self.psf_file,
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
        self.for_movie_button = QPushButton("Train for this movie")
        self.for_movie_button.setToolTip(
            "fine-tune the bundled model on simulations of the last movie predicted: its camera, PSF "
            "width, background and density (press Predict first)"
        )
        self.for_movie_button.setEnabled(SESSION.scene is not None)
        self.panel.buttons.insertWidget(0, self.for_movie_button)
        self.progress, self.status = self.panel.progress, self.panel.status
        self.loss_curve = LinePlot("loss", log=True)
        self.metrics = QLabel("")
        self.metrics.setWordWrap(True)
        self.metrics.setToolTip(METRICS_HELP)
        content = QWidget()
        inner = QVBoxLayout(content)
        for part in (self.form.native, self.panel, self.loss_curve, self.metrics):
            inner.addWidget(part)
        inner.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(scrolled(content))

        # 3. connections
        self.train_button.clicked.connect(self.start)
        self.for_movie_button.clicked.connect(self.train_for_movie)
        SESSION.camera_changed.connect(self.set_camera)
        SESSION.scene_changed.connect(self._scene_changed)
        # the session outlives this widget: drop the connections with the Qt object
        disconnect_when_destroyed(self, SESSION.camera_changed, self.set_camera)
        disconnect_when_destroyed(self, SESSION.scene_changed, self._scene_changed)

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
        background = (float(self.background_min.value), float(self.background_max.value))
        density = (float(self.density_min.value), float(self.density_max.value))
        for what, (a, b), unit in (("background", background, "photons"), ("density", density, "/um^2")):
            if a > b:
                raise InputError(f"{what} range is empty: min {a} {unit} > max {b} {unit}")
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
            background_photons=background,
            density_per_um2=density,
            steps=int(self.steps.value),
            batch_size=int(self.batch_size.value),
            lr=float(self.lr.value),
            device=str(self.device.value),
            out=str(out),
            init_from=init_from,
            val_every=int(self.val_every.value),
            psf_file=chosen_file(self.psf_file),
        )

    def _scene_changed(self, scene) -> None:
        self.for_movie_button.setEnabled(scene is not None)

    def set_scene(self, scene) -> None:
        """The form set to simulate ``scene`` (a :class:`.session.Scene`): its PSF width +-10 %, its
        background from half to 1.5 times, its density from half to twice, the session's camera, the
        PSF measured from beads that it fitted, and a fine-tuning of the bundled model named after the
        movie."""
        self.set_camera(SESSION.camera)
        self.psf_min.value, self.psf_max.value = 0.9 * scene.psf_sigma_nm, 1.1 * scene.psf_sigma_nm
        self.background_min.value = 0.5 * scene.background_photons
        self.background_max.value = 1.5 * scene.background_photons
        self.density_min.value = 0.5 * scene.density_per_um2
        self.density_max.value = max(2.0 * scene.density_per_um2, 0.1)
        self.psf_file.value = scene.psf_file or ""
        self.fine_tune.value = True
        self.model_name.value = f"for {scene.name}"

    def train_for_movie(self) -> None:
        """ "Train for this movie": the form set from the last prediction's scene, then Train."""
        if SESSION.scene is None:
            self.panel.refuse("press Predict in 'Predict emitters' first: training simulates that movie")
            return
        self.set_scene(SESSION.scene)
        self.start()

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
