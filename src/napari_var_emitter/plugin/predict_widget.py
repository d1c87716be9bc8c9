"""Dock widget "Predict emitters": run the model on an image layer, show maps, points and a render.

The prediction runs in napari's ``thread_worker`` (``predict.iter_predict`` is a generator that
yields ``PredictProgress``); the viewer stays responsive, a progress bar follows the frames, Cancel
stops at the next batch. Bad input is reported with ``show_error`` and nothing else happens.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, Select, SpinBox
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from ..camera import Camera
from ..errors import InputError, VarEmitterError
from ..io.frames import MIN_FRAME_SIZE, check_frame_shape
from ..io.localizations import PICASSO_SUFFIXES, Localizations, write_localizations
from . import layers as L
from .session import SESSION, disconnect_when_destroyed
from .workers import relay_errors

if TYPE_CHECKING:
    import napari

AUTO = "bundled, auto"  # autoselect: the 3-frame model for movies, else the one-frame one
BUNDLED = "bundled"
WINDOW_3 = "bundled:window-3"  # checkpoint.BUNDLED_MODELS
CHECKPOINT_FILE = "checkpoint file"
DEVICES = ("auto", "cpu", "cuda", "mps")
CAMERA_FIELDS = ("pixel_size_nm", "baseline", "e_per_adu", "em_gain", "qe", "read_noise_e")


@dataclass(frozen=True)
class PredictJob:
    """Everything the worker needs, read from the widget on the UI thread."""

    source: str  # input layer name
    data: Any  # the layer's data (numpy, dask, ...): sliced and read in the worker
    ndim: int  # 2 (one frame) or 3 (T, Y, X)
    first: int  # first frame (0-based, inclusive)
    stop: int  # last frame + 1
    model: Any  # the one-frame bundled model where ``auto``
    camera: Camera
    mode: str  # "progressive" or "super_resolution"
    sr_factor: int
    threshold: float | None
    confirm: bool  # the fit may confirm candidates below the threshold (predict.iter_predict)
    device: str
    maps: tuple[int, ...]
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    render_factor: int
    auto: bool = False  # choose the bundled model from the frames (autoselect.choose)
    local_attention: bool = False  # windowed attention on large frames (predict.iter_predict)


@dataclass(frozen=True)
class PredictOutcome:
    """What the worker returns: the result, with frames already counted in the whole stack."""

    job: PredictJob
    result: Any  # predict.PredictionResult; frames 0-based in the whole stack
    choice: Any = None  # autoselect.Choice where the job was ``auto``

    @property
    def localizations(self) -> Localizations:
        return self.result.localizations


def run_prediction(job: PredictJob):
    """Generator run in the worker thread: predict (frames are read chunk by chunk, so a dask or
    memory-mapped stack is never loaded whole), then return a PredictOutcome."""
    from ..localize import pipeline as predict

    model, choice = job.model, None
    if job.auto:  # reads a sample of the frames: here, in the worker, not on the UI thread
        from ..localize.autoselect import choose_bundled

        frames = job.data if job.ndim == 2 else job.data[job.first : job.stop]
        model, choice = choose_bundled(frames, job.camera, job.device, frame_model=job.model)
    result = yield from relay_errors(
        predict.iter_predict(
            job.data,
            model,
            job.camera,
            mode=job.mode,
            sr_factor=job.sr_factor,
            threshold=job.threshold,
            confirm=job.confirm,
            local_attention=job.local_attention,
            device=job.device,
            maps=job.maps,
            frame_range=None if job.ndim == 2 else (job.first, job.stop),
        )
    )
    return PredictOutcome(job=job, result=result, choice=choice)


def level_names(model, frame_shape: tuple[int, int], sr_factor: int = 1) -> list[str]:
    """Names of the maps a run can show: the progressive levels (``model.level_names``), then, for
    a super-resolution run, the finer levels down to ``1 / sr_factor`` input pixels per cell."""
    names = list(model.level_names(frame_shape))
    if sr_factor > 1:
        height, width = frame_shape
        strides = list(model.config.strides)
        for stride in strides[len(names) :]:
            if stride < 1 / sr_factor - 1e-9:
                break
            names.append(f"{math.ceil(height / stride)}x{math.ceil(width / stride)}")
    return names


def camera_from_layer(layer) -> dict[str, float]:
    """Camera values a layer tells about: ``metadata["camera"]``, ``metadata["pixel_size_nm"]``,
    or a physical pixel size from the layer's scale and units. Only the values found are returned."""
    found: dict[str, float] = {}
    metadata = getattr(layer, "metadata", None) or {}
    camera = metadata.get("camera")
    if isinstance(camera, dict):
        found.update({k: float(v) for k, v in camera.items() if k in CAMERA_FIELDS})
    if "pixel_size_nm" in metadata:
        found["pixel_size_nm"] = float(metadata["pixel_size_nm"])
    if "pixel_size_nm" not in found:
        try:  # a layer with physical units: scale * unit -> nm (napari's default unit, pixel, fails)
            nm = float((layer.scale[-1] * layer.units[-1]).to("nm").magnitude)
            if np.isfinite(nm) and nm > 0:
                found["pixel_size_nm"] = nm
        except Exception:  # noqa: BLE001 - no units, pixel units, or an older napari
            pass
    return found


def check_image_layer(layer) -> None:
    """Raise :class:`InputError` with one clear message for a layer we cannot predict on."""
    if layer is None:
        raise InputError(
            "no image layer: open a movie (TIFF stack) or "
            "File > Open Sample > VAR Emitter > Simulated SMLM movie"
        )
    if getattr(layer, "rgb", False):
        raise InputError(f"layer '{layer.name}' is an RGB image; expected grayscale camera frames (T, Y, X)")
    if getattr(layer, "multiscale", False):
        raise InputError(f"layer '{layer.name}' is multiscale; open the camera frames as a plain stack")
    shape = tuple(layer.data.shape)
    if len(shape) not in (2, 3):
        raise InputError(
            f"layer '{layer.name}' has {len(shape)} dimensions {shape}; "
            "expected a frame (Y, X) or a stack (T, Y, X)"
        )
    if 0 in shape:
        raise InputError(f"layer '{layer.name}' is empty (shape {shape})")
    if min(shape[-2:]) < MIN_FRAME_SIZE:
        raise InputError(f"layer '{layer.name}': frames of {shape[-2]}x{shape[-1]} px are too small")
    check_frame_shape(shape, name=f"layer '{layer.name}'")  # and not too large to hold


class PredictWidget(QWidget):
    """Find emitters in an image layer with the bundled, a just-trained, or a saved model."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker = None
        self.outcome: PredictOutcome | None = None
        self._models: dict[Any, Any] = {}  # cache: key -> loaded model
        self._outputs: dict[str, list[str]] = {}  # input layer name -> names of layers we added
        self._synced: tuple | None = None  # (weak reference to the layer, its shape) the form was set from

        # 1. form: input, model, camera, prediction settings
        self.image = ComboBox(label="image", choices=self._image_choices)
        self.model = ComboBox(label="model", choices=self._model_choices)
        self.checkpoint = FileEdit(label="checkpoint", mode="r", filter="*.pt", visible=False)
        self.device = ComboBox(label="device", choices=DEVICES, value="auto")
        defaults = Camera()
        self.camera_widgets = {
            "pixel_size_nm": FloatSpinBox(label="pixel size (nm)", min=1, max=10000, step=1),
            "baseline": FloatSpinBox(label="baseline (ADU)", min=0, max=1e6, step=1),
            "e_per_adu": FloatSpinBox(label="e- per ADU", min=0.01, max=1e4, step=0.1),
            "em_gain": FloatSpinBox(label="EM gain (1 = sCMOS)", min=1, max=1e4, step=1),
            "qe": FloatSpinBox(label="quantum efficiency", min=0.01, max=1, step=0.01),
            "read_noise_e": FloatSpinBox(label="read noise (e-)", min=0, max=1e4, step=0.1),
        }
        for name, widget in self.camera_widgets.items():
            widget.value = getattr(defaults, name)
        self.threshold = FloatSpinBox(
            label="threshold",
            min=0.0,
            max=1.0,
            step=0.05,
            value=0.0,
            tooltip="detection probability threshold; 0 = the model's own calibrated threshold",
        )
        self.confirm = CheckBox(
            label="confirm dim spots by the fit",
            value=True,
            tooltip="also keep candidates below the threshold (down to probability 0.1) that the "
            "maximum-likelihood fit confirms: a spot of at least 4 sigma, mostly its own light",
        )
        self.local_attention = CheckBox(
            label="faster on large frames",
            value=False,
            tooltip="frames of 192 px and more: attend within 64 px windows (with 8 px of context) "
            "instead of over the whole frame; 1.6x faster at 256 px, slightly fewer dim emitters found",
        )
        self.first_frame = SpinBox(label="first frame", min=0, max=0, value=0)
        self.last_frame = SpinBox(label="last frame", min=0, max=0, value=0)
        self.sr_factor = ComboBox(
            label="super-resolution",
            choices=[("1x (progressive maps)", 1), ("2x (super-resolution)", 2)],
            value=1,
        )
        self.scales = Select(label="maps to show", choices=[])
        self.render_factor = SpinBox(
            label="render zoom",
            min=0,
            max=16,
            value=L.RENDER_FACTOR,
            tooltip="super-resolution render, fine pixels per camera pixel (0 = no render)",
        )
        self.form = Container(
            widgets=[
                self.image,
                self.model,
                self.checkpoint,
                self.device,
                *self.camera_widgets.values(),
                self.threshold,
                self.confirm,
                self.local_attention,
                self.first_frame,
                self.last_frame,
                self.sr_factor,
                self.scales,
                self.render_factor,
            ]
        )

        # 2. buttons, progress, status
        self.run_button = QPushButton("Predict")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.export_button = QPushButton("Export...")
        self.export_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        buttons = QHBoxLayout()
        for button in (self.run_button, self.cancel_button, self.export_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.form.native)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)

        # 3. connections
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.export_button.clicked.connect(self._export_clicked)
        self.image.changed.connect(self._image_changed)
        self.model.changed.connect(self._model_changed)
        self.checkpoint.changed.connect(self._model_changed)
        self.sr_factor.changed.connect(self._update_scales)
        for widget in self.camera_widgets.values():
            widget.changed.connect(self._publish_camera)
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.reordered):
            event.connect(self._reset_layer_choices)
        SESSION.models_changed.connect(self._reset_model_choices)
        # the session outlives this widget: drop the connection with the Qt object
        disconnect_when_destroyed(self, SESSION.models_changed, self._reset_model_choices)
        self._reset_layer_choices()
        self._sync_to_layer()  # the data may have been opened before the widget

    # --- choices ---------------------------------------------------------------------------
    def _image_choices(self, _widget=None):
        from napari.layers import Image

        return [
            (layer.name, layer)
            for layer in self.viewer.layers
            if isinstance(layer, Image) and not L.is_output_layer(layer)
        ]

    def _model_choices(self, _widget=None):
        trained = [(f"trained: {name}", str(path)) for name, path in SESSION.models().items()]
        return [
            ("bundled, auto (3 frames for movies)", AUTO),
            ("bundled", BUNDLED),
            ("bundled, 3 frames (movies)", WINDOW_3),
            *trained,
            ("checkpoint file...", CHECKPOINT_FILE),
        ]

    def _reset_layer_choices(self, _event=None) -> None:
        self.image.reset_choices()
        self._sync_to_layer()

    def _reset_model_choices(self) -> None:
        self.model.reset_choices()

    # --- reactions ---------------------------------------------------------------------------
    def _image_changed(self, _layer=None) -> None:
        self._sync_to_layer(force=True)

    def _sync_to_layer(self, force: bool = False) -> None:
        """Set the frame range, the camera fields and the maps from the chosen layer, once per layer
        (and again when its data changes shape): a layer opened before the widget, chosen again, or
        replaced under the widget gets its whole frame range. Fields the user edited for the same
        layer are kept."""
        layer = self.image.value
        shape = None if layer is None else tuple(layer.data.shape)
        if layer is not None and not force and self._synced is not None:
            if self._synced[0]() is layer and self._synced[1] == shape:
                return
        self._synced = None if layer is None else (weakref.ref(layer), shape)
        if layer is None:
            self._update_scales()
            return
        n_frames = layer.data.shape[0] if layer.ndim == 3 else 1
        self.first_frame.max = self.last_frame.max = max(n_frames - 1, 0)
        self.first_frame.value = 0
        self.last_frame.value = max(n_frames - 1, 0)
        for name, value in camera_from_layer(layer).items():
            self.camera_widgets[name].value = value
        self._update_scales()

    def _model_changed(self, _value=None) -> None:
        self.checkpoint.visible = self.model.value == CHECKPOINT_FILE
        if self.model.value == CHECKPOINT_FILE and not self._checkpoint_path():
            return  # wait for a file
        try:
            self.current_model()
        except VarEmitterError as exc:
            show_error(f"Predict emitters: {exc}")
        self._update_scales()

    def _publish_camera(self, _value=None) -> None:
        try:
            SESSION.camera = self.camera()
        except VarEmitterError:
            pass  # the fields are being edited: publish when valid

    def _checkpoint_path(self) -> Path | None:
        value = self.checkpoint.value
        if value is None or str(value) in ("", "."):
            return None
        return Path(value)

    def _update_scales(self, _value=None) -> None:
        layer = self.image.value
        names: list[str] = []
        if layer is not None and layer.ndim in (2, 3):
            try:
                names = level_names(
                    self.current_model(), tuple(layer.data.shape[-2:]), int(self.sr_factor.value)
                )
            except VarEmitterError:
                names = []
        if list(self.scales.choices) != names:
            self.scales.choices = names
            self.scales.value = names

    # --- model and camera --------------------------------------------------------------------
    def current_model(self):
        """The selected model, loaded once (CheckpointError for a bad file)."""
        from ..localize import pipeline as predict

        choice = self.model.value
        if choice == AUTO:  # the one-frame model until the frames choose (run_prediction)
            choice = BUNDLED
        if choice in (BUNDLED, WINDOW_3):  # bundled weights never change on disk
            path, key = (None if choice == BUNDLED else choice), choice
        else:
            path = self._checkpoint_path() if choice == CHECKPOINT_FILE else Path(choice)
            if path is None:
                raise InputError("choose a checkpoint file (.pt) for the model")
            key = (str(path), path.stat().st_mtime if path.exists() else None)
        if key not in self._models:
            self._models[key] = predict.load_model(path)
        return self._models[key]

    def camera(self) -> Camera:
        return Camera(**{name: float(widget.value) for name, widget in self.camera_widgets.items()})

    def set_camera(self, camera: Camera) -> None:
        for name, widget in self.camera_widgets.items():
            widget.value = getattr(camera, name)

    # --- running -----------------------------------------------------------------------------
    def make_job(self) -> PredictJob:
        """Read and check the form; InputError/CheckpointError with one clear message."""
        self._sync_to_layer()  # the layer's data may have changed since it was chosen
        layer = self.image.value
        check_image_layer(layer)
        camera = self.camera()
        model = self.current_model()
        ndim = layer.ndim
        first, last = int(self.first_frame.value), int(self.last_frame.value)
        if ndim == 2:
            first, last = 0, 0
        if last < first:
            raise InputError(f"frame range is empty: first frame {first} is after last frame {last}")
        names = list(self.scales.choices)
        maps = tuple(names.index(n) for n in self.scales.value) if names else ()
        sr = int(self.sr_factor.value)
        threshold = float(self.threshold.value)
        return PredictJob(
            source=layer.name,
            data=layer.data,
            ndim=ndim,
            first=first,
            stop=last + 1,
            model=model,
            camera=camera,
            mode="progressive" if sr == 1 else "super_resolution",
            sr_factor=sr,
            threshold=threshold if threshold > 0 else None,
            confirm=bool(self.confirm.value),
            device=str(self.device.value),
            maps=maps,
            scale=tuple(float(v) for v in layer.scale),
            translate=tuple(float(v) for v in layer.translate),
            render_factor=int(self.render_factor.value),
            auto=self.model.value == AUTO,
            local_attention=bool(self.local_attention.value),
        )

    def run(self) -> None:
        if self.worker is not None:
            show_info("Predict emitters: a prediction is already running")
            return
        try:
            job = self.make_job()
        except (VarEmitterError, OSError) as exc:
            show_error(f"Predict emitters: {exc}")
            return
        n_frames = job.stop - job.first
        self.progress.setRange(0, n_frames)
        self.progress.setValue(0)
        self.status.setText(f"predicting {n_frames} frame(s) of '{job.source}'...")
        self.worker = create_worker(run_prediction, job, _ignore_errors=True)
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(self._on_returned)
        self.worker.errored.connect(self._on_errored)
        self.worker.aborted.connect(self._on_aborted)
        self.worker.finished.connect(self._on_finished)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.worker.start()

    def cancel(self) -> None:
        if self.worker is not None:
            self.status.setText("cancelling...")
            self.worker.quit()

    @property
    def running(self) -> bool:
        return self.worker is not None

    def _on_progress(self, event) -> None:
        total = int(getattr(event, "frames_total", 0) or 0)
        if total:
            self.progress.setRange(0, total)
        self.progress.setValue(int(getattr(event, "frames_done", 0)))

    def _on_returned(self, outcome: PredictOutcome) -> None:
        job, result = outcome.job, outcome.result
        self.outcome = outcome
        frame_shape = tuple(int(v) for v in job.data.shape[-2:])
        new = L.result_layers(
            result,
            job.source,
            frame_shape,
            job.scale,
            job.translate,
            ndim=job.ndim,
            frame_start=job.first,
            pixel_size_nm=job.camera.pixel_size_nm,
            render_factor=job.render_factor,
        )
        names = [kwargs["name"] for _, kwargs, _ in new]
        for stale in self._outputs.get(job.source, []):
            if stale not in names and stale in self.viewer.layers:
                self.viewer.layers.remove(stale)
        for layer_data in new:
            L.add_or_replace(self.viewer, layer_data)
        self._outputs[job.source] = names
        self.progress.setValue(self.progress.maximum())
        self.export_button.setEnabled(True)
        chosen = f", {outcome.choice.describe()}" if outcome.choice is not None else ""
        self.status.setText(
            f"{len(outcome.localizations)} emitters in {job.stop - job.first} frame(s), "
            f"device: {result.device}{chosen}"
        )

    def _on_errored(self, exc: Exception) -> None:
        # napari's GeneratorWorker does not relay worker errors to the notifications by itself
        # (its notifying mixin is never initialised under PyQt6, napari 0.9.2): do it here.
        self.status.setText(f"failed: {exc}")
        show_error(f"Predict emitters failed: {exc}")

    def _on_aborted(self) -> None:
        self.status.setText("cancelled")

    def _on_finished(self) -> None:
        self.worker = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    # --- export ------------------------------------------------------------------------------
    def _export_clicked(self) -> None:
        path, chosen = QFileDialog.getSaveFileName(
            self,
            "Export localizations",
            "localizations.csv",
            "ThunderSTORM CSV (*.csv);;Picasso HDF5 (*.hdf5)",
        )
        if path:
            if Path(path).suffix.lower() not in (".csv", *PICASSO_SUFFIXES):
                path = str(Path(path).with_suffix(".hdf5" if "hdf5" in (chosen or "") else ".csv"))
            self.export_csv(path)

    def export_csv(self, path: str | Path) -> Path | None:
        """Write the last prediction: ``.hdf5``/``.h5`` as Picasso HDF5 + YAML (pixels, 0-based
        frames), anything else as CONVENTIONS section 3 CSV (1-based frames, nm). Atomic; a failure
        is a notification and leaves no file behind."""
        if self.outcome is None:
            show_error("Predict emitters: nothing to export yet; press Predict first")
            return None
        path = Path(path)
        if path.suffix.lower() not in (".csv", *PICASSO_SUFFIXES):
            path = path.with_suffix(".csv")
        job = self.outcome.job
        try:
            write_localizations(
                self.outcome.localizations,
                path,
                pixel_size_nm=job.camera.pixel_size_nm,
                frame_shape=tuple(int(v) for v in job.data.shape[-2:]),
                n_frames=int(job.data.shape[0]) if job.ndim == 3 else 1,
            )
        except (VarEmitterError, OSError) as exc:
            show_error(f"Predict emitters: cannot write {path}: {exc}")
            return None
        self.status.setText(f"exported {len(self.outcome.localizations)} localizations to {path}")
        return path
