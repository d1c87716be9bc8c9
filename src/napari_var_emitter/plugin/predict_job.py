"""What the "Predict emitters" widget runs: a job read from the form, checked, and run in a worker.

No Qt here: :func:`run_prediction` is the generator the widget hands to its worker panel, and the
checks are plain functions, so the job's logic is the command line's (:mod:`..localize`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..camera import CAMERA_FIELDS
from ..errors import InputError, VarEmitterError
from ..io.localizations import Localizations
from ..io.stack import MIN_FRAME_SIZE, check_frame_shape
from ..localize.options import PredictOptions
from .session import Scene
from .worker_panel import relay_errors


@dataclass(frozen=True)
class PredictJob:
    """Everything the worker needs, read from the widget on the UI thread."""

    source: str  # input layer name
    data: Any  # the layer's data (numpy, dask, ...): sliced and read in the worker
    ndim: int  # 2 (one frame) or 3 (T, Y, X)
    first: int  # first frame (0-based, inclusive)
    stop: int  # last frame + 1
    options: PredictOptions  # options.model: "auto", "bundled", "bundled:NAME" or a path
    model: Any  # the loaded model; for "auto", the one-frame bundled model the choice starts from
    maps: tuple[int, ...]
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    render_factor: int
    camera_source: str = ""  # where the camera fields came from (the results panel says)
    measure: bool = False  # measure the camera and the PSF from the frames first (calibration)
    psf_file: str | None = None  # the file of options.psf (calibrate --beads), for "Train for this movie"


@dataclass(frozen=True)
class PredictOutcome:
    """What the worker returns: the result, with frames counted in the whole stack."""

    job: PredictJob
    result: Any  # localize.PredictionResult; frames 0-based in the whole stack
    choice: Any = None  # autoselect.Choice where the job was ``auto``
    threshold: float = float("nan")  # the detection threshold the run used
    options: PredictOptions | None = None  # what the run used: the measured camera where it measured one
    calibration: Any = None  # calibration.Calibration where the job measured the camera
    warnings: tuple[str, ...] = ()  # where the camera disagrees with the frames, or could not be measured

    @property
    def camera(self):
        return (self.options or self.job.options).camera

    @property
    def localizations(self) -> Localizations:
        return self.result.localizations


def run_prediction(job: PredictJob):
    """Generator run in the worker thread: measure the camera where the job asks (or check the
    camera given against the frames), choose the model (``auto`` reads a sample of the frames, here
    and not on the UI thread), then predict chunk by chunk (a dask or memory-mapped stack is never
    loaded whole); returns a :class:`PredictOutcome`."""
    from ..localize import pipeline, resolve_model

    frames = job.data if job.ndim == 2 else job.data[job.first : job.stop]  # lazy: nothing read yet
    options, calibration, warnings = measured_options(job, frames)
    model, choice = job.model, None
    if options.model == "auto":
        resolved = resolve_model("auto", frames, options.camera, options.device, frame_model=job.model)
        model, choice = resolved.model, resolved.choice
    result = yield from relay_errors(
        pipeline.iter_predict(
            job.data,
            model,
            options=options,
            maps=job.maps,
            frame_range=None if job.ndim == 2 else (job.first, job.stop),
        )
    )
    threshold = options.threshold if options.threshold is not None else model.threshold
    return PredictOutcome(
        job=job,
        result=result,
        choice=choice,
        threshold=float(threshold),
        options=options,
        calibration=calibration,
        warnings=tuple(warnings),
    )


def measured_options(job: PredictJob, frames) -> tuple[PredictOptions, Any, list[str]]:
    """The job's options with the camera (and PSF width, unless a PSF measured from beads is given)
    measured from ``frames`` where it asks;
    else the camera given, checked against the frames. Returns (options, calibration, warnings)."""
    from ..calibration import calibrate, check_camera

    options = job.options
    try:
        if not job.measure:
            return options, None, check_camera(frames, options.camera)
        calibration = calibrate(frames, pixel_size_nm=options.camera.pixel_size_nm, n_bootstrap=0)
    except VarEmitterError as exc:
        what = "measured" if job.measure else "checked against the frames"
        return options, None, [f"the camera could not be {what} ({exc}); the form's values were used"]
    psf = options.psf_sigma_nm
    if psf is None and options.psf is None and math.isfinite(calibration.psf_sigma_nm):
        psf = float(calibration.psf_sigma_nm)
    return options.replace(camera=calibration.camera(), psf_sigma_nm=psf), calibration, []


def measure_camera(frames, pixel_size_nm: float):
    """The calibration of ``frames`` (run in a worker: it reads a sample of them)."""
    from ..calibration import calibrate

    return calibrate(frames, pixel_size_nm=pixel_size_nm, n_bootstrap=50)


def summarize_outcome(outcome: PredictOutcome):
    """The :class:`~..analysis.summary.Summary` of a run: counts, photons, precision, density, and
    the camera and model it used."""
    from ..analysis.summary import summarize

    job, choice = outcome.job, outcome.choice
    return summarize(
        outcome.localizations,
        job.stop - job.first,
        tuple(int(v) for v in job.data.shape[-2:]),
        outcome.camera.pixel_size_nm,
        first_frame=job.first,
        camera=outcome.camera,
        camera_source="measured from the frames" if outcome.calibration is not None else job.camera_source,
        model=f"{choice.label} ({choice.reason})" if choice is not None else job.options.model,
    )


def scene_of(outcome: PredictOutcome, summary) -> Scene | None:
    """What the movie of a run looks like to a simulation: its PSF width, background and density
    (None where the run found nothing to say it)."""
    locs = outcome.localizations
    background = float(np.nanmedian(locs.background)) if len(locs) else math.nan
    if not math.isfinite(background) and outcome.calibration is not None:
        background = outcome.calibration.background_photons
    if not (math.isfinite(background) and math.isfinite(summary.density_per_um2)):
        return None
    options = outcome.options
    psf = options.psf_sigma_nm or (options.psf.sigma_nm if options.psf else outcome.job.model.psf_sigma_nm)
    density = float(summary.density_per_um2)
    return Scene(outcome.job.source, float(psf), float(background), density, outcome.job.psf_file)


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
