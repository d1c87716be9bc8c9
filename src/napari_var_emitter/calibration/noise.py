"""Camera calibration measured from SMLM frames alone (docs/CONVENTIONS.md sections 2 and 5).

Model. A pixel whose expected signal is ``n`` photoelectrons reads ``L = b + g n`` ADU on average,
with ``b`` the offset and ``g`` the ADU per photoelectron. Its noise has the cumulants of a compound
Poisson variable plus Gaussian read noise (``sigma2`` ADU^2, with 1/12 for rounding to whole ADU):

* variance ``V = s (L - b) + sigma2``, with the photon-transfer slope ``s = F g``;
* third central moment ``K = k s^2 (L - b)``.

sCMOS/CCD (electrons times g): ``F = 1``, ``k = 1``. EMCCD (each electron multiplied by an
exponentially distributed gain): ``V = 2 g^2 n``, ``K = 6 g^3 n``, so ``F = 2``, ``k = 1.5``.
The variance alone gives only ``s`` and ``sigma2 - s b``; the third moment, zero at ``L = b``, places
the offset. A range of levels (structured background, ``MIN_LEVEL_RANGE``) measures ``sigma2`` too
(with a weak prior) and, through ``k``, the camera type. At one level V and K leave a valley of
solutions: the read noise is then held at a typical value for the camera type (``READ_NOISE_PRIOR``),
its spread carried into the uncertainties, and the type is given or assumed (EMCCD), with a note.
For EMCCD, whose read noise is small beside V, this costs little; for sCMOS at low background, where
the read noise is a fair part of V, the offset and gain then lean on that typical value.

Algorithm.

1. Sample: at most ``MAX_FRAMES`` frames (fewer for large frames), read as a few runs of consecutive
   frames spread over the movie, so a long memory-mapped movie costs a bounded read.
2. Spots (:mod:`.spots`): emitters are detected and their pixels, dilated by the PSF's extent,
   are left out of the noise statistics, as is a thin border; isolated bright spots give the PSF width.
3. Moments (:mod:`.moments`): residuals that do not depend on the pixel's expected value (``residuals``:
   deviation from the pixel's mean in other frames, minus the frame's smooth change), binned by the
   smooth background level; per bin the variance ``V`` and third central moment ``K``.
4. Fit ``(s, b, read noise, k)`` by weighted least squares (``scipy.optimize.least_squares``), ``k``
   fixed by the camera type when it is given or cannot be measured. Uncertainties are standard
   deviations over a bootstrap of frames (of frame blocks for short movies), the typical read noise
   redrawn from its spread in each draw where it is held.
5. Dense frames: where spots cover over ``MAX_COVERED`` of the pixels, too few spot-free pixels
   remain, and the light of emitters the detection missed reaches them; where the spot-free pixels'
   variances stray from those of a spatial high-pass of whole frames (:mod:`.dense`, variances of
   single pixels whatever the light) by over ``MAX_DISAGREEMENT``, it does. There the high-pass's
   variances alone are fitted: slope and offset from the spread of levels that emitters make, the
   read noise held at its typical value, the camera type given or assumed.
6. Plausibility (``_check_plausible``): InputError, naming the flags to give instead, where the noise
   does not grow measurably with the light, where the offset is not below the background, and for
   dense frames where the offset is too uncertain to use (``MAX_OFFSET_ERROR``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares

from ..errors import InputError
from . import dense, moments
from . import spots as spots_psf
from .result import Calibration

CAMERA_TYPES = ("emccd", "scmos", "ccd")
SKEW_FACTOR = {"emccd": 1.5, "scmos": 1.0, "ccd": 1.0}  # k = K / (s^2 (L - b)); F = 2 k - 1
CONVENTIONAL_EM_GAIN = {"emccd": 100.0, "scmos": 1.0, "ccd": 1.0}  # only em_gain / e_per_adu is measured
# read noise in photoelectron equivalents (ADU / adu_per_electron): typical value and spread per type
READ_NOISE_PRIOR = {"emccd": (0.5, 0.5), "scmos": (1.5, 1.0), "ccd": (6.0, 4.0), None: (1.0, 2.0)}
DEFAULT_QE = 0.9
DEFAULT_PIXEL_SIZE_NM = 100.0
MAX_FRAMES = 200
MIN_LEVEL_RANGE = 0.2  # (highest - lowest bin level) / (mean level - offset) that measures read noise and k
SHOT_LIMIT_SCALE = 0.02  # read variance this fraction of V above the photon variance costs one deviation
K_DECISION_SIGMAS = 3.0  # a free k tells the type when within this many errors of one, beyond of the other
N_BOOTSTRAP = 100
IQR_PER_SD = 1.349  # interquartile range of a normal distribution, in standard deviations
MAX_COVERED = 0.8  # spots over more of the pixels: the noise is measured by the high-pass of dense.py
MAX_DISAGREEMENT = 9.0  # mean squared deviation (in errors) of the high-pass variances from a fit's line
MAX_OFFSET_ERROR = 0.2  # of the background above the offset: more, and dense frames cannot place it


# --------------------------------------------------------------------------------------------------
# 1. Fit of V = s (L - b) + sigma2, K = k s^2 (L - b)

_PARAMS = ("s", "b", "rn", "k")  # slope, offset, read noise (photoelectron equivalents), skew factor


def _sigma2(q: dict, rounding: float) -> float:
    return (q["rn"] * q["s"] / (2 * q["k"] - 1)) ** 2 + rounding


def _fit(st: dict, fixed: dict, prior: tuple[float, float], rounding: float) -> tuple[dict, dict]:
    """Weighted least squares of ``_PARAMS`` less ``fixed``, with the read-noise prior (mean, sd): the
    values and their standard errors from the fit's covariance (scaled by the reduced chi-square when
    above 1)."""
    names = [p for p in _PARAMS if p not in fixed]
    level, v, k3 = st["L"], st["V"], st["K"]
    lbar, vbar, kbar = (np.average(a, weights=st["n"]) for a in (level, v, k3))

    def residuals(p):
        q = fixed | dict(zip(names, p, strict=True))
        # at one level V and K also fit a read-noise-dominated camera with a tiny background; SMLM
        # backgrounds are shot-noise limited: read variance above the photon variance is penalized
        excess_read = max(_sigma2(q, rounding) - q["s"] * (lbar - q["b"]), 0.0) / (SHOT_LIMIT_SCALE * vbar)
        return np.concatenate(
            [
                (v - q["s"] * (level - q["b"]) - _sigma2(q, rounding)) / st["se_V"],
                (k3 - q["k"] * q["s"] ** 2 * (level - q["b"])) / st["se_K"],
                [(q["rn"] - prior[0]) / prior[1], excess_read] if "rn" in names else [],
            ]
        )

    lower = [0.55 if p == "k" else 0.0 if p in ("s", "rn") else -np.inf for p in names]
    upper = [3.0 if p == "k" else np.inf for p in names]
    fit = None
    for slope in _start_slopes(st, fixed, rounding):  # the fit from each start, the best kept
        q0 = {"rn": prior[0], "k": SKEW_FACTOR["emccd"], "s": slope} | fixed
        q0["b"] = fixed.get("b", lbar - max(vbar - _sigma2(q0, rounding), 0.5 * vbar) / q0["s"])
        start = np.clip([q0[p] for p in names], np.add(lower, 1e-9), np.subtract(upper, 1e-9))
        trial = least_squares(residuals, start, bounds=(lower, upper), x_scale="jac")
        if fit is None or trial.cost < fit.cost:
            fit = trial
    values = fixed | dict(zip(names, fit.x, strict=True))
    scale = max(1.0, 2 * fit.cost / max(len(fit.fun) - len(names), 1))
    try:
        cov = np.linalg.inv(fit.jac.T @ fit.jac) * scale
        errors = dict(zip(names, np.sqrt(np.maximum(np.diag(cov), 0.0)), strict=True))
    except np.linalg.LinAlgError:
        errors = dict.fromkeys(names, math.inf)
    return values, errors


def _start_slopes(st: dict, fixed: dict, rounding: float) -> list[float]:
    """Starting slopes: from V and K at the mean level (shot-limited), or the given offset; and where the
    levels spread, the slope of the variance line."""
    lbar, vbar, kbar = (np.average(st[a], weights=st["n"]) for a in ("L", "V", "K"))
    if "b" in fixed:
        return [max(vbar - rounding, 1e-12) / max(lbar - fixed["b"], 1e-9)]
    slopes = [max(kbar, 1e-12) / (fixed.get("k", SKEW_FACTOR["emccd"]) * vbar)]
    if len(st["L"]) > 2 and np.ptp(st["L"]) > 0:
        line = np.polyfit(st["L"], st["V"], 1, w=1.0 / st["se_V"])[0]
        slopes += [line] if line > 0 else []
    return slopes


def _level_range(st: dict, offset: float) -> float:
    """Spread of the bins' levels relative to the mean level above the offset."""
    return float((st["L"].max() - st["L"].min()) / max(np.average(st["L"], weights=st["n"]) - offset, 1e-9))


def _fit_camera(
    st: dict, fixed: dict, prior: tuple[float, float], rounding: float, highpass: bool = False
) -> tuple[dict, dict, dict]:
    """``_fit`` with the read noise held at the prior's value unless the levels span ``MIN_LEVEL_RANGE``.

    At one level V and K are met along a whole valley of (slope, offset, read noise), where tiny
    differences between the bins' levels would pick a point by their noise; the variances of the
    high-pass (``highpass``) see only ``sigma2 - s b`` at any range. Returns values, errors and the
    parameters held fixed.
    """
    held = fixed if "rn" in fixed else fixed | {"rn": prior[0]}
    values, errors = _fit(st, held, prior, rounding)
    if not highpass and "rn" not in fixed and _level_range(st, values["b"]) >= MIN_LEVEL_RANGE:
        held = fixed
        values, errors = _fit(st, held, prior, rounding)
    return values, errors, held


def _decide(
    st: dict, camera_type: str | None, fixed: dict, rounding: float, notes: list, highpass: bool
) -> tuple[str, str]:
    """The camera type and where it comes from: "given", "measured" (from a free k) or "assumed"."""
    first, _, _ = _fit_camera(st, fixed | {"k": SKEW_FACTOR[camera_type or "emccd"]}, (1.0, 2.0), rounding)
    why = "too narrow a range of background levels"
    if highpass:
        why = "frames too dense for the noise's skew to be measured"
    elif _level_range(st, first["b"]) >= MIN_LEVEL_RANGE:
        free, errors = _fit(st, fixed, READ_NOISE_PRIOR[camera_type], rounding)
        why = f"skew factor k = {free['k']:.2f} +- {errors['k']:.2f}; 1.5 EMCCD, 1 sCMOS/CCD"
        if camera_type is not None and abs(free["k"] - SKEW_FACTOR[camera_type]) > 4 * errors["k"]:
            notes.append(f"the noise shape does not look like a {camera_type} camera's ({why})")
        near, far = sorted(("emccd", "scmos"), key=lambda t: abs(free["k"] - SKEW_FACTOR[t]))
        apart = (abs(free["k"] - SKEW_FACTOR[t]) / max(errors["k"], 1e-12) for t in (near, far))
        if camera_type is None and next(apart) <= K_DECISION_SIGMAS <= next(apart):
            notes.append(f"camera type measured from the noise shape ({why})")
            return near, "measured"
    if camera_type is not None:
        return camera_type, "given"
    notes.append(
        f"the data cannot tell an EMCCD from an sCMOS camera ({why}): EMCCD assumed; give the camera type "
        "(--camera-type) if it is not one"
    )
    return "emccd", "assumed"


def _derived(q: dict, sums: np.ndarray, qe: float, background_adu: float | None = None) -> dict[str, float]:
    """The results of fitted values ``q``; the background level from the sums unless given."""
    ape = q["s"] / (2 * q["k"] - 1)
    if background_adu is None:
        total = sums.reshape(-1, sums.shape[-1]).sum(0)
        background_adu = total[moments.SX] / total[moments.N]
    return {
        "baseline": q["b"],
        "variance_slope": q["s"],
        "adu_per_electron": ape,
        "read_noise_adu": q["rn"] * ape,
        "background_adu": background_adu,
        "background_photons": (background_adu - q["b"]) / ape / qe,
    }


def _dark_maps(dark, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-pixel mean and variance (Y, X) of dark frames, over the movie's ``sample_window``."""
    arr = spots_psf.as_array(dark, "dark")
    if arr.shape[1:] != shape[1:]:
        raise InputError(f"dark: frames of {arr.shape[1:]} pixels do not match the movie's {shape[1:]}")
    d, _ = spots_psf.read_sample(arr, MAX_FRAMES)
    if not np.isfinite(d).all():
        raise InputError("dark: frames hold NaN or infinite values")
    return d.mean(axis=0), (d.var(axis=0, ddof=1) if len(d) >= 2 else None)


def _check_arguments(camera_type, qe, pixel_size_nm) -> str | None:
    if camera_type is not None and str(camera_type).lower() not in CAMERA_TYPES:
        raise InputError(f"camera_type must be one of {', '.join(CAMERA_TYPES)}, got {camera_type!r}")
    if isinstance(qe, bool) or not (isinstance(qe, (int, float)) and 0 < qe <= 1):
        raise InputError(f"qe must be in (0, 1], got {qe!r}")
    if pixel_size_nm is not None and not (isinstance(pixel_size_nm, (int, float)) and pixel_size_nm > 0):
        raise InputError(f"pixel_size_nm must be a positive number, got {pixel_size_nm!r}")
    return None if camera_type is None else str(camera_type).lower()


def _stats(sums: np.ndarray, highpass: bool) -> dict[str, np.ndarray]:
    """Per-bin statistics of sums (B, 11) (``moments.bin_stats``); for the high-pass without its third
    moment, ruled by the light that leaks through the kernel (:mod:`.dense`)."""
    st = moments.bin_stats(sums)
    if highpass:
        st["se_K"] = np.full_like(st["K"], np.inf)
    return st


def _disagreement(st: dict, q: dict, rounding: float) -> float:
    """Mean squared deviation, in standard errors, of the variances ``st`` from the line of values ``q``."""
    line = q["s"] * (st["L"] - q["b"]) + _sigma2(q, rounding)
    return float(np.mean(((st["V"] - line) / st["se_V"]) ** 2))


@dataclass
class _Fit:
    """A fit of the camera to one kind of noise moments."""

    sums: np.ndarray  # (U, B, 11) per bootstrap unit and level bin
    highpass: bool  # the moments are the high-pass's (dense.py), not those of spot-free pixels
    camera_type: str
    source: str  # of the camera type: "given", "measured" or "assumed"
    fixed: dict  # parameters given (offset, read noise from dark frames) and the type's skew factor
    values: dict
    errors: dict
    held: dict  # the parameters held fixed, the typical read noise where it is not measurable
    notes: list = field(default_factory=list)
    background_adu: float | None = None  # None: the mean level of the moments' samples


def _fit_moments(sums, highpass: bool, camera_type, fixed: dict, rounding: float) -> _Fit:
    """The camera type (given, measured or assumed) and the fit of the camera for it."""
    notes: list[str] = []
    st = _stats(sums.sum(0), highpass)
    camera_type, source = _decide(st, camera_type, fixed, rounding, notes, highpass)
    fixed = fixed | {"k": SKEW_FACTOR[camera_type]}
    values, errors, held = _fit_camera(st, fixed, READ_NOISE_PRIOR[camera_type], rounding, highpass)
    return _Fit(sums, highpass, camera_type, source, fixed, values, errors, held, notes)


def _fit_background(
    x, background, follows, read_var, camera_type, fixed, rounding, highpass_sums
) -> tuple[_Fit | None, str]:
    """The fit to the moments of spot-free pixels (:mod:`.moments`); None and why not where they are
    too few or their variances disagree with the high-pass's (emitters the detection missed light them)."""
    try:
        sums = moments.moment_sums(x, background, follows, read_var)
    except InputError:
        return None, "too few spot-free pixels"
    st = _stats(sums.sum(0), False)
    pooled = _stats(sums.sum((0, 1))[None], False)
    if len(st["L"]) == 0:
        return None, "too few spot-free pixels at any one level"
    if "b" not in fixed and not pooled["K"][0] > 3 * pooled["se_K"][0]:
        raise InputError(
            "cannot separate the camera offset from its gain: the background noise is not skewed (third "
            f"moment {pooled['K'][0]:.3g} +- {pooled['se_K'][0]:.2g} ADU^3); give dark frames or the offset"
        )
    fit = _fit_moments(sums, False, camera_type, fixed, rounding)
    if highpass_sums is not None:
        highpass = _stats(highpass_sums.sum(0), True)
        if len(highpass["L"]) and _disagreement(highpass, fit.values, rounding) > MAX_DISAGREEMENT:
            return (
                None,
                "the noise of the spot-free pixels disagrees with the rest's (missed emitters light it)",
            )
    return fit, ""


def _fit_frames(highpass_sums, correlation, why: str, camera_type, fixed, rounding) -> _Fit:
    """The fit to the high-pass moments of whole frames (:mod:`.dense`), used because of ``why``;
    ``correlation`` is the high-pass's (rho_x, rho_y, factor)."""
    if highpass_sums is None or len(_stats(highpass_sums.sum(0), True)["L"]) == 0:
        raise InputError(f"too few pixels to measure the noise ({why}): give more frames or larger frames")
    fit = _fit_moments(highpass_sums, True, camera_type, fixed, rounding)
    notes = [
        f"dense frames ({why}): the noise is measured from their finest spatial detail, which the optics "
        "do not pass, against the local level"
    ]
    if correlation[2] != 1.0:
        notes.append(
            f"the noise of neighbouring pixels is correlated ({correlation[0]:.2f} along rows, "
            f"{correlation[1]:.2f} along columns; charge transfer smears it): the variances are corrected"
        )
    fit.notes = notes + fit.notes
    return fit


def _check_plausible(result: dict, errors: dict, fixed: dict, highpass: bool) -> None:
    """InputError where the measured camera cannot be: noise that does not grow measurably with the
    light (slope within 3 errors of 0), an offset at or above the background (which would hold no
    photons); for dense frames also an offset more uncertain than ``MAX_OFFSET_ERROR`` of the
    background above it."""
    flags = "give the offset (--baseline) or dark frames (--dark), and the camera type (--camera-type)"
    slope, se_slope = result["variance_slope"], errors.get("s", 0.0)
    if not (math.isfinite(slope) and slope > 3 * se_slope):
        raise InputError(
            f"the noise does not grow measurably with the light in these frames (variance slope {slope:.3g} "
            f"+- {se_slope:.2g}): were they denoised or rescaled? The camera cannot be measured; {flags}"
        )
    if "b" in fixed:
        return
    b, background, se_b = result["baseline"], result["background_adu"], errors.get("b", 0.0)
    if b >= background:
        raise InputError(
            f"the measured offset, {b:.0f} ADU, is not below the background ({background:.0f} ADU): the "
            f"frames cannot be calibrated; {flags}"
        )
    if highpass and se_b > MAX_OFFSET_ERROR * (background - b):
        raise InputError(
            f"the frames are too dense to measure the camera offset ({b:.0f} +- {se_b:.0f} ADU below a "
            f"background of {background:.0f} ADU): {flags}"
        )


def _bootstrap(sums, fixed, prior, rounding, qe, n: int, seed: int, highpass, background) -> dict[str, float]:
    """Standard errors over units resampled and the read-noise prior redrawn: the draws' interquartile
    range as a normal deviation. Not their plain deviation: a resample of a short movie can put the
    fit on a wrong branch, and one such draw in 50 (offset 500 ADU, the rest within 10 of 240) made
    it ten times the spread of the rest, so that checks fell silent by the luck of the resampling."""
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n):
        pick = rng.integers(0, len(sums), len(sums))
        typical = max(prior[0] + prior[1] * rng.standard_normal(), 0.0)
        held = fixed | ({"rn": typical} if "rn" in fixed and prior[1] > 0 else {})
        try:
            st = _stats(sums[pick].sum(0), highpass)
            draws.append(
                _derived(_fit(st, held, (typical, prior[1]), rounding)[0], sums[pick], qe, background)
            )
        except (ValueError, np.linalg.LinAlgError):
            continue
    if len(draws) < 10:
        return {}
    return {
        k: float(np.subtract(*np.percentile([d[k] for d in draws], [75, 25])) / IQR_PER_SD) for k in draws[0]
    }


def calibrate(
    frames,
    *,
    camera_type: str | None = None,
    pixel_size_nm: float | None = None,
    dark=None,
    baseline: float | None = None,
    qe: float = DEFAULT_QE,
    max_frames: int = MAX_FRAMES,
    n_bootstrap: int = N_BOOTSTRAP,
    fit_psf: bool = True,
    seed: int = 0,
) -> Calibration:
    """Measure the camera (docs/CONVENTIONS.md section 2) from frames (T, Y, X) or (Y, X) in ADU.

    ``camera_type`` is "emccd", "scmos" or "ccd" (else measured where the data allow, EMCCD assumed
    where not); ``dark`` (T, Y, X) frames without light give per-pixel offset and variance maps;
    ``baseline`` (ADU) is a known offset. At most ``max_frames`` frames are read. Raises
    :class:`InputError` with one sentence when the frames cannot be calibrated.
    """
    camera_type = _check_arguments(camera_type, qe, pixel_size_nm)
    notes: list[str] = []
    arr = spots_psf.as_array(frames, "frames")
    x, follows = spots_psf.read_sample(arr, max_frames)
    valid = spots_psf.valid_pixels(x, arr.dtype)
    low_percentile = float(np.percentile(x[valid], 1))
    rounding = 1.0 / 12.0 if np.array_equal(x[valid], np.round(x[valid])) else 0.0  # whole ADU

    fixed: dict[str, float] = {}
    offset_map = variance_map = read_var = None
    if dark is not None:
        offset_map, variance_map = _dark_maps(dark, arr.shape)
        fixed["b"] = float(offset_map.mean())
        x = x - offset_map + fixed["b"]  # per-pixel offsets removed, the mean offset kept
        if variance_map is not None:  # the dark variance (read noise, rounding) is subtracted per pixel
            read_var, fixed["rn"], rounding = np.broadcast_to(variance_map, x.shape), 0.0, 0.0
        notes.append(f"offset from the dark frames: {fixed['b']:.2f} ADU (mean of the per-pixel map)")
    elif baseline is not None:
        fixed["b"] = float(baseline)

    spots = spots_psf.find_spots(x, valid, follows)
    psf = spots_psf.fit_psf(x, spots) if fit_psf else spots_psf.PsfFit(math.nan, math.nan, 0)
    background, covered = spots_psf.background_pixels(valid, spots, psf.sigma_px)
    highpass_sums, correlation = dense.highpass_sums(x, valid, follows, read_var)
    fit, why = None, f"spots cover {covered:.0%} of the pixels"
    if covered <= MAX_COVERED:
        fit, why = _fit_background(
            x, background, follows, read_var, camera_type, fixed, rounding, highpass_sums
        )
    if fit is None:
        fit = _fit_frames(highpass_sums, correlation, why, camera_type, fixed, rounding)
        fit.background_adu = float(x[background].mean()) if background.any() else float(np.median(x[valid]))
    elif covered > 0.5:
        notes.append(
            f"spots and the border cover {covered:.0%} of the pixels: the noise statistics use the rest"
        )
    notes += fit.notes
    camera_type, fixed, values, errors, held = fit.camera_type, fit.fixed, fit.values, fit.errors, fit.held
    sums, st = fit.sums, _stats(fit.sums.sum(0), fit.highpass)
    prior = READ_NOISE_PRIOR[camera_type]
    result = _derived(values, sums, qe, fit.background_adu)
    by_type = {}
    for name in ("emccd", "scmos"):
        given = fixed | {"k": SKEW_FACTOR[name]}
        v, e, _ = _fit_camera(st, given, READ_NOISE_PRIOR[name], rounding, fit.highpass)
        by_type[name] = {"baseline": v["b"], "variance_slope": v["s"], "baseline_error": e.get("b", 0.0)}
    if variance_map is not None:
        prior = (0.0, 0.0)  # the dark frames' variance, not a typical value
    uncertainty = _bootstrap(
        sums, held, prior, rounding, qe, n_bootstrap, seed, fit.highpass, fit.background_adu
    ) or (
        dict.fromkeys(result, math.nan)  # no bootstrap: the fit's covariance for the offset and slope
        | {"baseline": errors.get("b", 0.0), "variance_slope": errors["s"]}
        | {"adu_per_electron": errors["s"] / (2 * fixed["k"] - 1)}
    )
    if variance_map is not None:
        result["read_noise_adu"] = math.sqrt(max(float(variance_map.mean()) - 1.0 / 12.0, 0.0))
        uncertainty["read_noise_adu"] = math.nan
    elif "rn" in held and "rn" not in fixed:
        why = "too narrow a range of levels"
        if fit.highpass:
            why = "dense frames show only its sum with the offset"
        notes.append(
            f"the read noise is not measurable from these frames ({why}): a typical "
            f"{camera_type} value, {prior[0]:g} +- {prior[1]:g} photoelectrons, is assumed, its spread "
            "included in the uncertainties"
        )
    _check_plausible(result, errors, fixed, fit.highpass)

    b, se_b = result["baseline"], np.nan_to_num(uncertainty["baseline"])
    if b + 3 * se_b + 1.0 < 0:
        raise InputError(
            f"the measured offset is {b:.1f} ADU, below zero: were the frames offset-subtracted?"
        )
    if b < 0:
        notes.append(f"the measured offset ({b:.1f} ADU) is below zero but consistent with 0: 0 used")
    if pixel_size_nm is None:
        pixel_size_nm = DEFAULT_PIXEL_SIZE_NM
        notes.append(f"pixel size not given: {DEFAULT_PIXEL_SIZE_NM:g} nm assumed")
    em_gain = CONVENTIONAL_EM_GAIN[camera_type]
    if camera_type == "emccd":
        notes.append(
            f"only em_gain / e_per_adu = {result['adu_per_electron']:.4g} ADU per photoelectron is "
            f"measurable from noise: em_gain {em_gain:g} is a convention and e_per_adu follows from it"
        )
    if fit_psf and psf.n_spots == 0:
        notes.append("no isolated bright spot found: the PSF width is unknown")
    se_psf = 1.2533 * psf.spread_px / math.sqrt(psf.n_spots) if psf.n_spots > 1 else math.nan
    e_per_adu = em_gain / result["adu_per_electron"]
    uncertainty |= {
        "read_noise_e": uncertainty["read_noise_adu"] * e_per_adu,
        "psf_sigma_px": se_psf,
        "psf_sigma_nm": se_psf * pixel_size_nm,
    }
    return Calibration(
        **result,
        excess_noise=2.0 * fixed["k"] - 1.0,
        psf_sigma_px=psf.sigma_px,
        psf_sigma_spread_px=psf.spread_px,
        n_psf_spots=psf.n_spots,
        camera_type=camera_type,
        camera_type_source=fit.source,
        pixel_size_nm=float(pixel_size_nm),
        qe=float(qe),
        em_gain=em_gain,
        low_percentile_adu=low_percentile,
        n_frames=len(x),
        uncertainty=uncertainty,
        by_type=by_type,
        notes=notes,
        offset_map=offset_map,
        variance_map=variance_map,
    )
