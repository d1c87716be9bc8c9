"""The camera part of "Predict emitters": the fields, where their values came from, the PSF width,
a PSF measured from beads, and "Measure from image" (the calibration, in the background).

Where the values came from decides what a run does: values left at the form's defaults, for a layer
that says nothing of its camera, are measured from the frames before predicting; values from the
layer's metadata, entered by hand or measured are checked against the frames, and a disagreement
is a warning beside the fields.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from magicgui.widgets import FileEdit, FloatSpinBox, PushButton
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error

from ..camera import Camera
from ..localize.options import PredictOptions
from ..measured_psf import MeasuredPsf
from .forms import CameraForm, chosen_file
from .predict_job import measure_camera
from .session import SESSION, user_folder


def measure_and_save_psf(stack, pixel_size_nm: float, path: Path):
    """The PSF of a bead image, saved to ``path`` (run in a worker)."""
    from ..calibration.beads import measure_psf

    psf = measure_psf(np.asarray(stack), pixel_size_nm=pixel_size_nm)
    path.parent.mkdir(parents=True, exist_ok=True)
    psf.save(path)
    return psf, path


# where the camera fields came from
DEFAULTS, METADATA = "the form's defaults", "from the layer's metadata"
ENTERED, MEASURED = "entered in the form", "measured from the frames"


class CameraSection:
    """The camera fields (``form``), the PSF width (``psf_sigma``) and what they came from (``source``)."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.form = CameraForm(measure=True)
        self.fields = self.form.fields
        self.note = self.form.note
        self.psf_sigma = FloatSpinBox(
            label="PSF sigma (nm)",
            min=0.0,
            max=2000.0,
            step=5.0,
            value=0.0,
            tooltip=PredictOptions.help("psf_sigma_nm") + "; 0 = the model's own, or the measured width",
        )
        self.psf_file = FileEdit(
            label="PSF from beads", mode="r", filter="*.json", value="", tooltip=PredictOptions.help("psf")
        )
        self.beads_button = PushButton(
            text="Measure PSF from image (beads)",
            tooltip="the image chosen above is of isolated beads: measure the PSF (calibrate --beads), "
            f"save it in {user_folder()} and use it",
        )
        self.widgets = [*self.fields.values(), self.psf_sigma, self.psf_file, self.beads_button]
        self.widgets += [self.form.measure_button, self.note]
        self.source = DEFAULTS
        self._setting = False
        self._measuring = None  # the worker measuring the camera, while it runs
        for widget in self.fields.values():
            widget.changed.connect(self._edited)

    # --- values -------------------------------------------------------------------------------------
    def camera(self) -> Camera:
        return self.form.camera()

    def psf_sigma_nm(self) -> float | None:
        return float(self.psf_sigma.value) or None

    def measured_psf(self) -> MeasuredPsf | None:
        """The PSF file chosen (``calibrate --beads``), read; None where none is chosen."""
        path = chosen_file(self.psf_file)
        return MeasuredPsf.load(path) if path else None

    def set(self, values: dict, source: str) -> None:
        """Fill the fields named in ``values`` without taking them for the user's own entries."""
        self._setting = True
        try:
            self.form.set_values(values)
        finally:
            self._setting = False
        self.source = source
        self._publish()

    def follow_layer(self, found: dict) -> None:
        """Values a layer tells about (``camera_from_layer``); a layer that says nothing of its camera
        gets the defaults, to be measured from its frames when predicted."""
        if len(found) > 1:
            self.set(found, METADATA)
        else:
            self.set({**Camera().to_dict(), **found}, DEFAULTS)
        self.note.value = ""

    def _edited(self, _value=None) -> None:
        if not self._setting:
            self.source = ENTERED
        self._publish()

    def _publish(self) -> None:
        camera = self.form.valid_camera()
        if camera is not None:  # else the fields are being edited: publish when valid
            SESSION.camera = camera

    # --- measured -----------------------------------------------------------------------------------
    @property
    def measuring(self) -> bool:
        return self._measuring is not None

    def measure(self, frames) -> None:
        """Measure the camera and the PSF width from ``frames``, in the background."""
        if self._measuring is not None:
            return
        pixel_size_nm = float(self.fields["pixel_size_nm"].value)
        self.note.value = "measuring the camera from the frames..."
        self.form.measure_button.enabled = False
        self._measuring = create_worker(measure_camera, frames, pixel_size_nm, _ignore_errors=True)
        self._measuring.returned.connect(self.show_calibration)
        self._measuring.errored.connect(self._measure_failed)
        self._measuring.finished.connect(self._measure_finished)
        self._measuring.start()

    def measure_beads(self, stack, name: str) -> None:
        """Measure the PSF from ``stack`` (an image of beads), save it and choose it, in the background."""
        if self._measuring is not None:
            return
        pixel_size_nm = float(self.fields["pixel_size_nm"].value)
        path = user_folder() / f"{''.join(c if c.isalnum() or c in '-_' else '_' for c in name)}_psf.json"
        self.note.value = "measuring the PSF from the beads..."
        self.beads_button.enabled = False
        self._measuring = create_worker(measure_and_save_psf, stack, pixel_size_nm, path, _ignore_errors=True)
        self._measuring.returned.connect(self._show_psf)
        self._measuring.errored.connect(self._beads_failed)
        self._measuring.finished.connect(self._measure_finished)
        self._measuring.start()

    def _show_psf(self, result) -> None:
        psf, path = result
        self.psf_file.value = path
        src = psf.source
        self.note.value = (
            f"PSF measured from {src['beads']} beads: sigma {psf.sigma_nm:.0f} nm, misfit "
            f"{100 * src['residual']:.2f} % of the peak; saved to {path}"
        )

    def _beads_failed(self, exc: Exception) -> None:
        self.note.value = f"PSF not measured: {exc}"
        show_error(f"{self.title}: the PSF could not be measured: {exc}")

    def _measure_failed(self, exc: Exception) -> None:
        self.note.value = f"not measured: {exc}"
        show_error(f"{self.title}: the camera could not be measured: {exc}")

    def _measure_finished(self) -> None:
        self._measuring = None
        self.form.measure_button.enabled = self.beads_button.enabled = True

    def show_calibration(self, calibration) -> None:
        """Fill the camera (and PSF) fields with a calibration and say how sure it is."""
        self.set(calibration.camera().to_dict(), MEASURED)
        psf = calibration.psf_sigma_nm
        if math.isfinite(psf):
            self.psf_sigma.value = round(float(psf), 1)
        u = calibration.uncertainty

        def sure(key: str) -> str:
            error = u.get(key)
            return f" +- {error:.2g}" if error is not None and math.isfinite(error) else ""

        self.note.value = (
            f"measured: offset {calibration.baseline:.0f}{sure('baseline')} ADU, "
            f"{calibration.adu_per_electron:.3g}{sure('adu_per_electron')} ADU per photoelectron, "
            f"{calibration.camera_type} ({calibration.camera_type_source}), "
            + (f"PSF {psf:.0f} nm" if math.isfinite(psf) else "no PSF width (no isolated spot)")
        )

    def warn(self, warnings) -> None:
        self.note.value = "warning: " + " ".join(warnings)
