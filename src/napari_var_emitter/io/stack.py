"""What a stack of frames is: a ``(T, Y, X)`` shape within the limits below, checked before any
pixel is read, and :class:`LazyStack`, the array-like that the lazy readers (:mod:`.stream`,
:mod:`.formats`) return.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import InputError

MIN_FRAME_SIZE = 8  # pixels per side: a 7x7 fitting box plus a margin
MAX_FRAME_PIXELS = 16384 * 16384  # 1 GiB as float32; larger frames must be cropped or binned


def check_frame_shape(
    shape,
    *,
    min_size: int = MIN_FRAME_SIZE,
    max_pixels: int = MAX_FRAME_PIXELS,
    name: str = "frames",
) -> tuple[int, int, int]:
    """Check the shape of a frame ``(Y, X)`` or a stack ``(T, Y, X)``; return ``(T, Y, X)``.

    Raises :class:`InputError` for an empty stack, an RGB(A) image, another number of dimensions,
    frames smaller than ``min_size`` pixels on a side or larger than ``max_pixels`` pixels. Only the
    shape is looked at: nothing is read or allocated.
    """
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"{name}: not an array shape: {shape!r}") from None
    if any(s == 0 for s in shape) or not shape:
        raise InputError(f"{name}: the image is empty (shape {shape})")
    if len(shape) == 3 and shape[-1] in (3, 4) and shape[-2] > shape[-1] * 2:
        raise InputError(
            f"{name}: shape {shape} looks like an RGB(A) image; expected grayscale frames (T, Y, X)"
        )
    if len(shape) not in (2, 3):
        raise InputError(
            f"{name}: expected a frame (Y, X) or a stack (T, Y, X), "
            f"got {len(shape)} dimensions (shape {shape})"
        )
    t, h, w = (1, *shape) if len(shape) == 2 else shape
    if min(h, w) < min_size:
        raise InputError(f"{name}: frames of {h}x{w} px are too small (at least {min_size}x{min_size})")
    if h * w > max_pixels:
        side = math.isqrt(max_pixels)
        raise InputError(
            f"{name}: frames of {h}x{w} px are too large (at most {max_pixels:,} px, e.g. {side}x{side}); "
            "crop or bin the movie"
        )
    return t, h, w


class LazyStack:
    """A ``(T, Y, X)`` stack read from its file only where it is indexed, like a memory map.

    Indexing with an integer, a slice or a tuple starting with one returns numpy arrays. Keeps the
    file open until :meth:`close` (or garbage collection). Subclasses read frames [a, b).
    """

    ndim = 3
    path: Path
    shape: tuple[int, int, int]
    dtype: np.dtype

    def _read(self, a: int, b: int) -> np.ndarray:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        rest = ()
        if isinstance(key, tuple):
            key, rest = (key[0], key[1:]) if key else (slice(None), ())
        n = self.shape[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step == 1:
                out = self._read(start, max(start, stop))
            else:
                frames = [self._read(i, i + 1) for i in range(start, stop, step)]
                out = np.concatenate(frames) if frames else np.zeros((0, *self.shape[1:]), self.dtype)
            return out[(slice(None), *rest)] if rest else out
        index = int(key)
        if not -n <= index < n:
            raise IndexError(f"frame {index} is outside 0..{n - 1}")
        out = self._read(index % n, index % n + 1)[0]
        return out[rest] if rest else out

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
