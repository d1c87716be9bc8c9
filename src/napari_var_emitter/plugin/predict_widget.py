"""Dock widget "Predict emitters": run the model on an image layer, show maps, points and a render.

A thin shell over the prediction pipeline (:mod:`..localize`): the form becomes a
:class:`~..localize.options.PredictOptions` and a :class:`.predict_job.PredictJob`, which runs in the
background (:class:`.worker_panel.WorkerPanel`): the viewer stays responsive, a progress bar follows
the frames, Cancel stops at the next batch. The form follows its layer: frame range, maps and
camera are set from the chosen layer whenever it is chosen, opened before the widget, or replaced.
Bad input is reported in the status line and as a notification, and nothing else happens.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, Label, SpinBox
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import QFileDialog, QPushButton, QVBoxLayout, QWidget

from ..camera import Camera
from ..errors import InputError, VarEmitterError
from ..io.atomic import write_text
from ..io.localizations import PICASSO_SUFFIXES
from ..io.tables import write_localizations
from ..localize.options import DEVICES, PredictOptions
from . import layers as L
from .camera_section import DEFAULTS, ENTERED, CameraSection
from .forms import LevelChooser, chosen_file, scrolled
from .predict_job import (
    PredictJob,
    PredictOutcome,
    camera_from_layer,
    check_image_layer,
    level_names,
    run_prediction,
    scene_of,
    summarize_outcome,
)
from .results_panel import ResultsPanel
from .session import SESSION, disconnect_when_destroyed
from .worker_panel import PanelWidget, WorkerPanel

if TYPE_CHECKING:
    import napari

AUTO = "bundled, auto"  # autoselect: the 3-frame model for movies, else the one-frame one
BUNDLED = "bundled"
WINDOW_3 = "bundled:window-3"  # model.checkpoint.BUNDLED_MODELS
CHECKPOINT_FILE = "checkpoint file"
TITLE = "Predict emitters"
MAX_DEFAULT_MAP_FRAMES = 500  # longer stacks show no maps unless levels are ticked
MAX_MAP_BYTES = 2 << 30  # maps are kept in memory: more is refused before the run
MIN_WIDTH = 400  # px: the form's fields and the status stay readable


def _megabytes(n: int) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


class PredictWidget(PanelWidget):
    """Find emitters in an image layer with the bundled, a just-trained, or a saved model."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.outcome: PredictOutcome | None = None
        self._models: dict[Any, Any] = {}  # cache: key -> loaded model
        self._outputs: dict[str, list[str]] = {}  # input layer name -> names of layers we added
        self._synced: tuple | None = None  # (weak reference to the layer, its shape) the form was set from
        self._measuring = None  # the worker measuring the camera, while it runs

        # 1. form: input, model, camera, prediction settings
        self.image = ComboBox(label="image", choices=self._image_choices)
        self.model = ComboBox(
            label="model", choices=self._model_choices, tooltip=PredictOptions.help("model")
        )
        self.checkpoint = FileEdit(label="checkpoint", mode="r", filter="*.pt", visible=False)
        self.device = ComboBox(
            label="device", choices=DEVICES, value="auto", tooltip=PredictOptions.help("device")
        )
        self.camera_section = CameraSection(TITLE)
        self.camera_widgets = self.camera_section.fields
        self.threshold = FloatSpinBox(
            label="threshold",
            min=0.0,
            max=0.99,
            step=0.05,
            value=0.0,
            tooltip="detection probability threshold; 0 = the model's own calibrated threshold",
        )
        self.confirm = CheckBox(
            label="confirm dim spots by the fit", value=True, tooltip=PredictOptions.help("confirm")
        )
        self.local_attention = CheckBox(
            label="faster on large frames", value=False, tooltip=PredictOptions.help("local_attention")
        )
        self.first_frame = SpinBox(label="first frame", min=0, max=0, value=0)
        self.last_frame = SpinBox(label="last frame", min=0, max=0, value=0)
        self.sr_factor = ComboBox(
            label="super-resolution",
            choices=[("1x (progressive maps)", 1), ("2x (super-resolution)", 2)],
            value=1,
        )
        self.scales = LevelChooser("maps to show")
        self.memory = Label(value="")
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
                *self.camera_section.widgets,
                self.threshold,
                self.confirm,
                self.local_attention,
                self.first_frame,
                self.last_frame,
                self.sr_factor,
                self.scales,
                self.memory,
                self.render_factor,
            ]
        )

        # 2. buttons, progress, status
        self.panel = WorkerPanel(TITLE, "Predict")
        self.export_button = QPushButton("Export...")
        self.export_button.setEnabled(False)
        self.panel.buttons.addWidget(self.export_button)
        self.run_button, self.cancel_button = self.panel.run_button, self.panel.cancel_button
        self.progress, self.status = self.panel.progress, self.panel.status
        self.results = ResultsPanel()
        content = QWidget()
        inner = QVBoxLayout(content)
        for part in (self.form.native, self.panel, self.results):
            inner.addWidget(part)
        inner.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(scrolled(content))
        self.setMinimumWidth(MIN_WIDTH)

        # 3. connections
        self.run_button.clicked.connect(self.run)
        self.export_button.clicked.connect(self._export_clicked)
        self.image.changed.connect(self._image_changed)
        self.model.changed.connect(self._model_changed)
        self.checkpoint.changed.connect(self._model_changed)
        self.sr_factor.changed.connect(self._update_scales)
        for widget in (self.scales, self.first_frame, self.last_frame):
            widget.changed.connect(self._show_memory)
        self.camera_section.form.measure_button.changed.connect(self.measure)
        self.camera_section.beads_button.changed.connect(lambda _=None: self.measure(beads=True))
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
        self.camera_section.follow_layer(camera_from_layer(layer))
        self._update_scales()

    def _model_changed(self, _value=None) -> None:
        self.checkpoint.visible = self.model.value == CHECKPOINT_FILE
        if self.model.value == CHECKPOINT_FILE and not self._checkpoint_path():
            return  # wait for a file
        try:
            self.current_model()
        except VarEmitterError as exc:
            show_error(f"{TITLE}: {exc}")
        self._update_scales()

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
            n_frames = layer.data.shape[0] if layer is not None and layer.ndim == 3 else 1
            # every level for a short stack; none for a long one (the localizations are always whole)
            self.scales.value = names if n_frames <= MAX_DEFAULT_MAP_FRAMES else []
        self._show_memory()

    def maps_bytes(self) -> int:
        """Memory the ticked maps take for the chosen frames (float32, every level whole)."""
        layer = self.image.value
        if layer is None or layer.ndim not in (2, 3):
            return 0
        n_frames = 1 if layer.ndim == 2 else int(self.last_frame.value) - int(self.first_frame.value) + 1
        cells = 0
        for name in self.scales.value:
            h, w = (int(v) for v in name.split("x"))
            cells += h * w
        return 4 * max(n_frames, 0) * cells

    def _show_memory(self, _value=None) -> None:
        size = self.maps_bytes()
        if not self.scales.value:
            self.memory.value = "no maps: localizations only"
        else:
            over = " (too much: untick levels or shorten the range)" if size > MAX_MAP_BYTES else ""
            self.memory.value = f"maps: {_megabytes(size)}{over}"

    # --- model and camera --------------------------------------------------------------------
    def current_model(self):
        """The selected model, loaded once (CheckpointError for a bad file)."""
        from ..localize import load_model

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
            self._models[key] = load_model(path)
        return self._models[key]

    def _model_spec(self) -> str:
        choice = self.model.value
        if choice == AUTO:
            return "auto"
        if choice == CHECKPOINT_FILE:
            return str(self._checkpoint_path())
        return str(choice)

    def camera(self) -> Camera:
        return self.camera_section.camera()

    def set_camera(self, camera: Camera) -> None:
        self.camera_section.set(camera.to_dict(), ENTERED)

    def measure(self, _value=None, beads: bool = False) -> None:
        """ "Measure from image": the camera and PSF width of the chosen frames, in the background;
        with ``beads`` ("Measure PSF from image (beads)"), the PSF of the frames, an image of beads."""
        try:
            self._sync_to_layer()
            layer = self.image.value
            check_image_layer(layer)
            first, last = int(self.first_frame.value), int(self.last_frame.value)
        except (VarEmitterError, OSError) as exc:
            self.panel.refuse(str(exc))
            return
        data = layer.data if layer.ndim == 2 else layer.data[first : last + 1]
        if beads:
            self.camera_section.measure_beads(data, layer.name)
        else:
            self.camera_section.measure(data)

    # --- running -----------------------------------------------------------------------------
    def make_job(self) -> PredictJob:
        """Read and check the form; InputError/CheckpointError with one clear message."""
        self._sync_to_layer()  # the layer's data may have changed since it was chosen
        layer = self.image.value
        check_image_layer(layer)
        model = self.current_model()
        first, last = int(self.first_frame.value), int(self.last_frame.value)
        if layer.ndim == 2:
            first, last = 0, 0
        if last < first:
            raise InputError(f"frame range is empty: first frame {first} is after last frame {last}")
        names = list(self.scales.choices)
        if self.maps_bytes() > MAX_MAP_BYTES:
            raise InputError(
                f"the maps chosen would take {_megabytes(self.maps_bytes())} for {last - first + 1} frames "
                f"(at most {_megabytes(MAX_MAP_BYTES)}): untick levels, or choose fewer frames; the "
                "localizations need no maps"
            )
        sr = int(self.sr_factor.value)
        threshold = float(self.threshold.value)
        options = PredictOptions(
            model=self._model_spec(),
            camera=self.camera(),
            mode="progressive" if sr == 1 else "super_resolution",
            sr_factor=sr,
            threshold=threshold if threshold > 0 else None,
            confirm=bool(self.confirm.value),
            local_attention=bool(self.local_attention.value),
            device=str(self.device.value),
            psf_sigma_nm=self.camera_section.psf_sigma_nm(),
            psf=self.camera_section.measured_psf(),
        )
        return PredictJob(
            source=layer.name,
            data=layer.data,
            ndim=layer.ndim,
            first=first,
            stop=last + 1,
            options=options,
            model=model,
            maps=tuple(names.index(n) for n in self.scales.value) if names else (),
            scale=tuple(float(v) for v in layer.scale),
            translate=tuple(float(v) for v in layer.translate),
            render_factor=int(self.render_factor.value),
            camera_source=self.camera_section.source,
            measure=self.camera_section.source == DEFAULTS,
            psf_file=chosen_file(self.camera_section.psf_file) if options.psf is not None else None,
        )

    def run(self) -> None:
        if self.running:
            show_info(f"{TITLE}: a prediction is already running")
            return
        try:
            job = self.make_job()
        except (VarEmitterError, OSError) as exc:
            self.panel.refuse(str(exc))
            return
        n_frames = job.stop - job.first
        self.panel.start(
            run_prediction,
            job,
            total=n_frames,
            message=f"predicting {n_frames} frame(s) of '{job.source}'...",
            on_progress=self._on_progress,
            on_returned=self._on_returned,
        )

    def cancel(self) -> None:
        self.panel.cancel()

    def _on_progress(self, event) -> None:
        total = int(getattr(event, "frames_total", 0) or 0)
        if total:
            self.progress.setRange(0, total)
        self.progress.setValue(int(getattr(event, "frames_done", 0)))

    def _on_returned(self, outcome: PredictOutcome) -> None:
        job, result = outcome.job, outcome.result
        self.outcome = outcome
        if outcome.calibration is not None:
            self.camera_section.show_calibration(outcome.calibration)
        if outcome.warnings:
            self.camera_section.warn(outcome.warnings)
            show_warning(f"{TITLE}: {' '.join(outcome.warnings)}")
        new = L.result_layers(
            result,
            job.source,
            tuple(int(v) for v in job.data.shape[-2:]),
            job.scale,
            job.translate,
            ndim=job.ndim,
            frame_start=job.first,
            pixel_size_nm=outcome.camera.pixel_size_nm,
            render_factor=job.render_factor,
        )
        names = [kwargs["name"] for _, kwargs, _ in new]
        for stale in self._outputs.get(job.source, []):
            if stale not in names and stale in self.viewer.layers:
                self.viewer.layers.remove(stale)
        for layer_data in new:
            L.add_or_replace(self.viewer, layer_data)
        L.place_above(self.viewer, job.source, names)
        self._outputs[job.source] = names
        self.export_button.setEnabled(True)
        chosen = f", {outcome.choice.describe()}" if outcome.choice is not None else ""
        n_frames = job.stop - job.first
        text = (
            f"{len(outcome.localizations)} emitters in {n_frames} frame(s), device: {result.device}{chosen}"
        )
        if len(outcome.localizations) > L.MAX_POINTS:
            shown = len(self.viewer.layers[L.points_layer_name(job.source)].data)
            text += f"; {L.subsample_note(shown, len(outcome.localizations))}"
        if not len(outcome.localizations):
            text += (
                ". None found: check that the layer holds raw camera frames (ADU) and that the camera "
                "fields match the camera (baseline below the darkest pixels, gain)"
            )
        self.status.setText(text)
        summary = self.summary()
        self.results.show_summary(summary, outcome.threshold)
        scene = scene_of(outcome, summary)
        if scene is not None:  # what "Train for this movie" (the train widget) simulates
            SESSION.set_scene(scene)

    def summary(self):
        """The :class:`~..analysis.summary.Summary` of the last run."""
        return summarize_outcome(self.outcome)

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
        frames), anything else as docs/CONVENTIONS.md CSV (1-based frames, nm). Atomic; a failure
        is a notification and leaves no file behind."""
        if self.outcome is None:
            self.panel.refuse("nothing to export yet; press Predict first")
            return None
        path = Path(path)
        if path.suffix.lower() not in (".csv", *PICASSO_SUFFIXES):
            path = path.with_suffix(".csv")
        job = self.outcome.job
        try:
            write_localizations(
                self.outcome.localizations,
                path,
                pixel_size_nm=self.outcome.camera.pixel_size_nm,
                frame_shape=tuple(int(v) for v in job.data.shape[-2:]),
                n_frames=int(job.data.shape[0]) if job.ndim == 3 else 1,
            )
            report = path.with_name(path.stem + ".summary.md")
            write_text(report, self.summary().to_markdown())
        except (VarEmitterError, OSError) as exc:
            self.panel.refuse(f"cannot write {path}: {exc}")
            return None
        self.status.setText(
            f"exported {len(self.outcome.localizations)} localizations to {path} (summary: {report.name})"
        )
        return path
