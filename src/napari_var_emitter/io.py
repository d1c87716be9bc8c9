"""Frames on disk and in memory: read TIFF stacks, validate arrays (CONVENTIONS section 5).

``read_frames`` returns the stack as ``(T, Y, X)`` in its stored dtype, memory-mapped when the
file allows it (uncompressed, contiguous); ``as_frames`` validates any array-like and returns a
``float32 (T, Y, X)`` array, raising :class:`InputError` with one clear message.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError

MIN_FRAME_SIZE = 8  # pixels per side: a 7x7 fitting box plus a margin


def read_frames(path: str | Path) -> np.ndarray:
    """Read a TIFF stack ``(T, Y, X)`` or a single frame ``(Y, X)`` as ``(T, Y, X)``.

    The stack is memory-mapped when it is stored uncompressed and contiguously, so that only the
    frames that are used are read. The dtype is the file's; pass it through :func:`as_frames`
    to validate and convert. Raises :class:`InputError` for a missing file or one that is not a
    readable TIFF.
    """
    import tifffile

    path = Path(path)
    if not path.exists():
        raise InputError(f"no such file: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a directory, not a TIFF file")
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0] if tif.series else None
            if series is None:
                raise InputError(f"{path} holds no image")
            data = None
            try:
                data = tifffile.memmap(path, mode="r")
            except (ValueError, OSError, TypeError, KeyError):
                data = None  # compressed, tiled or not contiguous: read it
            if data is None or data.shape != series.shape:
                data = series.asarray()
    except InputError:
        raise
    except (tifffile.TiffFileError, ValueError, OSError, KeyError, IndexError) as exc:
        raise InputError(f"cannot read {path} as a TIFF file: {exc}") from None
    if data.ndim > 3:  # e.g. (T, 1, Y, X) from ImageJ hyperstacks: drop singleton axes before Y, X
        lead = tuple(s for s in data.shape[:-2] if s != 1) or (1,)
        data = data.reshape(lead + data.shape[-2:])
    if data.ndim == 2:
        data = data[None]
    return data


def as_frames(array, *, min_size: int = MIN_FRAME_SIZE, name: str = "frames") -> np.ndarray:
    """Validate an image or stack and return it as ``float32 (T, Y, X)``.

    Accepts a single frame ``(Y, X)`` or a stack ``(T, Y, X)`` of a real numeric dtype (a torch
    tensor is accepted too). Raises :class:`InputError` for an empty stack, another number of
    dimensions, an RGB(A) image, NaN or infinite values, a non-numeric dtype, or frames smaller
    than ``min_size`` pixels on a side.
    """
    if array is None:
        raise InputError(f"{name}: no image given")
    if hasattr(array, "detach") and hasattr(array, "cpu"):  # torch tensor, without importing torch
        array = array.detach().cpu().numpy()
    try:
        arr = np.asarray(array)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{name}: not an array ({exc})") from None
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise InputError(f"{name}: expected a real numeric image, got dtype {arr.dtype}")
    if arr.size == 0:
        raise InputError(f"{name}: the image is empty (shape {arr.shape})")
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.shape[-2] > arr.shape[-1] * 2:
        raise InputError(
            f"{name}: shape {arr.shape} looks like an RGB(A) image; expected grayscale frames (T, Y, X)"
        )
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim != 3:
        raise InputError(
            f"{name}: expected a frame (Y, X) or a stack (T, Y, X), got {arr.ndim} dimensions "
            f"(shape {arr.shape})"
        )
    if min(arr.shape[1:]) < min_size:
        raise InputError(
            f"{name}: frames of {arr.shape[1]}x{arr.shape[2]} px are too small "
            f"(at least {min_size}x{min_size})"
        )
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.asarray(arr, dtype=np.float32)
    if np.issubdtype(arr.dtype, np.floating):  # checked after the cast: float64 can overflow float32
        if not np.isfinite(out).all():
            raise InputError(f"{name}: the image holds NaN or infinite values")
    return out
