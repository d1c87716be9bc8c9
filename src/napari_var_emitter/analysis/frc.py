"""Image resolution of a localization table by Fourier ring correlation (FRC).

Nieuwenhuizen et al. 2013, Nat. Methods 10:557. The localizations are split into two halves by
blocks of consecutive frames, each block going to one half at random (a molecule that blinks
several times within a block lands in one half only, so its repeated localizations do not
correlate the halves). Both halves are rendered as 2-D histograms on the same fine grid, tapered
by a Tukey window, and their Fourier transforms are correlated over rings of equal spatial
frequency q:

    FRC(q) = Re sum_ring F1 conj(F2) / sqrt(sum_ring |F1|^2 * sum_ring |F2|^2)

The curve is smoothed over rings and the resolution is 1 / q at its first crossing of the
threshold 1/7. Positions are pixels (``docs/CONVENTIONS.md`` section 1), converted to nm with
``x_nm = (x + 0.5) * pixel_size_nm``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import fft, ndimage
from scipy.signal.windows import tukey

from ..errors import InputError
from ..io.localizations import Localizations, check_pixel_size

FRC_THRESHOLD = 1.0 / 7.0
DEFAULT_RENDER_NM = 5.0
MAX_RENDER_SIDE = 4096  # render pixels per side; a larger field gets a coarser default grid
MIN_LOCS_PER_HALF = 100
TUKEY_ALPHA = 0.25  # fraction of each side that the window tapers
SMOOTH_FRACTION = 0.01  # Gaussian smoothing of the curve, as a fraction of the number of rings


@dataclass
class FRCResult:
    """An FRC curve and the resolution it gives.

    ``frequencies`` (1/nm) are the ring frequencies ``k / (side * render_nm)``, k = 1 .. side/2;
    ``curve`` the smoothed FRC at them, ``raw_curve`` before smoothing. ``resolution_nm`` is NaN
    when the curve never crosses ``threshold`` (finer than two render pixels: use a smaller
    ``render_nm``) or starts below it (the halves do not correlate at all).
    """

    resolution_nm: float
    frequencies: np.ndarray
    curve: np.ndarray
    raw_curve: np.ndarray
    threshold: float
    render_nm: float
    block_frames: int
    n_locs_halves: tuple[int, int]

    def to_dict(self) -> dict:
        """A JSON-ready summary: the resolution (None when not found) and the curve."""
        resolution = self.resolution_nm if math.isfinite(self.resolution_nm) else None
        return {
            "resolution_nm": resolution,
            "threshold": self.threshold,
            "render_nm": self.render_nm,
            "block_frames": self.block_frames,
            "n_locs_halves": list(self.n_locs_halves),
            "frequencies_per_nm": self.frequencies.tolist(),
            "frc": self.curve.tolist(),
        }


def split_halves(frame: np.ndarray, block_frames: int, seed: int) -> np.ndarray:
    """Boolean mask of the first half: blocks of ``block_frames`` consecutive frames (from the
    first frame) assigned at random, half of the blocks to each side."""
    block = (frame - frame.min()) // block_frames
    n_blocks = int(block.max()) + 1
    chosen = np.random.default_rng(seed).permutation(n_blocks)[: n_blocks // 2]
    return np.isin(block, chosen)


def ring_correlation(image_a: np.ndarray, image_b: np.ndarray) -> np.ndarray:
    """Raw FRC of two square images of side n, at rings k = 1 .. n // 2 (frequency k / n)."""
    side = image_a.shape[0]
    spectrum_a, spectrum_b = fft.rfft2(image_a), fft.rfft2(image_b)
    ky = fft.fftfreq(side, 1.0 / side)
    kx = fft.rfftfreq(side, 1.0 / side)
    ring = np.rint(np.hypot(ky[:, None], kx[None, :])).astype(np.int64).ravel()
    # the half-plane spectrum: every column but the first (and the last for even n) stands for two
    weight = np.full(kx.shape, 2.0)
    weight[0] = 1.0
    if side % 2 == 0:
        weight[-1] = 1.0
    weight = np.broadcast_to(weight, spectrum_a.shape).ravel()
    n_rings = side // 2 + 1

    def ring_sum(values: np.ndarray) -> np.ndarray:
        return np.bincount(ring, weights=weight * values.ravel(), minlength=n_rings)[1:n_rings]

    cross = ring_sum((spectrum_a * spectrum_b.conj()).real)
    power = ring_sum(np.abs(spectrum_a) ** 2) * ring_sum(np.abs(spectrum_b) ** 2)
    return np.divide(cross, np.sqrt(power), out=np.zeros_like(cross), where=power > 0)


def threshold_crossing(frequencies: np.ndarray, curve: np.ndarray, threshold: float) -> float:
    """The frequency at which ``curve`` first drops below ``threshold`` (linear between rings);
    NaN if it starts below it or never drops below it."""
    below = np.flatnonzero(curve < threshold)
    if not len(below) or below[0] == 0:
        return math.nan
    k = below[0]
    fraction = (curve[k - 1] - threshold) / (curve[k - 1] - curve[k])
    return float(frequencies[k - 1] + fraction * (frequencies[k] - frequencies[k - 1]))


def frc(
    locs: Localizations,
    *,
    pixel_size_nm: float,
    render_nm: float | None = None,
    block_frames: int | None = None,
    seed: int = 0,
    threshold: float = FRC_THRESHOLD,
) -> FRCResult:
    """The FRC resolution of ``locs`` (see the module docstring).

    ``render_nm``: the histogram pixel, by default 5 nm (coarser for a field wider than 4096 such
    pixels). ``block_frames``: frames per block of the split, by default 1/40 of the frames the
    table spans, from 1 to 500. ``seed`` chooses which blocks form each half.

    Raises :class:`InputError` for a table too small or too short to split into two halves.
    """
    px = check_pixel_size(pixel_size_nm)
    if not isinstance(locs, Localizations):
        raise InputError(f"expected a Localizations table, got {type(locs).__name__}")
    keep = np.isfinite(locs.x) & np.isfinite(locs.y)
    frame = locs.frame[keep]
    x_nm, y_nm = (locs.x[keep] + 0.5) * px, (locs.y[keep] + 0.5) * px
    if len(frame) < 2 * MIN_LOCS_PER_HALF:
        raise InputError(
            f"{len(frame)} localizations are too few for FRC: each half needs at least {MIN_LOCS_PER_HALF}"
        )
    span = int(frame.max() - frame.min()) + 1
    block_frames = int(np.clip(span // 40, 1, 500)) if block_frames is None else int(block_frames)
    if block_frames < 1 or span < 2 * block_frames:
        raise InputError(
            f"the localizations span {span} frames: too few for two blocks of {block_frames} frames, "
            "and FRC needs two independent halves"
        )
    first = split_halves(frame, block_frames, seed)
    n_halves = (int(first.sum()), int((~first).sum()))
    if min(n_halves) < MIN_LOCS_PER_HALF:
        raise InputError(
            f"the halves hold {n_halves[0]} and {n_halves[1]} localizations: too few for FRC "
            f"(at least {MIN_LOCS_PER_HALF} each); use smaller blocks of frames"
        )

    extent_nm = max(np.ptp(x_nm), np.ptp(y_nm))
    if render_nm is None:
        render_nm = max(DEFAULT_RENDER_NM, extent_nm / MAX_RENDER_SIDE)
    if not render_nm > 0:
        raise InputError(f"render_nm must be > 0, got {render_nm}")
    side = fft.next_fast_len(int(extent_nm / render_nm) + 2, real=True)
    col = ((x_nm - x_nm.min()) / render_nm).astype(np.int64) + 1
    row = ((y_nm - y_nm.min()) / render_nm).astype(np.int64) + 1
    window = tukey(side, TUKEY_ALPHA).astype(np.float32)
    window_2d = window[:, None] * window[None, :]
    images = []
    for half in (first, ~first):
        counts = np.bincount(row[half] * side + col[half], minlength=side * side)
        images.append(counts.reshape(side, side).astype(np.float32) * window_2d)
    raw = ring_correlation(*images)
    frequencies = np.arange(1, len(raw) + 1) / (side * render_nm)
    curve = ndimage.gaussian_filter1d(raw, max(1.0, SMOOTH_FRACTION * len(raw)), mode="nearest")
    crossing = threshold_crossing(frequencies, curve, threshold)
    return FRCResult(
        resolution_nm=1.0 / crossing if math.isfinite(crossing) else math.nan,
        frequencies=frequencies,
        curve=curve,
        raw_curve=raw,
        threshold=float(threshold),
        render_nm=float(render_nm),
        block_frames=block_frames,
        n_locs_halves=n_halves,
    )
