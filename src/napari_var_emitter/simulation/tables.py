"""Simulated localization tables: blinking emitters on curved filaments, with a known stage drift.

What the drift correction and the resolution measure are checked on (tests, ``training/bench_drift.py``).
Positions are in camera pixels (``docs/CONVENTIONS.md``, section 1), frames 0-based.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..io.localizations import Localizations


@dataclass
class SyntheticTable:
    locs: Localizations  # observed: true position + localization noise + drift at the row's frame
    true_x: np.ndarray  # (N,) pixels, without noise or drift
    true_y: np.ndarray
    drift_x_px: np.ndarray  # (n_frames,) the drift added at each frame
    drift_y_px: np.ndarray


def filament_drift_nm(n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """The drift of the tests, in nm per frame: x linear plus periodic (152 nm peak to peak),
    y quadratic (100 nm over the movie)."""
    s = np.arange(n_frames) / max(n_frames - 1, 1)
    dx_nm = 125.0 * s + 40.0 * np.sin(2 * np.pi * s / 0.7)
    dy_nm = 100.0 * s**2
    return dx_nm, dy_nm


def filament_points(rng: np.random.Generator, n: int, field_px: float, n_filaments: int) -> np.ndarray:
    """``n`` points (x, y) drawn uniformly along the arc length of ``n_filaments`` smooth curves that
    cross a square field of ``field_px`` pixels: shape (n, 2)."""
    s = np.linspace(0.0, 1.0, 2001)
    curves = []
    for _ in range(n_filaments):
        start, end = rng.uniform(0.05, 0.95, 2) * field_px, rng.uniform(0.05, 0.95, 2) * field_px
        start[rng.integers(2)] = 0.02 * field_px  # every curve spans most of the field
        direction = end - start
        normal = np.array([-direction[1], direction[0]]) / np.hypot(*direction)
        bend = rng.uniform(-0.15, 0.15) * field_px * np.sin(np.pi * s) + rng.uniform(
            -0.04, 0.04
        ) * field_px * np.sin(rng.uniform(2, 5) * np.pi * s)
        curves.append(start + s[:, None] * direction + bend[:, None] * normal)
    lengths = [np.hypot(*np.diff(c, axis=0).T).sum() for c in curves]
    which = rng.choice(n_filaments, size=n, p=np.asarray(lengths) / sum(lengths))
    points = np.empty((n, 2))
    for k, curve in enumerate(curves):
        rows = which == k
        arc = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(curve, axis=0).T))])
        t = rng.uniform(0, arc[-1], rows.sum())
        points[rows] = np.column_stack([np.interp(t, arc, curve[:, 0]), np.interp(t, arc, curve[:, 1])])
    return points


def simulate_filaments(
    n_locs: int,
    n_frames: int,
    *,
    noise_nm: float = 10.0,
    pixel_size_nm: float = 100.0,
    field_nm: float = 10_000.0,
    n_filaments: int = 6,
    blinks_per_emitter: float = 4.0,
    background_fraction: float = 0.02,
    drift: bool = True,
    n_fiducials: int = 0,
    fiducial_noise_nm: float = 3.0,
    seed: int = 0,
) -> SyntheticTable:
    """A blinking-emitter table on filaments, rows ordered by frame.

    Emitters sit on the filaments; each is localized about ``blinks_per_emitter`` times in random
    frames (so the same emitter appears in far-apart frames, as in dSTORM/PAINT), each time with
    Gaussian localization noise of ``noise_nm`` per axis. ``background_fraction`` of the rows are
    uniform over the field (unspecific events). With ``drift``, the drift of
    :func:`filament_drift_nm` is added at each row's frame. ``n_fiducials`` beads, each localized in
    95% of the frames with ``fiducial_noise_nm`` of noise, are added to the ``n_locs`` rows.
    """
    rng = np.random.default_rng(seed)
    field_px = field_nm / pixel_size_nm
    n_background = int(round(background_fraction * n_locs))
    n_emitters = max(1, int(round((n_locs - n_background) / blinks_per_emitter)))
    emitters = filament_points(rng, n_emitters, field_px, n_filaments)
    true_xy = emitters[rng.integers(n_emitters, size=n_locs - n_background)]
    true_xy = np.concatenate([true_xy, rng.uniform(0, field_px, (n_background, 2))])
    frame = rng.integers(0, n_frames, n_locs)
    noise_px = np.full(n_locs, noise_nm / pixel_size_nm)
    if n_fiducials:
        beads = rng.uniform(0.1, 0.9, (n_fiducials, 2)) * field_px
        bead_frame = np.tile(np.arange(n_frames), n_fiducials)
        seen = rng.random(len(bead_frame)) < 0.95
        bead_xy = np.repeat(beads, n_frames, axis=0)[seen]
        frame = np.concatenate([frame, bead_frame[seen]])
        true_xy = np.concatenate([true_xy, bead_xy])
        noise_px = np.concatenate([noise_px, np.full(len(bead_xy), fiducial_noise_nm / pixel_size_nm)])
        n_locs = len(frame)
    order = np.argsort(frame, kind="stable")
    frame, true_xy, noise_px = frame[order], true_xy[order], noise_px[order]
    if drift:
        dx_nm, dy_nm = filament_drift_nm(n_frames)
    else:
        dx_nm = dy_nm = np.zeros(n_frames)
    drift_x_px, drift_y_px = dx_nm / pixel_size_nm, dy_nm / pixel_size_nm
    x = true_xy[:, 0] + rng.normal(0, noise_px) + drift_x_px[frame]
    y = true_xy[:, 1] + rng.normal(0, noise_px) + drift_y_px[frame]
    locs = Localizations(
        frame=frame,
        x=x,
        y=y,
        photons=rng.gamma(4.0, 1000.0, n_locs),
        background=50.0,
        sigma=1.2,
        uncertainty=noise_px,
        probability=1.0,
        grid_factor=1.0,
    )
    return SyntheticTable(locs, true_xy[:, 0], true_xy[:, 1], drift_x_px, drift_y_px)
