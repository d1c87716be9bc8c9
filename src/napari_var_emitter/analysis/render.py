"""Render localizations as a super-resolution image (no napari, no Qt).

Each localization is drawn as a 2-D Gaussian of its lateral uncertainty on a grid ``factor``
times finer than the camera pixels, normalised so that one localization adds 1 to the image's
sum (the image is a localization density per fine pixel); or counted in the fine pixel it falls
in (:func:`render_histogram`, fast for millions of rows). :func:`iter_render` draws either in steps
(a long render reports progress and can stop), optionally per time span, and
:func:`color_by_time` colours such a stack by time.

Geometry (docs/CONVENTIONS.md, section 1): fine pixel ``k`` along an axis has its centre at camera-pixel
coordinate ``(k + 0.5) / factor - 0.5``, so the image is a map with ``f = 1 / factor`` and goes
into napari with ``scale = s / factor``, ``translate = t + s * (1 / factor - 1) / 2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..io.localizations import Localizations

DEFAULT_SIGMA_PX = 0.1  # camera pixels (10 nm at 100 nm/px) for rows without an uncertainty
_CHUNK = 2048  # localizations per matrix product


def _gaussian_profiles(centres: np.ndarray, sigmas: np.ndarray, n: int, factor: int) -> np.ndarray:
    """Per-localization 1-D Gaussian weights on the fine grid, each row summing to ~1: (N, n)."""
    grid = (np.arange(n, dtype=np.float64) + 0.5) / factor - 0.5  # fine pixel centres, camera px
    # integrate the Gaussian over each fine pixel (exact for narrow sigmas) via the error function
    from scipy.special import erf

    half = 0.5 / factor
    scale = np.sqrt(2.0) * sigmas[:, None]
    lo = (grid[None, :] - half - centres[:, None]) / scale
    hi = (grid[None, :] + half - centres[:, None]) / scale
    return 0.5 * (erf(hi) - erf(lo))


def render_gaussians(
    locs: Localizations,
    frame_shape: tuple[int, int],
    factor: int = 8,
    *,
    min_sigma_px: float | None = None,
    default_sigma_px: float = DEFAULT_SIGMA_PX,
) -> np.ndarray:
    """Draw all localizations of ``locs`` (all frames summed) on a ``factor``-times finer grid.

    Parameters
    ----------
    locs : Localizations
        Positions in camera pixels; ``uncertainty`` (pixels) is each Gaussian's sigma; rows whose
        uncertainty is NaN or not positive use ``default_sigma_px``.
    frame_shape : (H, W)
        The camera frame size in pixels.
    factor : int
        Fine pixels per camera pixel along each axis.
    min_sigma_px : float, optional
        Smallest sigma drawn, in camera pixels; defaults to half a fine pixel so that every
        localization is visible.

    Returns
    -------
    image_HW : float32 array of shape ``(H * factor, W * factor)``.
    """
    factor, height, width = _grid(factor, frame_shape)
    image_HW = np.zeros((height * factor, width * factor), dtype=np.float64)
    keep = np.isfinite(locs.x) & np.isfinite(locs.y)
    if not keep.any():
        return image_HW.astype(np.float32)
    x = locs.x[keep]
    y = locs.y[keep]
    sigma = np.asarray(locs.uncertainty[keep], dtype=np.float64).copy()
    sigma[~np.isfinite(sigma) | (sigma <= 0)] = default_sigma_px
    floor = 0.5 / factor if min_sigma_px is None else float(min_sigma_px)
    sigma = np.maximum(sigma, floor)
    for start in range(0, len(x), _CHUNK):
        sl = slice(start, start + _CHUNK)
        gy_NH = _gaussian_profiles(y[sl], sigma[sl], height * factor, factor)
        gx_NW = _gaussian_profiles(x[sl], sigma[sl], width * factor, factor)
        image_HW += gy_NH.T @ gx_NW
    return image_HW.astype(np.float32)


def render_histogram(locs: Localizations, frame_shape: tuple[int, int], factor: int = 8) -> np.ndarray:
    """Count the localizations of ``locs`` per fine pixel, on the grid of :func:`render_gaussians`
    (fine pixel ``k`` covers camera-pixel coordinates ``[k / factor - 0.5, (k + 1) / factor - 0.5)``);
    rows outside the frame are left out. Fast for any number of rows: float32 ``(H * factor, W * factor)``."""
    factor, height, width = _grid(factor, frame_shape)
    shape = (height * factor, width * factor)
    row = np.floor((np.asarray(locs.y, dtype=np.float64) + 0.5) * factor)
    col = np.floor((np.asarray(locs.x, dtype=np.float64) + 0.5) * factor)
    keep = np.isfinite(row) & np.isfinite(col) & (row >= 0) & (col >= 0) & (row < shape[0]) & (col < shape[1])
    flat = row[keep].astype(np.int64) * shape[1] + col[keep].astype(np.int64)
    return np.bincount(flat, minlength=shape[0] * shape[1]).reshape(shape).astype(np.float32)


def _grid(factor, frame_shape) -> tuple[int, int, int]:
    if int(factor) != factor or factor < 1:
        raise InputError(f"render factor must be a whole number >= 1, got {factor}")
    height, width = (int(v) for v in frame_shape)
    if height < 1 or width < 1:
        raise InputError(f"frame shape must be positive, got {frame_shape}")
    return int(factor), height, width


@dataclass(frozen=True)
class RenderProgress:
    """Rows of the table drawn so far, of ``total``."""

    done: int
    total: int


RENDER_METHODS = ("histogram", "gaussians")
ROWS_PER_STEP = 50_000  # rows drawn between two progress events (where a render can be cancelled)


def iter_render(
    locs: Localizations,
    frame_shape: tuple[int, int],
    factor: int = 8,
    *,
    method: str = "histogram",
    time_bins: int = 0,
    rows_per_step: int = ROWS_PER_STEP,
):
    """Render ``locs`` as :func:`render_histogram` (``method="histogram"``) or
    :func:`render_gaussians` (``"gaussians"``) does, ``rows_per_step`` rows at a time, yielding a
    :class:`RenderProgress` after each step; returns the image ``(H * factor, W * factor)``.

    With ``time_bins`` > 0 the frames the table spans are cut into that many equal spans and each
    span is rendered on its own: the result is a stack ``(time_bins, H * factor, W * factor)``
    (see :func:`color_by_time`). The sum over the stack is the image without ``time_bins``.
    """
    if method not in RENDER_METHODS:
        raise InputError(f"render method must be one of {RENDER_METHODS}, got {method!r}")
    factor, height, width = _grid(factor, frame_shape)
    draw = render_histogram if method == "histogram" else render_gaussians
    n_bins = max(int(time_bins), 1)
    frame = np.asarray(locs.frame)
    if time_bins and len(frame):
        edges = np.linspace(frame.min(), frame.max() + 1, n_bins + 1)
        which = np.clip(np.searchsorted(edges, frame, side="right") - 1, 0, n_bins - 1)
    else:
        which = np.zeros(len(frame), dtype=np.int64)
    out = np.zeros((n_bins, height * factor, width * factor), dtype=np.float32)
    step = max(int(rows_per_step), 1)
    for start in range(0, len(locs), step):
        part = slice(start, start + step)
        chunk, bins = locs.subset(part), which[part]
        for k in np.unique(bins):
            out[k] += draw(chunk.subset(bins == k), (height, width), factor)
        yield RenderProgress(min(start + step, len(locs)), len(locs))
    return out if time_bins else out[0]


def color_by_time(stack: np.ndarray, colors: np.ndarray, percentile: float = 99.5) -> np.ndarray:
    """An RGB image (H, W, 3) in [0, 1] from a per-time-span stack (K, H, W) and one colour per
    span (K, 3): each pixel's hue is the mean of the span colours weighted by its density in each
    span, its brightness the total density, saturating at the ``percentile`` of the lit pixels."""
    stack = np.asarray(stack, dtype=np.float32)
    colors = np.asarray(colors, dtype=np.float32).reshape(len(stack), 3)
    total = stack.sum(axis=0)
    lit = total[total > 0]
    top = float(np.percentile(lit, percentile)) if len(lit) else 1.0
    hue = np.tensordot(stack, colors, axes=(0, 0)) / np.maximum(total, 1e-12)[..., None]
    return np.clip(hue * np.clip(total / max(top, 1e-12), 0, 1)[..., None], 0, 1).astype(np.float32)
