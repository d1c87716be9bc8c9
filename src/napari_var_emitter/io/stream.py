"""Movies of any length in, localizations out, in constant memory.

- :func:`open_frames` opens a TIFF stack lazily: read with plain file reads where it is stored
  uncompressed and contiguously (:class:`RawTiffStack`: a memory map would keep every page it
  touched resident), else page by page (compressed or scattered one-page-per-frame files,
  :class:`TiffPageStack`); only a file that is neither is read whole (by :func:`.io.read_frames`,
  within its size limit).
- :func:`csv_stream` writes the ThunderSTORM CSV of docs/CONVENTIONS.md, section 3 chunk by chunk, to a
  temporary file beside the target that replaces it only when the run finishes: an interrupted
  run never leaves a partial table at the target's name.

Memory model of a streamed prediction: one chunk of frames, the network's activations for one
batch, and the current chunk's localizations; nothing grows with the number of frames.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import InputError
from .atomic import atomic_path
from .frames import raise_if_damaged, read_frames, tifffile_warnings
from .localizations import Localizations, check_pixel_size, csv_header, csv_rows
from .stack import LazyStack, check_frame_shape


class RawTiffStack(LazyStack):
    """An uncompressed, contiguous TIFF stack read with plain file reads.

    Unlike a memory map, the frames read do not stay in the process's memory (a map keeps every
    page it touched resident, so its memory grows with the movie).
    """

    def __init__(self, path: Path, offset: int, shape: tuple[int, int, int], dtype):
        self.path, self.offset, self.shape, self.dtype = (
            Path(path),
            int(offset),
            tuple(shape),
            np.dtype(dtype),
        )
        self._frame_bytes = self.shape[1] * self.shape[2] * self.dtype.itemsize
        self._handle = open(self.path, "rb")  # noqa: SIM115 - kept open, closed by close()
        self._lock = threading.Lock()

    def _read(self, a: int, b: int) -> np.ndarray:
        out = np.empty((b - a, *self.shape[1:]), self.dtype)
        if not out.size:
            return out
        with self._lock:
            self._handle.seek(self.offset + a * self._frame_bytes)
            got = self._handle.readinto(memoryview(out).cast("B"))
        if got != out.nbytes:
            raise InputError(f"{self.path} is a damaged or truncated TIFF file (frames {a}..{b - 1} missing)")
        return out

    def close(self) -> None:
        self._handle.close()


class TiffPageStack(LazyStack):
    """A TIFF stack stored one page per frame (compressed, or scattered), decoded page by page."""

    def __init__(self, path: Path, tif, pages, shape: tuple[int, int, int], dtype):
        self.path = path
        self._tif = tif
        self._pages = pages
        self.shape = shape
        self.dtype = np.dtype(dtype)

    @classmethod
    def open(cls, path: str | Path) -> TiffPageStack | None:
        """The stack, or None if the file is not one page per frame (or tifffile cannot parse it)."""
        import tifffile

        path = Path(path)
        with tifffile_warnings() as messages:
            try:
                tif = tifffile.TiffFile(path)
            except Exception:  # noqa: BLE001 - unreadable: read_frames gives the message
                return None
            return cls._open(path, tif, messages)

    @classmethod
    def _open(cls, path: Path, tif, messages: list[str]) -> TiffPageStack | None:
        try:
            series = tif.series[0]
            raise_if_damaged(path, messages)  # tifffile logs a truncated file and carries on
            shape = tuple(int(s) for s in series.shape)
            pages = series.pages
            n = math.prod(shape[:-2]) if len(shape) > 2 else 1
            if len(shape) < 2 or len(pages) != n or series.keyframe.samplesperpixel != 1:
                tif.close()
                return None
            check_frame_shape((n, *shape[-2:]), min_size=1, name=str(path))  # huge frames
            stack = cls(path, tif, pages, (n, shape[-2], shape[-1]), series.dtype)
            stack._frame(0)  # a file that cannot be decoded fails now, with its message
            return stack
        except InputError:
            tif.close()
            raise
        except Exception:  # noqa: BLE001 - not a layout we read lazily
            tif.close()
            return None

    def _frame(self, i: int) -> np.ndarray:
        with tifffile_warnings() as messages:
            try:
                frame = self._pages[i].asarray()
            except Exception as exc:  # noqa: BLE001 - tifffile raises many kinds on damaged bytes
                message = " ".join(str(exc).split()) or type(exc).__name__
                raise InputError(f"cannot read frame {i} of {self.path}: {message}") from None
            raise_if_damaged(self.path, messages)
        return frame.reshape(self.shape[1:])

    def _read(self, a: int, b: int) -> np.ndarray:
        if b <= a:
            return np.zeros((0, *self.shape[1:]), self.dtype)
        return np.stack([self._frame(i) for i in range(a, b)])

    def close(self) -> None:
        self._tif.close()


def open_frames(path: str | Path):
    """A stack ``(T, Y, X)`` that reads only the frames that are indexed (module docstring):
    a :class:`RawTiffStack` where the TIFF (OME-TIFF, BigTIFF) is uncompressed and contiguous, else
    a :class:`TiffPageStack` where it is one page per frame, else the array of
    :func:`.io.read_frames`; a Zarr store, an ND2 or a CZI file as the stacks of :mod:`.formats`.
    Raises :class:`InputError` as ``read_frames`` does.
    """
    from .formats import frames_format, open_acquisition

    path = Path(path)
    if frames_format(path) != "tiff":
        return open_acquisition(path)
    data = read_frames(path) if not _paged(path) else None  # its checks and messages; a map
    if data is None:
        stack = TiffPageStack.open(path)
        return stack if stack is not None else read_frames(path)
    if isinstance(data, np.memmap) and data.flags.c_contiguous and data.filename and data.ndim == 3:
        return RawTiffStack(Path(data.filename), data.offset, data.shape, data.dtype)
    return data


def _paged(path: Path) -> bool:
    """True for a TIFF that cannot be memory-mapped (compressed, scattered): read it by pages."""
    import tifffile

    if not path.is_file():
        return False
    with tifffile_warnings():  # a damaged file is reported later, in one line
        try:
            tifffile.memmap(path, mode="r")
        except Exception:  # noqa: BLE001 - compressed, tiled or scattered: not mappable
            return True
    return False


def close_frames(frames) -> None:
    """Close what :func:`open_frames` opened (a no-op for arrays and memory maps)."""
    if isinstance(frames, LazyStack):
        frames.close()


class CsvAppender:
    """Appends localizations to an open CSV file, numbering the rows on (``id`` from 1)."""

    def __init__(self, handle, pixel_size_nm: float):
        self._handle = handle
        self.pixel_size_nm = check_pixel_size(pixel_size_nm)
        self.rows = 0
        handle.write(csv_header())

    def __call__(self, locs: Localizations) -> None:
        self.write(locs)

    def write(self, locs: Localizations) -> None:
        """Rows formatted exactly as :func:`.localizations.to_csv` writes them."""
        self._handle.write(csv_rows(locs, self.pixel_size_nm, first_id=self.rows + 1))
        self.rows += len(locs)


@contextlib.contextmanager
def csv_stream(path: str | Path, pixel_size_nm: float) -> Iterator[CsvAppender]:
    """``with csv_stream(path, px) as write: write(locs) ...``: the file appears at ``path`` only
    when the block ends without an exception; until then rows go to ``.<name>.<pid>.<random>.tmp``."""
    px = check_pixel_size(pixel_size_nm)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        yield CsvAppender(handle, px)
