"""The localization table and its files (docs/CONVENTIONS.md, sections 1 and 3).

In memory, positions are in *pixels* with the napari convention (the centre of pixel
(y, x) is (y, x)) and frames are 0-based. On disk:

- ThunderSTORM CSV (``.csv``, here): positions in nm from the image's top-left corner,
  ``x_nm = (x + 0.5) * pixel_size_nm``, frames 1-based.
- Picasso HDF5 (``.hdf5``/``.h5`` + ``.yaml``, :mod:`.picasso`): positions in camera pixels with
  the same pixel-centre convention as ours, frames 0-based.

:mod:`.tables` reads and writes either, choosing the format by the file's suffix. Every write is
atomic (a temporary file, then a rename): an interrupted write leaves the previous file as it was.
Reading never loads more than ``max_rows`` rows and raises a :class:`~.errors.TableFormatError`
subclass, with one clear message, for anything unreadable.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from ..errors import CameraError, CsvFormatError, InputError
from .atomic import atomic_path

THUNDERSTORM_HEADER = (
    "id",
    "frame",
    "x [nm]",
    "y [nm]",
    "sigma [nm]",
    "intensity [photon]",
    "offset [photon]",
    "bkgstd [photon]",
    "uncertainty [nm]",
)
# This project's own columns, after ThunderSTORM's.
EXTRA_HEADER = ("probability", "grid_factor")
CSV_SUFFIXES = (".csv",)
PICASSO_SUFFIXES = (".hdf5", ".h5")
# Readers refuse tables longer than this (about 9 GB in memory at 11 float64 columns): a file that
# claims more is refused before it is read, not after it has filled the memory.
MAX_ROWS = 100_000_000
MAX_FRAME = 2**32 - 1  # 0-based frames must be below this (Picasso stores them as uint32)
MAX_LINE_CHARS = 1 << 20  # a CSV line longer than this is not a localization table


def _f64(n: int = 0) -> np.ndarray:
    return np.zeros(n, dtype=np.float64)


@dataclass
class Localizations:
    """One row per emitter. Pixels, 0-based frames, photons (see module docstring).

    ``background`` is the local background per pixel (photons), ``bkgstd`` its standard
    deviation, ``uncertainty`` the 1-sigma lateral localization uncertainty (pixels),
    ``grid_factor`` the output grid's cells per input pixel that the row came from
    (1 for an input-resolution map, 2 for 2x super-resolution, 0 for the classical fit).
    A scalar fills its column; a column left out (other than frame, x, y) is unknown: NaN.
    """

    frame: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    x: np.ndarray = field(default_factory=_f64)
    y: np.ndarray = field(default_factory=_f64)
    photons: np.ndarray = field(default_factory=_f64)
    background: np.ndarray = field(default_factory=_f64)
    bkgstd: np.ndarray = field(default_factory=_f64)
    sigma: np.ndarray = field(default_factory=_f64)
    uncertainty: np.ndarray = field(default_factory=_f64)
    probability: np.ndarray = field(default_factory=_f64)
    grid_factor: np.ndarray = field(default_factory=_f64)

    def __post_init__(self) -> None:
        n = len(np.asarray(self.frame))
        for f in fields(self):
            value = np.asarray(getattr(self, f.name))
            if value.ndim == 0:  # a scalar fills the column
                value = np.full(n, value)
            elif value.size == 0 and n and f.name not in ("frame", "x", "y"):
                value = np.full(n, np.nan)  # left out: unknown
            dtype = np.int64 if f.name == "frame" else np.float64
            value = value.astype(dtype, copy=False).reshape(-1)
            if len(value) != n:
                raise InputError(f"column {f.name} has {len(value)} rows, frame has {n}")
            setattr(self, f.name, value)

    def __len__(self) -> int:
        return len(self.frame)

    @classmethod
    def column_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def subset(self, index) -> "Localizations":
        return Localizations(**{name: getattr(self, name)[index] for name in self.column_names()})

    @classmethod
    def concatenate(cls, parts: list["Localizations"]) -> "Localizations":
        if not parts:
            return cls()
        return cls(**{n: np.concatenate([getattr(p, n) for p in parts]) for n in cls.column_names()})

    def sorted(self) -> "Localizations":
        """Rows ordered by frame, then y, then x (a stable, comparable order)."""
        return self.subset(np.lexsort((self.x, self.y, self.frame)))

    def in_frame(self, t: int) -> "Localizations":
        return self.subset(self.frame == t)


# --- checks shared by the writers ---------------------------------------------------------
def check_pixel_size(pixel_size_nm) -> float:
    """The pixel size as a float, or :class:`CameraError` if it is not a finite number > 0."""
    try:
        px = float(pixel_size_nm)
    except (TypeError, ValueError):
        raise CameraError(f"pixel_size_nm must be a number, got {pixel_size_nm!r}") from None
    if not math.isfinite(px) or px <= 0:
        raise CameraError(f"pixel_size_nm must be finite and > 0, got {pixel_size_nm!r}")
    return px


def check_writable(locs: Localizations) -> None:
    """:class:`InputError` unless every row can be written and read back: finite positions,
    frames from 0 to ``MAX_FRAME - 1``. The other columns may hold NaN (unknown)."""
    if not isinstance(locs, Localizations):
        raise InputError(f"expected a Localizations table, got {type(locs).__name__}")
    if len(locs) and (locs.frame.min() < 0 or locs.frame.max() >= MAX_FRAME):
        raise InputError(f"frames must be from 0 to {MAX_FRAME - 1} (0-based), got {locs.frame.min()}..")
    for name in ("x", "y"):
        if not np.all(np.isfinite(getattr(locs, name))):
            raise InputError(f"column {name} holds NaN or infinite positions; they cannot be written")


# --- ThunderSTORM CSV -----------------------------------------------------------------------
def csv_header() -> str:
    """The header line of our CSV files (ThunderSTORM's columns, then ours)."""
    return ",".join(f'"{h}"' for h in THUNDERSTORM_HEADER + EXTRA_HEADER) + "\n"


def csv_rows(locs: Localizations, pixel_size_nm: float, first_id: int = 1) -> str:
    """The CSV lines of ``locs`` (ids from ``first_id``), as :func:`to_csv` writes them.

    Raises :class:`InputError` (or :class:`CameraError` for the pixel size) if the table cannot be
    written and read back.
    """
    px = check_pixel_size(pixel_size_nm)
    check_writable(locs)
    if not len(locs):
        return ""
    columns = [
        np.arange(first_id, first_id + len(locs)),
        locs.frame + 1,
        (locs.x + 0.5) * px,
        (locs.y + 0.5) * px,
        locs.sigma * px,
        locs.photons,
        locs.background,
        locs.bkgstd,
        locs.uncertainty * px,
        locs.probability,
        locs.grid_factor,
    ]
    rows = np.column_stack([np.asarray(c, dtype=np.float64) for c in columns])
    if not np.all(np.isfinite(rows[:, 2:4])):
        raise InputError(f"positions overflow when converted to nm with pixel size {px} nm")
    return "".join(
        f"{int(row[0])},{int(row[1])}," + ",".join(repr(float(v)) for v in row[2:]) + "\n" for row in rows
    )


def to_csv(locs: Localizations, path: str | Path, pixel_size_nm: float) -> Path:
    """Write ThunderSTORM CSV + our columns, atomically (temporary file, then rename).

    Raises :class:`InputError` (or :class:`CameraError` for the pixel size) before anything is
    written if the table cannot be read back.
    """
    path = Path(path)
    rows = csv_rows(locs, pixel_size_nm)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        handle.write(csv_header())
        handle.write(rows)
    return path


# CSV header names we accept for each column (ThunderSTORM, ours, and common variants).
_ALIASES = {
    "frame": ("frame",),
    "x": ("x [nm]",),
    "y": ("y [nm]",),
    "sigma": ("sigma [nm]", "sigma1 [nm]"),
    "photons": ("intensity [photon]",),
    "background": ("offset [photon]",),
    "bkgstd": ("bkgstd [photon]",),
    "uncertainty": ("uncertainty [nm]", "uncertainty_xy [nm]"),
    "probability": ("probability",),
    "grid_factor": ("grid_factor",),
}
_REQUIRED = ("frame", "x", "y")
_BLOCK = 65536  # rows converted to numpy at a time


def read_csv(path: str | Path, pixel_size_nm: float, *, max_rows: int = MAX_ROWS) -> Localizations:
    """Read a ThunderSTORM (or our own) CSV back into pixels and 0-based frames.

    The file is streamed (never read whole); a UTF-8 byte-order mark is accepted. Raises
    :class:`CsvFormatError` with one clear message for anything unreadable, including a file that
    holds (or, by its size, would hold) more than ``max_rows`` rows.
    """
    px = check_pixel_size(pixel_size_nm)
    path = Path(path)
    if path.is_dir():
        raise CsvFormatError(f"{path} is a folder, not a CSV file")
    try:
        size = path.stat().st_size
        with open(path, encoding="utf-8-sig", newline="") as handle:
            return _parse(handle, px, str(path), max_rows, size)
    except FileNotFoundError:
        raise CsvFormatError(f"no such file: {path}") from None
    except UnicodeDecodeError as exc:
        raise CsvFormatError(
            f"{path} is not UTF-8 text (byte {exc.start} of a block): not a CSV file"
        ) from None
    except OSError as exc:
        raise CsvFormatError(f"cannot read {path}: {exc.strerror or exc}") from None


def parse_csv(
    text: str, pixel_size_nm: float, source: str = "CSV", *, max_rows: int = MAX_ROWS
) -> Localizations:
    """:func:`read_csv` of a string."""
    px = check_pixel_size(pixel_size_nm)
    if text.startswith("\ufeff"):
        text = text[1:]
    return _parse(io.StringIO(text), px, source, max_rows, None)


def _lines(handle, source: str) -> Iterable[str]:
    """The handle's lines, refusing one longer than MAX_LINE_CHARS (never reads a whole huge line)."""
    while True:
        line = handle.readline(MAX_LINE_CHARS)
        if not line:
            return
        if len(line) >= MAX_LINE_CHARS and not line.endswith(("\n", "\r")):
            raise CsvFormatError(
                f"{source} has a line longer than {MAX_LINE_CHARS:,} characters: not a CSV table"
            )
        yield line


def _parse(handle, px: float, source: str, max_rows: int, size: int | None) -> Localizations:
    reader = csv.reader(_lines(handle, source))
    line_number = 1
    try:
        try:
            header = next(reader)
        except StopIteration:
            raise CsvFormatError(f"{source} is empty") from None
        header = [h.strip().strip('"').strip() for h in header]
        index = {}
        for name, aliases in _ALIASES.items():
            for alias in aliases:
                if alias in header:
                    index[name] = header.index(alias)
                    break
        missing = [f'"{_ALIASES[n][0]}"' for n in _REQUIRED if n not in index]
        if missing:
            raise CsvFormatError(
                f"{source} lacks the column(s) {', '.join(missing)} (ThunderSTORM CSV expected)"
            )
        names, cols = list(index), list(index.values())
        blocks, block, n_rows, row_chars = [], [], 0, 0
        for line_number, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise CsvFormatError(
                    f"{source} line {line_number}: {len(row)} fields, header has {len(header)}"
                )
            block.append([float(row[c]) for c in cols])
            n_rows += 1
            if n_rows <= 1000:
                row_chars += sum(len(cell) + 1 for cell in row)
                if n_rows == 1000 and size is not None:
                    estimate = size / (row_chars / n_rows)
                    if estimate > 1.5 * max_rows:
                        raise CsvFormatError(
                            f"{source} holds about {estimate:,.0f} rows ({size:,} bytes): more than the "
                            f"{max_rows:,} rows this reader takes"
                        )
            if n_rows > max_rows:
                raise CsvFormatError(
                    f"{source} holds more than {max_rows:,} rows: more than this reader takes"
                )
            if len(block) == _BLOCK:
                blocks.append(np.asarray(block, dtype=np.float64))
                block = []
    except csv.Error as exc:
        raise CsvFormatError(f"{source} line {line_number}: not a valid CSV file ({exc})") from None
    except UnicodeDecodeError:
        raise  # read_csv says "not UTF-8 text"
    except ValueError as exc:
        if isinstance(exc, CsvFormatError):
            raise
        raise CsvFormatError(f"{source} line {line_number}: not a number ({exc})") from None
    if block or not blocks:
        blocks.append(np.asarray(block, dtype=np.float64).reshape(-1, len(names)))
    table = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
    arrays = {name: table[:, i] for i, name in enumerate(names)}
    for name in _REQUIRED:
        if not np.all(np.isfinite(arrays[name])):
            raise CsvFormatError(f"{source}: column {_ALIASES[name][0]} holds NaN or infinite values")
    frame = arrays["frame"]
    if len(frame) and (np.any(frame < 1) or np.any(frame > MAX_FRAME) or np.any(frame != np.round(frame))):
        raise CsvFormatError(f"{source}: frames must be whole numbers from 1 to {MAX_FRAME} (1-based)")
    out = {"frame": frame.astype(np.int64) - 1, "x": arrays["x"] / px - 0.5, "y": arrays["y"] / px - 0.5}
    for name in ("sigma", "uncertainty"):
        if name in arrays:
            out[name] = arrays[name] / px
    for name in ("photons", "background", "bkgstd", "probability", "grid_factor"):
        if name in arrays:
            out[name] = arrays[name]
    n = len(frame)
    for name in Localizations.column_names():
        out.setdefault(name, np.full(n, np.nan) if name != "frame" else np.zeros(n, dtype=np.int64))
    return Localizations(**out)
