"""Whether a camera given by hand agrees with the frames (:func:`check_camera`)."""

from __future__ import annotations

import math

from ..camera import Camera
from .noise import calibrate
from .result import Calibration

CHECK_SLOPE_RATIO = 1.5
CHECK_MAX_FRAMES = 20


def check_camera(frames_or_calibration, camera: Camera) -> list[str]:
    """Warnings (empty when fine) where ``camera`` disagrees with the frames or a :class:`Calibration`.

    Checked, each against the measurement for the camera's own type (EMCCD when ``em_gain > 1``):
    the variance slope ``F * em_gain / e_per_adu`` (more than ``CHECK_SLOPE_RATIO`` and 3 standard
    errors apart), a baseline above the frames' 1st percentile and above the measured offset, and
    otherwise a baseline far from the measured offset (by a quarter of the background above it, or
    3 standard errors).
    Frames are measured on at most ``CHECK_MAX_FRAMES`` frames, without bootstrap or PSF fit;
    :class:`InputError` where they cannot be (see :func:`calibrate`).
    """
    kind = "emccd" if camera.em_gain > 1 else "scmos"
    cal = frames_or_calibration
    if not isinstance(cal, Calibration):  # InputError where the frames cannot be measured
        cal = calibrate(cal, camera_type=kind, max_frames=CHECK_MAX_FRAMES, n_bootstrap=0, fit_psf=False)
    measured = cal.by_type[kind]
    b, slope, se_b = measured["baseline"], measured["variance_slope"], measured["baseline_error"]
    if kind == cal.camera_type and math.isfinite(cal.uncertainty.get("baseline", math.nan)):
        se_b = cal.uncertainty["baseline"]
    se_slope = cal.uncertainty.get("variance_slope", math.nan) if kind == cal.camera_type else math.nan
    fix = (
        f"--camera auto or --baseline {max(b, 0):.0f} --e-per-adu "
        f"{camera.em_gain * camera.excess_noise / slope:.4g} --em-gain {camera.em_gain:g}"
    )
    warnings = []
    camera_slope = camera.excess_noise * camera.em_gain / camera.e_per_adu
    ratio = camera_slope / slope
    if not (1 / CHECK_SLOPE_RATIO <= ratio <= CHECK_SLOPE_RATIO or abs(camera_slope - slope) <= 3 * se_slope):
        warnings.append(
            f"the camera's noise variance slope (F * em_gain / e_per_adu) is {camera_slope:.3g} ADU per ADU, "
            f"the frames show {slope:.3g} ({ratio:.2g} x): photon counts would be off by about that factor; "
            f"use {fix}"
        )
    above = cal.background_adu - b
    if camera.baseline > cal.low_percentile_adu and camera.baseline - b > max(0.1 * above, 3 * se_b):
        warnings.append(
            f"the camera's baseline {camera.baseline:g} ADU is above the 1st percentile of the frames "
            f"({cal.low_percentile_adu:.0f} ADU; measured offset {b:.0f} ADU): many pixels would hold "
            f"negative photons; use {fix}"
        )
    elif abs(camera.baseline - b) > max(0.25 * above, 3 * se_b):
        side = "below" if camera.baseline < b else "above"
        warnings.append(
            f"the camera's baseline {camera.baseline:g} ADU is far {side} the frames' measured offset "
            f"({b:.0f} ADU): the background would read {(cal.background_adu - camera.baseline) / above:.2g} "
            f"x its photons; use {fix}"
        )
    return warnings
