"""Noise moments that hold however dense the emitters are: a spatial high-pass of each frame.

A camera records the light blurred by the PSF, whose optical transfer function vanishes (a pupil, beyond
2 NA / wavelength; Heintzmann et al. 2016, "Calibrating photon counts from a single image") or nearly
(a Gaussian of a pixel or more) at the highest spatial frequencies the pixel grid holds. The separable
kernel ``h`` (in each axis the alternating binomial of order ``HIGHPASS_ORDER``, normalized to
sum(h^2) = 1) passes those alone, so ``r = h * x`` is camera noise whatever lights the pixels:
background, emitters on or off, blinking (the light that leaks through is below 2 % of the noise
variance for a Gaussian PSF of 1.2 px or a pupil's of NA 1.4 at 680 nm on 100 nm pixels, at up to
6 emitters per um^2). For pixels of expected values ``mu``
(ADU) with the noise of :mod:`.noise`, ``E[r^2] = s (sum h^2 mu - b) + sigma2``, and the local mean
``L = sum h^2 x`` is an unbiased estimate of ``sum h^2 mu``: (L, r^2) follow the photon-transfer line
of single pixels.

Samples are binned by a level that shares no noise with the kernel's support (one that did would
select on the noise): the least-squares prediction of ``L`` from the mean of a ring of pixels around
the support and, in runs of consecutive frames, from ``L`` at the same pixel in the neighbouring frames
(lit by the same emitters where they stay on for a few frames). Emitters spread these levels far above
the background: the slope of the line is the variance slope, and where it meets the read noise lies
the offset.

Camera noise correlated between neighbouring pixels (an EMCCD's charge transfer along its rows smears
each pixel's charge into the next: the real AF647 frames of tests/data show 0.2) changes ``E[r^2]``
by the factor ``1 + 2 A1 (rho_x + rho_y)``, A1 = -0.8 the kernel's autocorrelation at one pixel
(0.68 for rho_x = 0.2). The residual's own autocovariance at a few lags, which light does
not reach either, measures rho_x and rho_y (``noise_correlation``), and ``r`` is divided by the
square root of that factor: the variances are those of single pixels, as :mod:`.moments` measures.

What this does not measure: the third moment of ``r`` (diluted by sum(h^3), 0.02 here, it is ruled by
the little light that leaks through the kernel), hence the camera type; and the read noise apart from
the offset (only ``sigma2 - s b`` is seen). Neighbouring residuals share pixels, so ``r`` holds fewer
independent samples than the frame has pixels (``independence``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.special import comb

from . import moments

HIGHPASS_ORDER = 4  # a 5 x 5 kernel
RING_WIDTH = 1  # pixels just beyond the kernel's support whose mean predicts the level


def _kernel(order: int = HIGHPASS_ORDER) -> np.ndarray:
    """1D alternating binomial, normalized: its outer product with itself has sum(h^2) = 1."""
    k = np.array([(-1) ** i * comb(order, i) for i in range(order + 1)], dtype=np.float64)
    return k / np.sqrt((k**2).sum())


def _separable(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """x (T, Y, X) correlated with ``k`` along Y and X (zero outside the frame)."""
    out = ndimage.correlate1d(x, k, axis=-1, mode="constant")
    return ndimage.correlate1d(out, k, axis=-2, mode="constant")


def independence(order: int = HIGHPASS_ORDER) -> float:
    """Independent samples per residual: for Gaussian noise the mean of r^2 over many pixels varies as
    that of this fraction as many independent squares (1 / the sum of the squared autocorrelation of
    ``h`` over all lags)."""
    k = _kernel(order)
    rho = np.correlate(k, k, mode="full")
    return float(1.0 / (rho**2).sum() ** 2)


LAGS = ((0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (2, 0), (3, 0), (1, 1), (1, -1))  # (rows, columns)
MIN_CORRELATION = 0.06  # smaller ones change the variance by under 10 %, and are left uncorrected
CORRELATION_SIGMAS = 4.0  # nor corrected for unless this many standard errors from 0
JACKKNIFE_GROUPS = 10


def _autocorrelation(dy: int, dx: int) -> float:
    """The kernel's autocorrelation at a lag of dy rows and dx columns (1 at no lag)."""
    k = _kernel()
    a = np.correlate(k, k, mode="full")
    centre = len(k) - 1
    inside = abs(dy) <= centre and abs(dx) <= centre
    return float(a[centre + dy] * a[centre + dx]) if inside else 0.0


def _pairs(shape: tuple[int, int, int], dy: int, dx: int) -> tuple[tuple, tuple]:
    """Index expressions of (T, Y, X) arrays for the samples and those dy rows and dx columns on."""
    _, h, w = shape
    rows = slice(max(0, -dy), h - max(0, dy)), slice(max(0, dy), h - max(0, -dy))
    cols = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w - max(0, -dx))
    return (slice(None), rows[0], cols[0]), (slice(None), rows[1], cols[1])


def _correlation_from(covariances: np.ndarray) -> np.ndarray:
    """(rho_x, rho_y) from the autocovariances of r at ``LAGS``: for noise correlated at one pixel
    alone they are v (A(d) + rho_x (A(d - (0, 1)) + A(d + (0, 1))) + rho_y (A(d - (1, 0)) + A(d + (1,
    0)))), linear in (v, v rho_x, v rho_y)."""
    a = _autocorrelation
    design = [[a(dy, dx), a(dy, dx - 1) + a(dy, dx + 1), a(dy - 1, dx) + a(dy + 1, dx)] for dy, dx in LAGS]
    (v, vx, vy), *_ = np.linalg.lstsq(np.array(design), covariances, rcond=None)
    return np.array([vx / v, vy / v]) if v > 0 else np.zeros(2)


def noise_correlation(r: np.ndarray, usable: np.ndarray) -> tuple[float, float, float]:
    """Correlation of the noise of neighbouring pixels along rows (``rho_x``) and columns (``rho_y``),
    from the autocovariance of r (T, Y, X) over the pairs of ``usable`` samples, and the factor it makes
    in E[r^2]. Each enters the factor where it reaches ``MIN_CORRELATION`` and ``CORRELATION_SIGMAS``
    standard errors (jackknife over ``JACKKNIFE_GROUPS`` groups of bootstrap units): the autocovariance
    responds to rho at a quarter of the rate of the variance, so that without correlation the estimates
    scatter by about 0.02, and a little light leaks through the kernel.
    """
    unit, n_units = moments.units(r.shape)
    sums, counts = np.zeros((len(LAGS), n_units)), np.zeros((len(LAGS), n_units))
    for i, (dy, dx) in enumerate(LAGS):
        first, second = _pairs(r.shape, dy, dx)
        both = usable[first] & usable[second]
        where = unit[first][both]
        sums[i] = np.bincount(where, weights=(r[first] * r[second])[both], minlength=n_units)
        counts[i] = np.bincount(where, minlength=n_units)
    if not counts.sum(1).all():
        return 0.0, 0.0, 1.0
    rho = _correlation_from(sums.sum(1) / counts.sum(1))
    groups = np.arange(n_units) * min(JACKKNIFE_GROUPS, n_units) // n_units
    g = groups.max() + 1
    with np.errstate(invalid="ignore", divide="ignore"):
        leave_out = np.array(
            [_correlation_from(sums[:, groups != j].sum(1) / counts[:, groups != j].sum(1)) for j in range(g)]
        )
    se = np.sqrt((g - 1) / g * ((leave_out - leave_out.mean(0)) ** 2).sum(0)) if g > 1 else np.full(2, np.inf)
    used = np.where((np.abs(rho) >= MIN_CORRELATION) & (np.abs(rho) > CORRELATION_SIGMAS * se), rho, 0.0)
    factor = 1.0 + 2.0 * _autocorrelation(0, 1) * used[0] + 2.0 * _autocorrelation(1, 0) * used[1]
    return float(rho[0]), float(rho[1]), float(factor)


def _box_sum(a: np.ndarray, half: int) -> np.ndarray:
    """Sum over the (2 half + 1)^2 box around each pixel of a (T, Y, X), zero outside the frame."""
    size = 2 * half + 1
    return ndimage.uniform_filter(a, (0, size, size), mode="constant", cval=0.0) * size**2


def _inside(valid: np.ndarray, half: int) -> np.ndarray:
    """Samples (T, Y, X) whose support, ``half`` pixels around, lies in the frame and is all valid."""
    usable = _box_sum((~valid).astype(np.float64), half) < 0.5
    usable[:, :half] = usable[:, -half:] = False
    usable[:, :, :half] = usable[:, :, -half:] = False
    return usable


def _ring_mean(x: np.ndarray, valid: np.ndarray, half: int) -> np.ndarray:
    """Mean (T, Y, X) of the valid pixels ``half + 1 .. half + RING_WIDTH`` away (Chebyshev distance);
    NaN where fewer than half of them are valid."""
    xv, w = np.where(valid, x, 0.0), valid.astype(np.float64)
    total = _box_sum(xv, half + RING_WIDTH) - _box_sum(xv, half)
    count = _box_sum(w, half + RING_WIDTH) - _box_sum(w, half)
    full = (2 * (half + RING_WIDTH) + 1) ** 2 - (2 * half + 1) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0.5 * full, total / count, np.nan)


def _neighbour_frames(level: np.ndarray, usable: np.ndarray, follows: np.ndarray) -> np.ndarray:
    """Mean (T, Y, X) of ``level`` in the frames just before and after (where they follow on); NaN where
    neither is there."""
    total, count = np.zeros_like(level), np.zeros_like(level)
    linked = follows[1:, None, None]  # frame i + 1 follows frame i
    for target, source in ((np.s_[1:], np.s_[:-1]), (np.s_[:-1], np.s_[1:])):
        ok = usable[source] & linked
        total[target] += np.where(ok, level[source], 0.0)
        count[target] += ok
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def _predicted(level: np.ndarray, usable: np.ndarray, predictors: list[np.ndarray]) -> np.ndarray:
    """Least-squares prediction (T, Y, X) of ``level`` from [1, predictors...] where all are finite, the
    coefficients fitted over those of the ``usable`` samples; NaN elsewhere. Fitted over all samples at
    once, the coefficients hardly depend on any one sample's noise."""
    have = usable & np.all([np.isfinite(p) for p in predictors], axis=0)
    out = np.full(level.shape, np.nan)
    if have.sum() <= len(predictors) + 1:
        return out
    columns = [np.ones(int(have.sum()))] + [p[have] for p in predictors]
    gram = np.array([[a @ b for b in columns] for a in columns])
    coef = np.linalg.lstsq(gram, np.array([a @ level[have] for a in columns]), rcond=None)[0]
    out[have] = sum(c * a for c, a in zip(coef, columns, strict=True))
    return out


def binning_level(x, valid, level, usable, follows, half: int) -> np.ndarray:
    """The level that bins the samples: predicted from the ring and the neighbouring frames where a
    pixel has both, from the ring alone where it has no neighbouring frame."""
    ring = _ring_mean(x, valid, half)
    near = _neighbour_frames(level, usable, follows)
    both = _predicted(level, usable, [ring, near])
    return np.where(np.isfinite(both), both, _predicted(level, usable, [ring]))


def highpass_sums(
    x, valid, follows, read_var, n_bins=moments.N_BINS
) -> tuple[np.ndarray | None, tuple[float, float, float]]:
    """Per-(unit, level bin) sums (U, B, 11) of the high-pass residual's powers, in the layout of
    ``moments.moment_sums`` (None where fewer than ``moments.MIN_BACKGROUND_SAMPLES`` samples), and
    ``noise_correlation``'s (rho_x, rho_y, factor) that they are corrected by.

    ``x`` (T, Y, X) ADU, ``valid`` its usable pixels, ``follows`` (T,) True where a frame is the next
    after the previous one, ``read_var`` (T, Y, X) the dark frames' variance or None.
    """
    k = _kernel()
    half = HIGHPASS_ORDER // 2
    usable = _inside(valid, half)
    xv = np.where(valid, x, 0.0)
    r, level = _separable(xv, k), _separable(xv, k**2)
    z = binning_level(x, valid, level, usable, follows, half)
    keep = usable & np.isfinite(z)
    if keep.sum() < moments.MIN_BACKGROUND_SAMPLES:
        return None, (0.0, 0.0, 1.0)
    correlation = noise_correlation(np.where(usable, r, 0.0), usable)
    bins = moments.level_bins(z[keep], n_bins)
    factor = max(correlation[2], 0.1)
    u = moments.winsorize(r[keep], bins, n_bins) / np.sqrt(factor)
    u2 = u * u
    dark = _separable(read_var, k**2)[keep] / factor if read_var is not None else np.zeros_like(u)
    ones = np.ones_like(u)
    h3 = float((k**3).sum() ** 2)  # the third moment of r: k s^2 (sum h^3 mu - b sum h^3), unused
    columns = [ones, level[keep], u, u2, u2 * u, u2 * u2, u2**3, ones, h3 * ones, dark, ones * independence()]
    return moments.unit_sums(columns, keep, bins, n_bins), correlation


__all__ = ["HIGHPASS_ORDER", "highpass_sums", "independence", "binning_level", "noise_correlation"]
