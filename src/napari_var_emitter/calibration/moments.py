"""Noise moments of the pixels away from spots, for the camera calibration (:mod:`.noise`).

Residuals of the background pixels that do not depend on their expected values (``residuals``), and
per bin of background level their variance and third central moment (``bin_stats``), summed per
bootstrap unit (``moment_sums``). :mod:`.dense` makes sums of the same layout from a spatial
high-pass of whole frames.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError
from .spots import LEVEL_SIGMA_PX, TRUNCATE, blur, checkerboard, kernel_sums, runs, smooth_level

MIN_OTHER_FRAMES = 2  # for the temporal leave-one-out mean of a pixel
# columns of the per-(unit, bin) sums of residuals u: count, level, u^1..4, u^6, V and K factors, dark
# variance, independent samples (fewer than the count where neighbouring residuals share noise)
N, SX, S1, S2, S3, S4, S6, SA, SC, SR, NI = range(11)
N_BINS = 8
MIN_BIN_SAMPLES = 200
MIN_BACKGROUND_SAMPLES = 5_000
CLIP_SIGMAS = 8.0  # residuals are winsorized this far from their median (robust deviations)


def variance_factor(weight: np.ndarray, sigma: float = LEVEL_SIGMA_PX) -> np.ndarray:
    """``1 + sum(w_i^2) / sum(w_i)^2`` (T, Y, X) of ``smooth_level(..., leave_out=True)``'s weights.

    The variance of ``x - level`` exceeds that of x by this factor for uncorrelated noise of equal
    variance (1 + 1 / the effective number of neighbours).
    """
    w = weight.astype(np.float64)
    centre, square_ratio = kernel_sums(sigma)
    den = blur(w, sigma) - centre * w
    squares = square_ratio * blur(w, sigma / math.sqrt(2.0), TRUNCATE * math.sqrt(2.0)) - centre**2 * w
    ok = den > 1e-3
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1.0 + np.where(ok, squares / np.where(ok, den, 1.0) ** 2, np.nan)


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
    for run in runs(follows):
        w = keep[run].astype(np.float64)
        others = w.sum(0) - w  # (t, Y, X): kept frames other than t
        good = keep[run] & (others >= MIN_OTHER_FRAMES)
        temporal[run] = good
        m[run] = np.where(good, others, np.inf)
    if temporal.sum() >= 0.5 * keep.sum():  # enough frames: only the pattern-free deviations
        dev = np.zeros_like(x)
        for run in runs(follows):
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


def winsorize(r: np.ndarray, bins: np.ndarray, n_bins: int) -> np.ndarray:
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
    """Per-(unit, level bin) sums (U, B, 11) of the residuals' powers (``residuals``, ``unit_sums``).

    Bins are quantiles of the spatial level, which does not depend on the pixel's own noise.
    """
    u, level, a, c, keep = residuals(x, background, follows)
    if keep.sum() < MIN_BACKGROUND_SAMPLES:
        raise InputError(
            f"only {int(keep.sum())} background pixels away from emitters (need {MIN_BACKGROUND_SAMPLES}): "
            "give more frames or sparser data"
        )
    bins = level_bins(level[keep], n_bins)
    r = winsorize(u[keep], bins, n_bins)
    r2 = r * r
    dark = read_var[keep] if read_var is not None else np.zeros_like(r)
    ones = np.ones_like(r)
    columns = [ones, x[keep], r, r2, r2 * r, r2 * r2, r2**3, a[keep], c[keep], dark, ones]
    return unit_sums(columns, keep, bins, n_bins)


def level_bins(level: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin (0 .. n_bins - 1) of each level: quantiles, so that the bins hold as many samples."""
    edges = np.quantile(level, np.linspace(0, 1, n_bins + 1)[1:-1])
    return np.searchsorted(edges, level)


def units(shape: tuple[int, int, int]) -> tuple[np.ndarray, int]:
    """The unit (T, Y, X) of each sample and the number of units: the blocks the bootstrap resamples,
    frames for 20 frames or more, else 4 x 4 blocks of each frame."""
    t, h, w = shape
    if t >= 20:
        return np.broadcast_to(np.arange(t)[:, None, None], shape), t
    rows, cols = np.arange(h) * 4 // h, np.arange(w) * 4 // w
    return np.arange(t)[:, None, None] * 16 + rows[None, :, None] * 4 + cols[None, None, :], 16 * t


def unit_sums(columns: list[np.ndarray], keep: np.ndarray, bins: np.ndarray, n_bins: int) -> np.ndarray:
    """Sums (U, B, C) of the columns (C of the samples ``keep`` of (T, Y, X)) per unit and bin."""
    unit, n_units = units(keep.shape)
    idx = unit[keep] * n_bins + bins
    sums = np.stack([np.bincount(idx, weights=col, minlength=n_units * n_bins) for col in columns], axis=1)
    return sums.reshape(n_units, n_bins, len(columns))


def bin_stats(s: np.ndarray) -> dict[str, np.ndarray]:
    """Level L, variance V, third moment K and their standard errors per bin, from sums (B, 11).

    The standard errors scale as V / sqrt(n) and V^1.5 / sqrt(n), n the independent samples, with the
    constants of the pooled sample: a bin's own fourth and sixth moments would weigh its estimates by
    their own outliers.
    """
    s = s[s[:, N] >= MIN_BIN_SAMPLES]
    n = s[:, N]
    m1, m2, m3 = (s[:, c] / n for c in (S1, S2, S3))
    k3 = (m3 - 3 * m1 * m2 + 2 * m1**3) * n / s[:, SC]
    v = (m2 - m1**2) * n / s[:, SA]
    p = s.sum(0) / s[:, N].sum()  # pooled raw moments
    spread_v = math.sqrt(max(p[S4] - p[S2] ** 2, 1e-24)) / p[S2]
    spread_k = math.sqrt(max(p[S6] - 6 * p[S4] * p[S2] + 9 * p[S2] ** 3 - p[S3] ** 2, 1e-36)) / p[S2] ** 1.5
    independent = s[:, NI]
    return {
        "L": s[:, SX] / n,
        "V": v - s[:, SR] / n,
        "K": k3,
        "se_V": spread_v * np.maximum(v, 1e-12) / np.sqrt(independent),
        "se_K": spread_k * np.maximum(v, 1e-12) ** 1.5 / np.sqrt(independent),
        "n": n,
    }
