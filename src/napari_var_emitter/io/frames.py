"""Frames on disk and in memory: read TIFF stacks, validate arrays (docs/CONVENTIONS.md, section 5).

``read_frames`` returns the stack as ``(T, Y, X)`` in its stored dtype, memory-mapped when the
file allows it (uncompressed, contiguous); ``as_frames`` validates any array-like and returns a
``float32 (T, Y, X)`` array, raising :class:`InputError` with one clear message.

Limits, so that bad input is refused instead of exhausting the memory:

- a frame has at least ``MIN_FRAME_SIZE`` pixels per side and at most ``MAX_FRAME_PIXELS`` pixels
  (16384 x 16384: 1 GiB as float32, held whole while it is predicted in tiles); the shape is checked
  from the file's header or the array's ``shape`` before any pixel is read;
- a TIFF that cannot be memory-mapped (compressed, tiled) is read whole only up to
  ``MAX_IN_MEMORY_BYTES``;
- values are finite and within ``MAX_ABS_VALUE`` ADU (beyond it they are no camera reading, and
  the model's arithmetic overflows).
"""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path

import numpy as np

from ..errors import InputError
from .stack import MAX_FRAME_PIXELS, MIN_FRAME_SIZE, check_frame_shape

MAX_IN_MEMORY_BYTES = 4 << 30  # a TIFF that cannot be memory-mapped is read whole up to this
MAX_ABS_VALUE = 1e12  # ADU


def check_values(array: np.ndarray, *, name: str = "frames") -> None:
    """:class:`InputError` unless every value is a finite number within ``MAX_ABS_VALUE``."""
    arr = np.asarray(array)
    if arr.dtype.kind in "ui" and arr.dtype.itemsize <= 4:
        return  # at most 4.3e9: always in range
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InputError(f"{name}: the image holds NaN or infinite values")
    if arr.size and max(abs(float(arr.max())), abs(float(arr.min()))) > MAX_ABS_VALUE:
        raise InputError(f"{name}: values beyond +-{MAX_ABS_VALUE:.0e} ADU are not camera readings")


# --- TIFF ---------------------------------------------------------------------------------------
_DAMAGED = ("invalid", "corrupt", "truncat", "failed to read")


@contextlib.contextmanager
def tifffile_warnings():
    """Collect tifffile's log warnings (instead of printing them) while reading one file."""
    logger = logging.getLogger("tifffile")
    messages: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler = _Keep(logging.WARNING)
    # others may have silenced tifffile (picasso.io sets it to CRITICAL): we need its warnings
    saved = logger.propagate, logger.level, logger.disabled
    logger.addHandler(handler)
    logger.propagate, logger.disabled = False, False
    logger.setLevel(logging.WARNING)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.propagate, logger.disabled = saved[0], saved[2]
        logger.setLevel(saved[1])


def raise_if_damaged(path: Path, messages: list[str]) -> None:
    """:class:`InputError` if tifffile's warnings while reading ``path`` say the file is damaged."""
    bad = [m for m in messages if any(word in m.lower() for word in _DAMAGED)]
    if bad:
        first = " ".join(bad[0].split())
        raise InputError(f"{path} is a damaged or truncated TIFF file ({first})")


def read_frames(path: str | Path) -> np.ndarray:
    """Read a TIFF stack ``(T, Y, X)`` or a single frame ``(Y, X)`` as ``(T, Y, X)``.

    The stack is memory-mapped when it is stored uncompressed and contiguously, so that only the
    frames that are used are read. A Zarr store, an ND2 or a CZI file gives the lazy stack of
    :func:`.formats.open_acquisition` (an array-like read where it is indexed). The dtype is the
    file's; pass it through :func:`as_frames` to validate and convert. Raises :class:`InputError`
    for a missing file, one that is not a readable TIFF, a damaged or truncated one, an RGB image,
    or frames larger than ``MAX_FRAME_PIXELS`` (checked from the header, before reading).
    """
    import tifffile

    from .formats import frames_format, open_acquisition

    path = Path(path)
    if not path.exists():
        raise InputError(f"no such file: {path}")
    if frames_format(path) != "tiff":
        return open_acquisition(path)
    if path.is_dir():
        raise InputError(f"{path} is a directory, not a TIFF file")
    with tifffile_warnings() as messages:
        try:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0] if tif.series else None
                if series is None:
                    raise InputError(f"{path} holds no image")
                raise_if_damaged(path, messages)
                shape, axes = tuple(series.shape), str(getattr(series, "axes", ""))
                if axes.endswith("S") and shape[-1] in (3, 4):  # interleaved RGB(A); planar reads as frames
                    raise InputError(
                        f"{path} is an RGB(A) image {shape}; expected grayscale frames (T, Y, X)"
                    )
                if len(shape) >= 2:  # refuse huge frames before reading them
                    check_frame_shape(shape[-2:], min_size=1, name=str(path))
                data = None
                try:
                    data = tifffile.memmap(path, mode="r")
                except Exception:  # noqa: BLE001 - compressed, tiled, not contiguous: read it
                    data = None
                if data is None or data.shape != series.shape:
                    nbytes = math.prod(shape) * np.dtype(series.dtype).itemsize
                    if nbytes > MAX_IN_MEMORY_BYTES:
                        raise InputError(
                            f"{path} would take {nbytes / 2**30:.1f} GiB in memory and cannot be "
                            "memory-mapped (compressed or tiled); save it as an uncompressed TIFF"
                        )
                    data = series.asarray()
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - tifffile raises many kinds on damaged bytes
            message = " ".join(str(exc).split()) or type(exc).__name__
            raise InputError(f"cannot read {path} as a TIFF file: {message}") from None
        raise_if_damaged(path, messages)
    if data.ndim > 3:  # e.g. (T, 1, Y, X) from ImageJ hyperstacks: drop singleton axes before Y, X
        lead = tuple(s for s in data.shape[:-2] if s != 1) or (1,)
        data = data.reshape(lead + data.shape[-2:])
    if data.ndim == 2:
        data = data[None]
    return data


# --- arrays -------------------------------------------------------------------------------------
def frame_geometry(frames) -> tuple[int, int, int]:
    """(T, Y, X) of a stack or a frame, from its ``shape`` alone (nothing is read), checked."""
    shape = getattr(frames, "shape", None)
    if shape is None:
        raise InputError("frames must be an array (T, Y, X) or (Y, X)")
    return check_frame_shape(shape)


def read_chunk(frames, start: int, stop: int) -> np.ndarray:
    """Frames [start, stop) of a stack (T, Y, X), or the one frame (Y, X), as (n, Y, X) in their own
    dtype, with their values checked. Any array napari, dask or :func:`.stream.open_frames` gives:
    only those frames are read."""
    chunk = np.asarray(frames if len(frames.shape) == 2 else frames[start:stop])
    if chunk.dtype.kind not in "uif":
        raise InputError(f"frames must hold numbers, got dtype {chunk.dtype}")
    check_values(chunk, name=f"frames {start}..{stop - 1}")
    return chunk.reshape(-1, *chunk.shape[-2:])


def as_frames(
    array, *, min_size: int = MIN_FRAME_SIZE, max_pixels: int = MAX_FRAME_PIXELS, name: str = "frames"
) -> np.ndarray:
    """Validate an image or stack and return it as ``float32 (T, Y, X)``.

    Accepts a single frame ``(Y, X)`` or a stack ``(T, Y, X)`` of a real numeric dtype (a torch
    tensor is accepted too). Raises :class:`InputError` for an empty stack, another number of
    dimensions, an RGB(A) image, NaN, infinite or absurd (beyond ``MAX_ABS_VALUE``) values, a
    non-numeric dtype, or frames smaller than ``min_size`` pixels on a side or larger than
    ``max_pixels``. The shape is checked before anything is read or converted.
    """
    if array is None:
        raise InputError(f"{name}: no image given")
    if hasattr(array, "detach") and hasattr(array, "cpu"):  # torch tensor, without importing torch
        array = array.detach().cpu().numpy()
    shape = getattr(array, "shape", None)
    if shape is not None:
        check_frame_shape(shape, min_size=min_size, max_pixels=max_pixels, name=name)
    try:
        arr = np.asarray(array)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{name}: not an array ({exc})") from None
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise InputError(f"{name}: expected a real numeric image, got dtype {arr.dtype}")
    check_frame_shape(arr.shape, min_size=min_size, max_pixels=max_pixels, name=name)
    if arr.ndim == 2:
        arr = arr[None]
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.asarray(arr, dtype=np.float32)
    # checked after the cast: float64 can overflow float32
    check_values(out if np.issubdtype(arr.dtype, np.floating) else arr, name=name)
    return out
