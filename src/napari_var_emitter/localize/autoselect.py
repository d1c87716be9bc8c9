"""Which bundled model for a stack: the 3-frame one for movies, the one-frame one otherwise.

The bundled 3-frame model (``bundled:window-3``: frames t-1, t, t+1) is the more accurate one on
SMLM movies, whose emitters stay on for several consecutive frames; on frames that are not
consecutive views of the same blinking emitters (a shuffled movie, independent simulations such as
Deep-STORM's demo) it fails (training/DESIGN-CHOICES.md). So the choice is made from the data: the
one-frame model localizes a sample of consecutive frames (at most ``SAMPLE_FRAMES`` frames of a
``SAMPLE_SIZE`` px crop from the middle of the stack), and the stack is a movie when the emitters
found in frame t are found again in frame t+1 (within ``PERSIST_PX``) well beyond what chance gives
at their density: measured on the benchmark's validation movies, 0.69-0.74 of them are, against
0.14 on Deep-STORM's demo, where chance alone gives 0.14 at its density.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..camera import Camera
from ..io.frames import frame_geometry, read_chunk
from ..model.checkpoint import EmitterModel
from .pipeline import predict

SAMPLE_FRAMES = 16
SAMPLE_SIZE = 128  # px: crop of each sampled frame (persistence is local; large frames stay cheap)
PERSIST_PX = 1.0
MIN_EXCESS = 0.3  # persistence beyond chance, as a share of what is left to chance: 0 random, 1 all
MIN_DETECTIONS = 20  # fewer in the sample: too few to tell, the one-frame model is used
MOVIE_MODEL, FRAME_MODEL = "window-3", "default"


@dataclass(frozen=True)
class Choice:
    """The bundled model chosen for a stack, and why."""

    name: str  # FRAME_MODEL ("default") or MOVIE_MODEL ("window-3")
    reason: str
    persistence: float = math.nan  # share of frame t's emitters found again in frame t+1
    chance: float = math.nan  # the share expected at random at the sample's density

    @property
    def label(self) -> str:
        return "bundled, 3 frames" if self.name == MOVIE_MODEL else "bundled, 1 frame"

    def describe(self) -> str:
        return f"model: {self.label} ({self.reason})"


def persistence(frame: np.ndarray, x: np.ndarray, y: np.ndarray, n_frames: int, area_px: float):
    """(share of the emitters of frames 0..n-2 with one of frame t+1 within ``PERSIST_PX``, the
    share expected by chance at the density of frames 1..n-1, emitters counted)."""
    found = counted = 0
    for t in range(n_frames - 1):
        here, there = frame == t, frame == t + 1
        counted += int(here.sum())
        if here.any() and there.any():
            d = np.hypot(x[here, None] - x[None, there], y[here, None] - y[None, there])
            found += int((d.min(axis=1) <= PERSIST_PX).sum())
    later = int((frame >= 1).sum())
    density = later / max(n_frames - 1, 1) / max(area_px, 1.0)  # emitters per pixel
    chance = 1.0 - math.exp(-density * math.pi * PERSIST_PX**2)
    return (found / counted if counted else math.nan), chance, counted


def choose(frames, frame_model: EmitterModel, camera: Camera | None = None, device="cpu") -> Choice:
    """The :class:`Choice` for ``frames`` ((T, Y, X) or (Y, X), ADU; any array napari or
    :func:`.stream.open_frames` gives: only the sample is read), localized by ``frame_model`` (the
    bundled one-frame model)."""
    T, H, W = frame_geometry(frames)
    if len(frames.shape) == 2 or T < 3:
        return Choice(FRAME_MODEL, "fewer than 3 frames")
    start = max(0, T // 2 - SAMPLE_FRAMES // 2)
    stop = min(T, start + SAMPLE_FRAMES)
    y0, x0 = max(0, (H - SAMPLE_SIZE) // 2), max(0, (W - SAMPLE_SIZE) // 2)
    sample = read_chunk(frames, start, stop)[:, y0 : y0 + SAMPLE_SIZE, x0 : x0 + SAMPLE_SIZE]
    locs = predict(sample, frame_model, camera, device=device).localizations
    n = len(sample)
    share, chance, counted = persistence(locs.frame, locs.x, locs.y, n, sample.shape[1] * sample.shape[2])
    if counted < MIN_DETECTIONS:
        return Choice(FRAME_MODEL, f"{counted} emitters in the sample: too few to tell a movie")
    excess = (share - chance) / max(1.0 - chance, 1e-9)
    detail = f"{share:.0%} of emitters found again in the next frame, {chance:.0%} by chance"
    if excess >= MIN_EXCESS:
        return Choice(MOVIE_MODEL, f"a movie: {detail}", share, chance)
    return Choice(FRAME_MODEL, f"not a movie: {detail}", share, chance)
