"""Pixel statistics for the camera calibration (:mod:`.noise`): spots, PSF width, noise moments.

0. Frames: validated, and read as a bounded sample (runs of consecutive frames, the central part of
   very large frames).
1. Background level: a normalized Gaussian convolution (``smooth_level``) of each frame over the pixels
   that are valid and not near a spot, optionally leaving each pixel itself out so that the level at a
   pixel is independent of that pixel's own noise.
2. Detection (``find_spots``): each frame minus its level (smooth level plus the pixel's static
   pattern, its median excess over the frames where it is not near a spot), filtered by a 1 px Gaussian
   (a matched filter for a PSF of about that width); a spot is where this excess is above
   ``DETECT_SIGMAS`` times the frame's noise, taken from the lower half of the excess, which emitters
   do not reach. Done twice: the second level leaves out the first pass's spots. ``spot_mask``
   dilates the detections by a disk as wide as the PSF's tails.
3. PSF width (``fit_psf``): isolated local maxima (``skimage.feature.peak_local_max``) whose excess is
   at least ``BRIGHT_SIGMAS`` noise deviations, each fitted by ``scipy.optimize.least_squares`` with a
   pixel-integrated (erf) elliptical Gaussian plus a flat background, as a camera records a Gaussian
   PSF; elongated fits (two emitters seen as one) are left out. The median and the robust spread
   (1.4826 * MAD) of sqrt(sigma_x sigma_y) are reported.
4. Noise moments (``residuals``, ``moment_sums``, ``bin_stats``): residuals of the background pixels
   that do not depend on their expected values, and per bin of background level their variance and
   third central moment, summed per bootstrap unit.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.optimize import least_squares
from scipy.special import erf
from skimage.feature import peak_local_max

from ..errors import InputError

LEVEL_SIGMA_PX = 4.0  # scale of the background level: wider than a spot, narrower than illumination
MATCHED_SIGMA_PX = 1.0  # detection filter
DEFAULT_PSF_SIGMA_PX = 1.3  # before the PSF is measured
DETECT_SIGMAS = 3.0  # spot threshold, in robust noise deviations of the filtered excess
BRIGHT_SIGMAS = 15.0  # spots fitted for the PSF width
MAX_PSF_SPOTS = 100  # isolated bright spots fitted
MAX_ELONGATION = 1.2  # larger sigma_x / sigma_y: two emitters seen as one
MIN_OTHER_FRAMES = 2  # for the temporal leave-one-out mean of a pixel
_TRUNCATE = 3.0  # Gaussian kernels extend this many sigmas

# columns of the per-(unit, bin) sums of residuals u: count, x, u^1..4, u^6, V and K factors, dark variance
N, SX, S1, S2, S3, S4, S6, SA, SC, SR = range(10)
N_BINS = 8
MIN_BIN_SAMPLES = 200
MIN_BACKGROUND_SAMPLES = 5_000
CLIP_SIGMAS = 8.0  # residuals are winsorized this far from their median (robust deviations)
MAX_SAMPLE_PIXELS = 2**22  # frames read at most: 200 of 144 x 144 px, 64 of 256 x 256, 16 of 512 x 512
MIN_SIDE = 16
MIN_PIXELS = 10_000


# --------------------------------------------------------------------------------------------------
# 0. Frames: validation and a bounded sample


def as_array(a, name: str):
    """``a`` as a (T, Y, X) stack, checked: numpy arrays and memory maps as they are, lazy stacks
    (dask, :func:`..io.stream.open_frames`) too, so that only the sample is ever read."""
    if hasattr(a, "detach") and hasattr(a, "cpu"):  # torch tensor, without importing torch
        a = a.detach().cpu().numpy()
    lazy = hasattr(a, "shape") and hasattr(a, "dtype") and hasattr(a, "__getitem__")
    if not lazy or len(a.shape) == 2:
        try:
            a = np.asarray(a)  # a memory map stays a memory map; a single frame is small
        except (TypeError, ValueError) as exc:
            raise InputError(f"{name}: not an array ({exc})") from None
    dtype = np.dtype(a.dtype)
    if dtype.kind == "b" or not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise InputError(f"{name}: expected real numbers, got dtype {dtype}")
    shape = tuple(a.shape)
    if len(shape) not in (2, 3):
        raise InputError(f"{name}: expected a frame (Y, X) or a stack (T, Y, X), got shape {shape}")
    a = a[None] if len(shape) == 2 else a
    if a.shape[0] == 0 or min(a.shape[1:]) < MIN_SIDE:
        raise InputError(
            f"{name}: frames must be at least {MIN_SIDE} x {MIN_SIDE} pixels, got {tuple(a.shape)}"
        )
    return a


def sample_window(shape: tuple[int, ...]) -> tuple[slice, slice]:
    """The central (rows, cols) of frames larger than ``MAX_SAMPLE_PIXELS``: the part that is read."""
    h, w = shape[-2:]
    side = int(math.sqrt(MAX_SAMPLE_PIXELS))
    rows, cols = min(h, max(side, MAX_SAMPLE_PIXELS // w)), min(w, max(side, MAX_SAMPLE_PIXELS // h))
    return slice((h - rows) // 2, (h - rows) // 2 + rows), slice((w - cols) // 2, (w - cols) // 2 + cols)


def read_sample(arr: np.ndarray, max_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_frames`` frames (T, Y, X) float64 of ``sample_window``, in runs of consecutive frames.

    Returns the frames and ``follows`` (T,): True where a frame is the movie's next after the previous one.
    """
    rows, cols = sample_window(arr.shape)
    t_all, h, w = arr.shape[0], rows.stop - rows.start, cols.stop - cols.start
    n = max(1, min(t_all, max_frames, MAX_SAMPLE_PIXELS // (h * w)))
    n_runs = 1 if n == t_all else max(1, min(8, n // 10))
    run = n // n_runs
    starts = np.unique(np.round(np.linspace(0, t_all - run, n_runs)).astype(int))
    frames = np.concatenate([np.asarray(arr[s : s + run, rows, cols], dtype=np.float64) for s in starts])
    follows = np.concatenate([np.arange(run) > 0 for _ in starts])
    return frames, follows


def valid_pixels(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Finite pixels (T, Y, X) below the integer dtype's saturation; InputError where too few or constant."""
    valid = np.isfinite(x)
    if not valid.any():
        raise InputError("frames hold no finite values (all NaN or infinite): nothing to calibrate")
    lo, hi = np.min(x[valid]), np.max(x[valid])
    if lo == hi:
        raise InputError(f"frames are constant ({lo:g} ADU everywhere): there is no noise to calibrate from")
    if np.issubdtype(dtype, np.integer):  # saturated pixels do not follow the noise model
        valid &= x < np.iinfo(dtype).max
    if valid.sum() < MIN_PIXELS:
        raise InputError(
            f"calibration needs at least {MIN_PIXELS} finite, unsaturated pixels, got {int(valid.sum())}"
        )
    return valid


@dataclass
class Spots:
    detected: np.ndarray  # (T, Y, X) bool: excess above the detection threshold
    excess: np.ndarray  # (T, Y, X) float64: matched-filtered frame minus its level
    noise: np.ndarray  # (T,) robust standard deviation of ``excess`` per frame
    # detections from the excess of black pixels only, then of white pixels only (checkerboard): a
    # pixel's own noise never decides whether the other colour's detections mask it
    by_colour: tuple[np.ndarray, np.ndarray]


@dataclass
class PsfFit:
    sigma_px: float  # median fitted Gaussian sigma (NaN when no spot could be fitted)
    spread_px: float  # robust standard deviation of the fitted sigmas over spots
    n_spots: int


def _blur(a: np.ndarray, sigma: float, truncate: float = _TRUNCATE) -> np.ndarray:
    """Gaussian filter over the last two axes of (T, Y, X), zero outside the frame."""
    return ndimage.gaussian_filter(a, (0, sigma, sigma), mode="constant", cval=0.0, truncate=truncate)


def _kernel_sums(sigma: float) -> tuple[float, float]:
    """Of the 2D kernel ``_blur`` applies: its centre weight, and sum(w^2) / sum(w') for w' the kernel
    of width sigma / sqrt(2) over the same radius."""
    radius = int(_TRUNCATE * sigma + 0.5)  # as scipy.ndimage computes it
    g = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    g2 = g**2
    return float((1.0 / g.sum()) ** 2), float((g2.sum() / g.sum() ** 2) ** 2)


def smooth_level(
    x: np.ndarray, weight: np.ndarray, sigma: float = LEVEL_SIGMA_PX, leave_out: bool = False
) -> np.ndarray:
    """Weighted local mean (T, Y, X) of each frame of x over the pixels with ``weight``; NaN where none.

    With ``leave_out`` each pixel's own value is left out.
    """
    w = weight.astype(np.float64)
    xw = np.where(weight, x, 0.0)
    num, den = _blur(xw, sigma), _blur(w, sigma)
    if leave_out:
        centre = _kernel_sums(sigma)[0]
        num, den = num - centre * xw, den - centre * w
    ok = den > 1e-3
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, num / np.where(ok, den, 1.0), np.nan)


def variance_factor(weight: np.ndarray, sigma: float = LEVEL_SIGMA_PX) -> np.ndarray:
    """``1 + sum(w_i^2) / sum(w_i)^2`` (T, Y, X) of ``smooth_level(..., leave_out=True)``'s weights.

    The variance of ``x - level`` exceeds that of x by this factor for uncorrelated noise of equal
    variance (1 + 1 / the effective number of neighbours).
    """
    w = weight.astype(np.float64)
    centre, square_ratio = _kernel_sums(sigma)
    den = _blur(w, sigma) - centre * w
    squares = square_ratio * _blur(w, sigma / math.sqrt(2.0), _TRUNCATE * math.sqrt(2.0)) - centre**2 * w
    ok = den > 1e-3
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1.0 + np.where(ok, squares / np.where(ok, den, 1.0) ** 2, np.nan)


def _robust_std(values: np.ndarray, axis=None) -> np.ndarray:
    med = np.nanmedian(values, axis=axis, keepdims=True)
    return 1.4826 * np.nanmedian(np.abs(values - med), axis=axis)


def _runs(follows: np.ndarray) -> list[slice]:
    """Slices of runs of consecutive frames; ``follows`` (T,) is False where a run starts."""
    starts = list(np.flatnonzero(~follows)) + [len(follows)]
    return [slice(a, b) for a, b in zip(starts[:-1], starts[1:], strict=True)]


def residuals(
    x: np.ndarray, keep: np.ndarray, follows: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Noise residuals of x (T, Y, X) at the pixels ``keep``, independent of the pixels' expected values.

    1. Where a pixel is kept in at least ``MIN_OTHER_FRAMES`` other frames of its run of consecutive
       frames, its deviation from their mean: any static pattern (structure, fixed-pattern offsets)
       cancels exactly. Without enough frames the deviation is the value itself.
    2. Minus the leave-one-out ``smooth_level`` of the deviations in the same frame: frame-to-frame
       changes of the level (drift, illumination) and, for single frames, smooth structure.

    Returns ``u``; the leave-one-out smooth level of x (T, Y, X), the binning variable, independent of
    u; the factor ``a`` with ``E[u^2] = a V`` and ``c`` with ``E[(u - E u)^3] = c K`` for noise of
    variance V and third moment K; and the mask of usable samples.
    """
    dev, m = x, np.full(x.shape, np.inf)
    temporal = np.zeros_like(keep)
    for run in _runs(follows):
        w = keep[run].astype(np.float64)
        others = w.sum(0) - w  # (t, Y, X): kept frames other than t
        good = keep[run] & (others >= MIN_OTHER_FRAMES)
        temporal[run] = good
        m[run] = np.where(good, others, np.inf)
    if temporal.sum() >= 0.5 * keep.sum():  # enough frames: only the pattern-free deviations
        dev = np.zeros_like(x)
        for run in _runs(follows):
            xw = np.where(keep[run], x[run], 0.0)
            with np.errstate(invalid="ignore", divide="ignore"):
                dev[run] = np.where(temporal[run], x[run] - (xw.sum(0) - xw) / m[run], 0.0)
        keep = temporal
    else:
        m[:] = np.inf
    # The level that bins the samples and the change subtracted from them use disjoint pixels (the two
    # colours of a checkerboard), so that binning does not select on the change's noise.
    black = checkerboard(x.shape[1:])
    level = smooth_level(x, keep & black, leave_out=True)
    change = smooth_level(np.where(keep, dev, 0.0), keep & ~black, leave_out=True)
    factor = variance_factor(keep & ~black)
    usable = keep & np.isfinite(level) & np.isfinite(change)
    u = np.where(usable, dev - change, 0.0)
    a = np.where(usable, factor * (1.0 + 1.0 / m), 0.0)
    c = 1.0 - 1.0 / m**2
    return u, level, a, c, usable


def checkerboard(shape: tuple[int, int]) -> np.ndarray:
    """(Y, X) True on the "black" pixels, those with an even row + column."""
    return (np.arange(shape[0])[:, None] + np.arange(shape[1])[None, :]) % 2 == 0


def _detect(resid: np.ndarray, use: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Matched-filter excess of resid (T, Y, X) over the pixels ``use``, its noise (T,), detections."""
    sigmas = (0, MATCHED_SIGMA_PX, MATCHED_SIGMA_PX)
    num = ndimage.gaussian_filter(np.where(use, resid, 0.0), sigmas, mode="nearest")
    den = ndimage.gaussian_filter(use.astype(np.float64), sigmas, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        excess = np.where(den > 0.05, num / den, np.nan)
    flat = excess.reshape(len(resid), -1)
    with warnings.catch_warnings():  # a frame without valid pixels: no noise, no detection
        warnings.simplefilter("ignore", RuntimeWarning)
        noise = np.nanmedian(flat, axis=1) - np.nanpercentile(flat, 15.87, axis=1)  # (T,)
    noise = np.where(np.isfinite(noise) & (noise > 0), noise, np.inf)
    return excess, noise, np.nan_to_num(excess, nan=-np.inf) > DETECT_SIGMAS * noise[:, None, None]


def _median_over_frames(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Median (Y, X) over the first axis of values (t, Y, X) where ``keep``; 0 where never kept."""
    ordered = np.sort(np.where(keep, values, np.nan), axis=0)  # NaN sorts last
    count = keep.sum(0)
    low = np.take_along_axis(ordered, np.maximum(count - 1, 0)[None] // 2, axis=0)[0]
    high = np.take_along_axis(ordered, (count // 2)[None], axis=0)[0]
    return np.where(count > 0, 0.5 * (low + high), 0.0)


def find_spots(x: np.ndarray, valid: np.ndarray, follows: np.ndarray) -> Spots:
    """Detect emitters in x (T, Y, X) ADU; ``valid`` (T, Y, X) marks finite, unsaturated pixels.

    The level is the frame's smooth level plus, in runs of 5 frames or more, the pixel's median excess
    over the frames where it is not near a spot (a static pattern, robust to emitters missed so far).
    The noise is estimated from the lower half of the excess, which emitters do not reach.
    """
    detected = np.zeros_like(valid)
    fill = np.nanmedian(np.where(valid, x, np.nan))
    for _ in range(2):
        keep = valid & ~spot_mask(detected, 2)
        level = smooth_level(x, keep)
        level = np.where(np.isnan(level), fill, level)
        for run in _runs(follows):
            if run.stop - run.start >= 5:  # static pattern: the pixel's median excess over its kept frames
                level[run] += _median_over_frames(x[run] - level[run], keep[run])
        excess, noise, detected = _detect(x - level, valid)
        detected &= valid
    black = checkerboard(x.shape[1:])
    by_colour = tuple(_detect(x - level, valid & colour)[2] for colour in (black, ~black))
    return Spots(detected=detected, excess=np.nan_to_num(excess), noise=noise, by_colour=by_colour)


def spot_mask(detected: np.ndarray, radius: int) -> np.ndarray:
    """Detections (T, Y, X) dilated, frame by frame, by a disk of ``radius`` pixels."""
    if radius < 1 or not detected.any():
        return detected.copy()
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disk = (yy**2 + xx**2 <= radius**2)[None]  # (1, 2r+1, 2r+1): no extent in time
    return ndimage.binary_dilation(detected, structure=disk)


def mask_radius(psf_sigma_px: float) -> int:
    """Dilation radius that covers a spot's light down to about 1 % of its peak."""
    sigma = psf_sigma_px if math.isfinite(psf_sigma_px) else DEFAULT_PSF_SIGMA_PX
    return max(4, int(math.ceil(3.0 * sigma)) + 1)


def _integrated_gaussian(p: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Gaussian (x0, y0, amplitude, sigma_x, sigma_y) integrated over the pixels of ``grid``, plus p[5]."""
    x0, y0, amplitude, sx, sy, background = p
    ex = 0.5 * (
        erf((grid - x0 + 0.5) / (math.sqrt(2.0) * sx)) - erf((grid - x0 - 0.5) / (math.sqrt(2.0) * sx))
    )
    ey = 0.5 * (
        erf((grid - y0 + 0.5) / (math.sqrt(2.0) * sy)) - erf((grid - y0 - 0.5) / (math.sqrt(2.0) * sy))
    )
    return amplitude * np.outer(ey, ex) + background


def _bright_isolated_peaks(spots: Spots, half: int) -> list[tuple[int, int, int]]:
    """(t, row, col) of isolated bright maxima whose ``2 half + 1`` box fits in the frame.

    At most ``MAX_PSF_SPOTS``, spread evenly over the candidates: not the brightest, which would
    favour two emitters seen as one.
    """
    peaks = []
    for t in range(spots.excess.shape[0]):
        if not np.isfinite(spots.noise[t]):
            continue
        frame = spots.excess[t]
        coords = peak_local_max(
            frame, min_distance=2, threshold_abs=DETECT_SIGMAS * spots.noise[t], exclude_border=False
        )
        h, w = frame.shape
        for r, c in coords:
            if frame[r, c] < BRIGHT_SIGMAS * spots.noise[t]:
                continue
            if r < half or c < half or r >= h - half or c >= w - half:
                continue
            distance = np.hypot(coords[:, 0] - r, coords[:, 1] - c)
            if np.any((distance > 0) & (distance <= 2 * half)):  # another emitter would bias the fit
                continue
            peaks.append((t, int(r), int(c)))
    if len(peaks) > MAX_PSF_SPOTS:
        peaks = [peaks[i] for i in np.linspace(0, len(peaks) - 1, MAX_PSF_SPOTS).round().astype(int)]
    return peaks


def _fit_sigmas(x: np.ndarray, peaks: list, half: int) -> np.ndarray:
    """sqrt(sigma_x sigma_y) of each spot whose fit is round (axes within ``MAX_ELONGATION``)."""
    grid = np.arange(-half, half + 1, dtype=np.float64)
    lower = [-2.0, -2.0, 0.0, 0.3, 0.3, -np.inf]
    upper = [2.0, 2.0, np.inf, float(half), float(half), np.inf]
    sigmas = []
    for t, r, c in peaks:
        box = x[t, r - half : r + half + 1, c - half : c + half + 1]
        if not np.all(np.isfinite(box)):
            continue
        background = float(np.median(np.concatenate([box[0], box[-1], box[:, 0], box[:, -1]])))
        amplitude = max(float(box.sum() - background * box.size), 1.0)
        s0 = min(DEFAULT_PSF_SIGMA_PX, 0.9 * half)
        fit = least_squares(
            lambda p, box=box: (_integrated_gaussian(p, grid) - box).ravel(),
            [0.0, 0.0, amplitude, s0, s0, background],
            bounds=(lower, upper),
            x_scale="jac",
        )
        sx, sy = fit.x[3:5]
        on_bound = min(sx, sy) < 0.31 or max(sx, sy) > 0.99 * half or np.any(np.abs(fit.x[:2]) > 1.99)
        if fit.success and not on_bound and max(sx, sy) <= MAX_ELONGATION * min(sx, sy):
            sigmas.append(math.sqrt(sx * sy))
    return np.asarray(sigmas)


def fit_psf(x: np.ndarray, spots: Spots) -> PsfFit:
    """Median Gaussian sigma (pixels) of isolated bright spots in x (T, Y, X) ADU."""
    half = 4
    sigmas = _fit_sigmas(x, _bright_isolated_peaks(spots, half), half)
    if len(sigmas) >= 3 and 3.0 * np.median(sigmas) + 1 > half:  # a wide PSF: refit in wider boxes
        half = min(10, int(math.ceil(3.0 * np.median(sigmas))) + 1)
        sigmas = _fit_sigmas(x, _bright_isolated_peaks(spots, half), half)
    if len(sigmas) == 0:
        return PsfFit(sigma_px=math.nan, spread_px=math.nan, n_spots=0)
    spread = float(_robust_std(sigmas)) if len(sigmas) > 1 else math.nan
    return PsfFit(sigma_px=float(np.median(sigmas)), spread_px=spread, n_spots=len(sigmas))


# --------------------------------------------------------------------------------------------------
# 4. Noise moments per bin of background level


def _winsorize(r: np.ndarray, bins: np.ndarray, n_bins: int) -> np.ndarray:
    """r clipped, per bin, to ``CLIP_SIGMAS`` robust standard deviations (1.4826 MAD) of its median.

    Camera noise almost never reaches that far; the light of an emitter missed by the detection does,
    and the third moment, cubed, would be ruled by a few such samples.
    """
    out = r.copy()
    for j in range(n_bins):
        sel = bins == j
        if sel.any():
            med = np.median(r[sel])
            limit = CLIP_SIGMAS * 1.4826 * np.median(np.abs(r[sel] - med))
            out[sel] = np.clip(r[sel], med - limit, med + limit)
    return out


def moment_sums(x, background, follows, read_var, n_bins=N_BINS) -> np.ndarray:
    """Per-(unit, level bin) sums (U, B, 10) of the residuals' powers (``residuals``).

    Bins are quantiles of the spatial level, which does not depend on the pixel's own noise. Units, the
    blocks the bootstrap resamples, are frames for 20 frames or more, else 4 x 4 blocks of each frame.
    """
    t, h, w = x.shape
    u, level, a, c, keep = residuals(x, background, follows)
    if keep.sum() < MIN_BACKGROUND_SAMPLES:
        raise InputError(
            f"only {int(keep.sum())} background pixels away from emitters (need {MIN_BACKGROUND_SAMPLES}): "
            "give more frames or sparser data"
        )
    edges = np.quantile(level[keep], np.linspace(0, 1, n_bins + 1)[1:-1])
    if t >= 20:
        unit, n_units = np.broadcast_to(np.arange(t)[:, None, None], x.shape), t
    else:
        rows, cols = np.arange(h) * 4 // h, np.arange(w) * 4 // w
        unit = np.arange(t)[:, None, None] * 16 + rows[None, :, None] * 4 + cols[None, None, :]
        n_units = 16 * t
    bins = np.searchsorted(edges, level[keep])
    idx = unit[keep] * n_bins + bins
    r = _winsorize(u[keep], bins, n_bins)
    r2 = r * r
    dark = read_var[keep] if read_var is not None else np.zeros_like(r)
    columns = [np.ones_like(r), x[keep], r, r2, r2 * r, r2 * r2, r2**3, a[keep], c[keep], dark]
    sums = np.stack([np.bincount(idx, weights=col, minlength=n_units * n_bins) for col in columns], axis=1)
    return sums.reshape(n_units, n_bins, len(columns))


def bin_stats(s: np.ndarray) -> dict[str, np.ndarray]:
    """Level L, variance V, third moment K and their standard errors per bin, from sums (B, 10).

    The standard errors scale as V / sqrt(n) and V^1.5 / sqrt(n), with the constants of the pooled
    sample: a bin's own fourth and sixth moments would weigh its estimates by their own outliers.
    """
    s = s[s[:, N] >= MIN_BIN_SAMPLES]
    n = s[:, N]
    m1, m2, m3 = (s[:, c] / n for c in (S1, S2, S3))
    k3 = (m3 - 3 * m1 * m2 + 2 * m1**3) * n / s[:, SC]
    v = (m2 - m1**2) * n / s[:, SA]
    p = s.sum(0) / s[:, N].sum()  # pooled raw moments
    spread_v = math.sqrt(max(p[S4] - p[S2] ** 2, 1e-24)) / p[S2]
    spread_k = math.sqrt(max(p[S6] - 6 * p[S4] * p[S2] + 9 * p[S2] ** 3 - p[S3] ** 2, 1e-36)) / p[S2] ** 1.5
    scale = np.maximum(v, 1e-12) / np.sqrt(n)
    return {
        "L": s[:, SX] / n,
        "V": v - s[:, SR] / n,
        "K": k3,
        "se_V": spread_v * scale,
        "se_K": spread_k * np.maximum(v, 1e-12) ** 1.5 / np.sqrt(n),
        "n": n,
    }


__all__ = [
    "as_array",
    "sample_window",
    "read_sample",
    "valid_pixels",
    "Spots",
    "PsfFit",
    "smooth_level",
    "residuals",
    "find_spots",
    "spot_mask",
    "mask_radius",
    "fit_psf",
]
