"""Stage drift of a localization table: estimate it, remove it, save it.

- :func:`estimate_drift`: redundant cross-correlation (RCC; Wang et al. 2014, Opt. Express
  22:15982). Time segments of the movie are rendered as smoothed 2-D histograms and every pair
  (i < j) is cross-correlated; the sub-pixel peak within the largest expected drift is their
  shift. The N(N-1)/2 shifts over-determine the N segment positions, found by a robust least-squares
  solve repeated after rejecting the pairs that disagree with it; a smoothing spline through the
  segment centres interpolates over the frames.
- :func:`estimate_drift_fiducials`: emitters present in most frames (fiducial beads) are tracked
  through the movie and their traces averaged.

Both give a :class:`Drift` per frame in pixels (``docs/CONVENTIONS.md`` section 1): the apparent
displacement of the sample (observed = true + drift), zero at the start; :meth:`Drift.apply`
subtracts it.
"""

from __future__ import annotations

import csv
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import fft, ndimage, optimize, sparse
from scipy.interpolate import CubicSpline, make_smoothing_spline
from scipy.spatial import cKDTree
from skimage.registration import phase_cross_correlation

from ..errors import CsvFormatError, InputError
from ..io.atomic import atomic_path
from ..io.localizations import Localizations, check_pixel_size

MIN_SEGMENTS = 3  # fewer segments give no redundancy to reject a wrong correlation with
MAX_DEFAULT_SEGMENTS = 20
MAX_FIDUCIAL_KNOTS = 200  # the fiducial trace is averaged over at most this many spans of frames
CSV_HEADER = ("frame", "dx [nm]", "dy [nm]")


@dataclass
class Drift:
    """Drift per frame, in pixels: ``dx[t]``, ``dy[t]`` for frame ``t`` (0-based, ``frames``).

    ``segment_frames`` (mean frame of each RCC time segment) and ``segment_dx``/``segment_dy``
    (pixels; NaN for a segment no reliable correlation reached) are what the spline went
    through; ``pairs_used`` of ``pairs_total`` segment pairs were kept. ``n_fiducials`` is the
    number of fiducials averaged (fiducial method).
    """

    dx: np.ndarray
    dy: np.ndarray
    method: str
    segment_frames: np.ndarray = field(default_factory=lambda: np.zeros(0))
    segment_dx: np.ndarray = field(default_factory=lambda: np.zeros(0))
    segment_dy: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pairs_used: int = 0
    pairs_total: int = 0
    n_fiducials: int = 0

    @property
    def frames(self) -> np.ndarray:
        return np.arange(len(self.dx))

    def at(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The drift (dx, dy) in pixels at each frame; frames past either end take the end's value."""
        t = np.clip(np.asarray(frame, dtype=np.int64), 0, len(self.dx) - 1)
        return self.dx[t], self.dy[t]

    def apply(self, locs: Localizations) -> Localizations:
        """A copy of ``locs`` with the drift at each row's frame subtracted from x and y.

        Every row is kept, in order; every other column is copied unchanged.
        """
        dx, dy = self.at(locs.frame)
        columns = {name: getattr(locs, name).copy() for name in Localizations.column_names()}
        columns["x"] = locs.x - dx
        columns["y"] = locs.y - dy
        return Localizations(**columns)

    def to_csv(self, path: str | Path, pixel_size_nm: float) -> Path:
        """Write ``frame,dx [nm],dy [nm]`` (frames 1-based like the localization table), atomically."""
        px = check_pixel_size(pixel_size_nm)
        with atomic_path(Path(path)) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(",".join(CSV_HEADER) + "\n")
            for t, dx, dy in zip(self.frames, self.dx * px, self.dy * px, strict=True):
                handle.write(f"{t + 1},{float(dx)!r},{float(dy)!r}\n")
        return Path(path)

    @classmethod
    def read_csv(cls, path: str | Path, pixel_size_nm: float) -> Drift:
        """Read a trace written by :meth:`to_csv` (frames 1, 2, ... in order)."""
        px = check_pixel_size(pixel_size_nm)
        try:
            with open(path, encoding="utf-8-sig", newline="") as handle:
                rows = list(csv.reader(handle))
        except (OSError, UnicodeDecodeError) as exc:
            raise CsvFormatError(f"cannot read drift trace {path}: {exc}") from None
        if not rows or tuple(h.strip().strip('"') for h in rows[0]) != CSV_HEADER:
            raise CsvFormatError(f"{path} is not a drift trace: its header must be {','.join(CSV_HEADER)}")
        try:
            table = np.array([[float(v) for v in row] for row in rows[1:] if row]).reshape(-1, 3)
        except ValueError as exc:
            raise CsvFormatError(f"{path}: not a drift trace of three numbers per row ({exc})") from None
        if not len(table) or np.any(table[:, 0] != np.arange(1, len(table) + 1)):
            raise CsvFormatError(f"{path}: frames must be 1, 2, 3, ... in order")
        if not np.all(np.isfinite(table[:, 1:])):
            raise CsvFormatError(f"{path}: the drift holds NaN or infinite values")
        return cls(dx=table[:, 1] / px, dy=table[:, 2] / px, method="file")


def _finite_rows(locs: Localizations, n_frames: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    if not isinstance(locs, Localizations):
        raise InputError(f"expected a Localizations table, got {type(locs).__name__}")
    keep = np.isfinite(locs.x) & np.isfinite(locs.y) & (locs.frame >= 0)
    frame, x, y = locs.frame[keep], locs.x[keep], locs.y[keep]
    if not len(frame):
        raise InputError("the table holds no localization with a finite position: no drift to estimate")
    total = int(frame.max()) + 1 if n_frames is None else int(n_frames)
    if total < frame.max() + 1:
        raise InputError(f"n_frames={n_frames} but the table has frame {frame.max()} (0-based)")
    return frame, x, y, total


def _interpolate(centres: np.ndarray, values: np.ndarray, n_frames: int) -> np.ndarray:
    """A smooth curve through (centres, values) at frames 0..n_frames-1, constant past the ends.

    A smoothing spline (its smoothness chosen by generalised cross-validation) for 5 or more
    points, an interpolating cubic spline for 3 or 4, a straight line for 2.
    """
    t = np.clip(np.arange(n_frames, dtype=np.float64), centres[0], centres[-1])
    if len(centres) >= 5:
        return make_smoothing_spline(centres, values)(t)
    if len(centres) >= 3:
        return CubicSpline(centres, values, bc_type="natural")(t)
    return np.interp(t, centres, values)


def _segment_images(x_nm, y_nm, segment, n_segments, render_nm, pad_nm, blur_px) -> np.ndarray:
    """2-D histograms of each segment's localizations, Gaussian-smoothed: (N, H, W) float32.

    The field is the localizations' bounding box plus ``pad_nm`` of empty margin on every side, so
    that a circular correlation equals the linear one for shifts up to ``pad_nm``.
    """
    x0, y0 = x_nm.min() - pad_nm, y_nm.min() - pad_nm
    shape = tuple(
        fft.next_fast_len(int(np.ceil((v.max() - v.min() + 2 * pad_nm) / render_nm)) + 1)
        for v in (y_nm, x_nm)
    )
    col = ((x_nm - x0) / render_nm).astype(np.int64)
    row = ((y_nm - y0) / render_nm).astype(np.int64)
    flat = (segment * shape[0] + row) * shape[1] + col
    counts = np.bincount(flat, minlength=n_segments * shape[0] * shape[1])
    images = counts.reshape(n_segments, *shape).astype(np.float32)
    for image in images:
        ndimage.gaussian_filter(image, blur_px, output=image)
    return images


def _pair_shift(F_ref, F_mov, window_index, signed_yx, upsample) -> np.ndarray:
    """Sub-pixel (dy, dx) to add to the moving image to register it on the reference, in render
    pixels: the correlation peak within the window, refined by upsampled cross-correlation."""
    correlation = fft.ifft2(F_ref * F_mov.conj()).real.ravel()
    peak_yx = signed_yx[:, window_index[np.argmax(correlation[window_index])]]
    # the moving image shifted by the in-window peak: its residual shift is under a pixel
    moved = ndimage.fourier_shift(F_mov, peak_yx)
    residual_yx, _, _ = phase_cross_correlation(
        F_ref, moved, space="fourier", upsample_factor=upsample, normalization=None
    )
    if np.any(np.abs(residual_yx) > 1):  # the global maximum lies outside the window
        residual_yx = np.zeros(2)
    return peak_yx + residual_yx


def _largest_component(i, j, n_segments) -> np.ndarray:
    graph = sparse.coo_matrix((np.ones(len(i)), (i, j)), shape=(n_segments, n_segments))
    _, labels = sparse.csgraph.connected_components(graph, directed=False)
    largest = np.argmax(np.bincount(labels))
    return np.flatnonzero(labels == largest)


def _solve_shifts(i, j, d_nm, members, n_segments, f_scale_nm) -> np.ndarray:
    """Segment positions (N, 2) nm from pair shifts ``d_nm[k] = p[j[k]] - p[i[k]]``, robustly.

    Only ``members`` (connected by the pairs) are solved; the first is the reference (0), the
    others NaN. Soft-L1 loss: a pair far off the consensus pulls on it only linearly.
    """
    rows = np.arange(len(i))
    design = np.zeros((len(i), n_segments))
    design[rows, j] += 1.0
    design[rows, i] -= 1.0
    design = design[:, members[1:]]  # the reference is 0; pairs outside members are not given
    start = np.linalg.lstsq(design, d_nm, rcond=None)[0]
    fit = optimize.least_squares(
        lambda p: (design @ p.reshape(-1, 2) - d_nm).ravel(),
        start.ravel(),
        loss="soft_l1",
        f_scale=f_scale_nm,
    )
    positions = np.full((n_segments, 2), np.nan)
    positions[members[0]] = 0.0
    positions[members[1:]] = fit.x.reshape(-1, 2)
    return positions


def solve_rcc(
    pairs: np.ndarray, d_nm: np.ndarray, n_segments: int, max_residual_nm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Segment positions (n_segments, 2) from pair shifts ``d_nm[k] = p[pairs[k, 1]] - p[pairs[k, 0]]``.

    A robust solve, then the pairs whose residual exceeds ``max_residual_nm`` are rejected and
    the rest solved again, until none is rejected. Segments that the kept pairs no longer connect
    to the largest group are NaN; the first segment of that group is the origin. Returns the
    positions and the mask of pairs used.
    """
    i, j = pairs[:, 0], pairs[:, 1]
    keep = np.all(np.isfinite(d_nm), axis=1)
    while True:
        members = _largest_component(i[keep], j[keep], n_segments)
        use = keep & np.isin(i, members) & np.isin(j, members)
        if len(members) < 2:
            return np.where(np.isin(np.arange(n_segments), members)[:, None], 0.0, np.nan), use
        positions = _solve_shifts(i[use], j[use], d_nm[use], members, n_segments, max_residual_nm / 4)
        residual = np.hypot(*(positions[j] - positions[i] - d_nm).T)
        rejected = use & (residual > max_residual_nm)
        if not rejected.any():
            return positions, use
        keep &= ~rejected


def estimate_drift(
    locs: Localizations,
    *,
    pixel_size_nm: float,
    segments: int | None = None,
    render_nm: float | None = None,
    max_drift_nm: float = 1000.0,
    max_residual_nm: float | None = None,
    min_locs_per_segment: int = 2000,
    upsample: int = 20,
    n_frames: int | None = None,
) -> Drift:
    """Drift by redundant cross-correlation of time segments (see the module docstring).

    ``segments``: number of time segments (equal spans of frames); by default one per
    ``min_locs_per_segment`` localizations, from 3 to 20. ``render_nm``: histogram pixel (default
    20 nm), smoothed by a Gaussian of one pixel. ``max_drift_nm``: the largest shift searched
    between two segments. ``max_residual_nm``: a pair whose shift disagrees with the solution by
    more is rejected and the system solved again (default: the larger of 20 nm and one render
    pixel). ``n_frames``: the movie's length (default: the last frame with a localization + 1).

    Raises :class:`InputError` for a table too small or too short to split into segments.
    """
    px = check_pixel_size(pixel_size_nm)
    frame, x, y, total_frames = _finite_rows(locs, n_frames)
    render_nm = 20.0 if render_nm is None else float(render_nm)
    if not render_nm > 0 or not max_drift_nm > 0:
        raise InputError(f"render_nm and max_drift_nm must be > 0, got {render_nm} and {max_drift_nm}")
    max_residual_nm = max(20.0, render_nm) if max_residual_nm is None else float(max_residual_nm)
    if segments is None and len(frame) < MIN_SEGMENTS * min_locs_per_segment:
        raise InputError(
            f"{len(frame)} localizations are too few to measure drift by cross-correlation: it needs "
            f"{MIN_SEGMENTS} time segments of at least {min_locs_per_segment} localizations each"
        )
    if segments is None:
        segments = int(np.clip(len(frame) // min_locs_per_segment, MIN_SEGMENTS, MAX_DEFAULT_SEGMENTS))
    if segments < MIN_SEGMENTS:
        raise InputError(
            f"segments must be at least {MIN_SEGMENTS} to reject wrong correlations, got {segments}"
        )
    first, last = int(frame.min()), int(frame.max())
    if last - first + 1 < segments:
        raise InputError(
            f"the localizations span {last - first + 1} frames: too few to split into {segments} time "
            "segments, so drift cannot be told from a change in the sample"
        )
    edges = np.linspace(first, last + 1, segments + 1)
    segment = np.clip(np.searchsorted(edges, frame, side="right") - 1, 0, segments - 1)
    counts = np.bincount(segment, minlength=segments)
    if counts.min() < max(1, min_locs_per_segment // 4):
        k = int(np.argmin(counts))
        raise InputError(
            f"time segment {k + 1} of {segments} (frames {int(edges[k]) + 1}-{int(edges[k + 1])}) holds only "
            f"{counts[k]} localizations: too few to correlate; use fewer segments"
        )
    centres = np.bincount(segment, weights=frame, minlength=segments) / counts

    x_nm, y_nm = (x + 0.5) * px, (y + 0.5) * px
    images = _segment_images(x_nm, y_nm, segment, segments, render_nm, max_drift_nm + 3 * render_nm, 1.0)
    spectra = [fft.fft2(image) for image in images]
    del images
    height, width = spectra[0].shape
    signed_yx = np.stack(
        np.meshgrid(fft.fftfreq(height, 1 / height), fft.fftfreq(width, 1 / width), indexing="ij")
    ).reshape(2, -1)
    window_index = np.flatnonzero(np.hypot(*signed_yx) <= max_drift_nm / render_nm)

    pairs = np.array(list(itertools.combinations(range(segments), 2)))
    # registering segment b on segment a shifts it by -(p_b - p_a); (dy, dx) -> (dx, dy) in nm
    shifts_yx = [_pair_shift(spectra[a], spectra[b], window_index, signed_yx, upsample) for a, b in pairs]
    d_nm = -np.array(shifts_yx)[:, ::-1] * render_nm
    positions, use = solve_rcc(pairs, d_nm, segments, max_residual_nm)
    members = np.flatnonzero(np.isfinite(positions[:, 0]))
    if len(members) < 2:
        raise InputError(
            "no two time segments correlate consistently: the structure is too sparse or the drift larger "
            f"than max_drift_nm={max_drift_nm}"
        )
    positions_px = positions / px
    curve = [_interpolate(centres[members], positions_px[members, k], total_frames) for k in (0, 1)]
    return Drift(
        dx=curve[0] - curve[0][0],
        dy=curve[1] - curve[1][0],
        method="rcc",
        segment_frames=centres,
        segment_dx=positions_px[:, 0],
        segment_dy=positions_px[:, 1],
        pairs_used=int(use.sum()),
        pairs_total=len(pairs),
    )


def _track(frame, xy_nm, start_nm, n_frames, radius_nm, max_drift_nm, median_frames) -> np.ndarray:
    """One emitter's position per frame (n_frames, 2) nm, NaN where it is not localized.

    Each pass takes, in every frame, the localization nearest to the expected position within a
    gate, then sets the expected position to a running median of that trace. The gate shrinks
    from ``max_drift_nm`` to ``radius_nm``, so the track follows a drift larger than the radius.
    """
    expected = np.tile(start_nm, (n_frames, 1))
    for gate_nm in np.geomspace(max(max_drift_nm, radius_nm), radius_nm, 4):
        distance = np.hypot(*(xy_nm - expected[frame]).T)
        inside = np.flatnonzero(distance <= gate_nm)
        order = inside[np.lexsort((distance[inside], frame[inside]))]
        nearest = order[np.unique(frame[order], return_index=True)[1]]
        trace = np.full((n_frames, 2), np.nan)
        trace[frame[nearest]] = xy_nm[nearest]
        present = np.flatnonzero(np.isfinite(trace[:, 0]))
        if not len(present):
            return trace
        median = ndimage.median_filter(trace[present], size=(median_frames, 1), mode="nearest")
        expected = np.column_stack([np.interp(np.arange(n_frames), present, median[:, k]) for k in (0, 1)])
    return trace


def estimate_drift_fiducials(
    locs: Localizations,
    *,
    pixel_size_nm: float,
    radius_nm: float = 100.0,
    min_presence: float = 0.8,
    max_drift_nm: float = 1000.0,
    median_frames: int = 51,
    n_frames: int | None = None,
) -> Drift:
    """Drift from fiducials: emitters localized within ``radius_nm`` of one place in at least
    ``min_presence`` of the frames.

    Candidates are the densest spots of the first 5% of the frames (at least 20), at least two
    radii apart; each is tracked through the movie (following up to ``max_drift_nm``) and kept if
    it is present in ``min_presence`` of the frames. The traces, each offset to agree with the
    first, are averaged per frame, then over up to 200 equal spans of frames, and smoothed by a
    spline (smoothness by generalised cross-validation). Raises :class:`InputError` when no emitter qualifies.
    """
    px = check_pixel_size(pixel_size_nm)
    frame, x, y, total_frames = _finite_rows(locs, n_frames)
    first, last = int(frame.min()), int(frame.max())
    if last - first + 1 < 10:
        raise InputError(f"the localizations span {last - first + 1} frames: too few to follow fiducials")
    xy_nm = np.column_stack([(x + 0.5) * px, (y + 0.5) * px])
    n_start = max(20, (last - first + 1) // 20)
    start_xy = xy_nm[frame < first + n_start]
    tree = cKDTree(start_xy)
    counts = tree.query_ball_point(start_xy, radius_nm, return_length=True)
    candidates: list[np.ndarray] = []
    for k in np.argsort(-counts, kind="stable"):
        if counts[k] < min_presence * n_start:
            break
        centre = start_xy[tree.query_ball_point(start_xy[k], radius_nm)].mean(axis=0)
        if all(np.hypot(*(centre - c)) > 2 * radius_nm for c in candidates):
            candidates.append(centre)
    traces, all_tree = [], cKDTree(xy_nm)
    for centre in candidates:
        near = np.asarray(all_tree.query_ball_point(centre, max_drift_nm + radius_nm), dtype=np.int64)
        trace = _track(frame[near], xy_nm[near], centre, total_frames, radius_nm, max_drift_nm, median_frames)
        if np.isfinite(trace[first : last + 1, 0]).mean() >= min_presence:
            traces.append(trace)
    if not traces:
        raise InputError(
            f"no fiducial found: no emitter is localized within {radius_nm} nm of one place in at least "
            f"{min_presence:.0%} of the frames"
        )
    aligned = np.stack([t - np.nanmedian(t - traces[0], axis=0) for t in traces])
    n_present = np.isfinite(aligned[:, :, 0]).sum(axis=0)
    mean_nm = np.nansum(aligned, axis=0) / np.maximum(n_present, 1)[:, None]
    # block means over at most MAX_FIDUCIAL_KNOTS spans of frames keep the spline fit fast
    frames = np.flatnonzero(n_present)
    block = np.minimum(np.arange(len(frames)) * MAX_FIDUCIAL_KNOTS // len(frames), MAX_FIDUCIAL_KNOTS - 1)
    size = np.bincount(block)
    centres = np.bincount(block, weights=frames) / size
    curve = [
        _interpolate(centres, np.bincount(block, weights=mean_nm[frames, k]) / size / px, total_frames)
        for k in (0, 1)
    ]
    return Drift(
        dx=curve[0] - curve[0][0], dy=curve[1] - curve[1][0], method="fiducials", n_fiducials=len(traces)
    )
