"""The localization table and its CSV form (CONVENTIONS sections 1 and 3).

In memory, positions are in *pixels* with the napari convention (the centre of pixel
(y, x) is (y, x)) and frames are 0-based. On disk (ThunderSTORM CSV) positions are in nm
from the image's top-left corner, ``x_nm = (x + 0.5) * pixel_size_nm``, frames 1-based.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from .errors import CsvFormatError

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


def _f64(n: int = 0) -> np.ndarray:
    return np.zeros(n, dtype=np.float64)


@dataclass
class Localizations:
    """One row per emitter. Pixels, 0-based frames, photons (see module docstring).

    ``background`` is the local background per pixel (photons), ``bkgstd`` its standard
    deviation, ``uncertainty`` the 1-sigma lateral localization uncertainty (pixels),
    ``grid_factor`` the output grid's cells per input pixel that the row came from
    (1 for an input-resolution map, 2 for 2x super-resolution, 0 for the classical fit).
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
            dtype = np.int64 if f.name == "frame" else np.float64
            value = value.astype(dtype, copy=False).reshape(-1)
            if len(value) != n:
                raise ValueError(f"column {f.name} has {len(value)} rows, frame has {n}")
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


def to_csv(locs: Localizations, path: str | Path, pixel_size_nm: float) -> None:
    """Write ThunderSTORM CSV + our columns, atomically (temporary file, then rename)."""
    path = Path(path)
    px = float(pixel_size_nm)
    columns = [
        np.arange(1, len(locs) + 1),
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
    fd, tmp = tempfile.mkstemp(
        dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.", suffix=".tmp"
    )
    os.chmod(tmp, 0o644)  # mkstemp makes it private; a table is an ordinary file
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            handle.write(",".join(f'"{h}"' for h in THUNDERSTORM_HEADER + EXTRA_HEADER) + "\n")
            rows = (
                np.column_stack([np.asarray(c, dtype=np.float64) for c in columns])
                if len(locs)
                else np.zeros((0, 11))
            )
            for row in rows:
                handle.write(
                    f"{int(row[0])},{int(row[1])}," + ",".join(repr(float(v)) for v in row[2:]) + "\n"
                )
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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


def read_csv(path: str | Path, pixel_size_nm: float) -> Localizations:
    """Read a ThunderSTORM (or our own) CSV back into pixels and 0-based frames.

    Raises :class:`CsvFormatError` with one clear message for anything unreadable.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CsvFormatError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CsvFormatError(f"cannot read {path} as a text CSV file: {exc}") from None
    return parse_csv(text, pixel_size_nm, source=str(path))


def parse_csv(text: str, pixel_size_nm: float, source: str = "CSV") -> Localizations:
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise CsvFormatError(f"{source} is empty") from None
    except csv.Error as exc:
        raise CsvFormatError(f"{source} is not a CSV file: {exc}") from None
    header = [h.strip().strip('"') for h in header]
    index = {}
    for name, aliases in _ALIASES.items():
        for alias in aliases:
            if alias in header:
                index[name] = header.index(alias)
                break
    missing = [f'"{_ALIASES[n][0]}"' for n in _REQUIRED if n not in index]
    if missing:
        raise CsvFormatError(f"{source} lacks the column(s) {', '.join(missing)} (ThunderSTORM CSV expected)")
    values = {name: [] for name in index}
    try:
        for line_number, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise CsvFormatError(
                    f"{source} line {line_number}: {len(row)} fields, header has {len(header)}"
                )
            for name, col in index.items():
                values[name].append(float(row[col]))
    except csv.Error as exc:
        raise CsvFormatError(f"{source} is not a valid CSV file: {exc}") from None
    except ValueError as exc:
        raise CsvFormatError(f"{source} line {line_number}: not a number ({exc})") from None
    arrays = {name: np.asarray(v, dtype=np.float64) for name, v in values.items()}
    for name, arr in arrays.items():
        if name in _REQUIRED and not np.all(np.isfinite(arr)):
            raise CsvFormatError(f"{source}: column {_ALIASES[name][0]} holds NaN or infinite values")
    frame = arrays["frame"]
    if len(frame) and (np.any(frame < 1) or np.any(frame != np.round(frame))):
        raise CsvFormatError(f"{source}: frames must be whole numbers >= 1 (1-based)")
    px = float(pixel_size_nm)
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
