"""napari reader: localization tables (ours and ThunderSTORM's CSV) as Points layers (t, y, x)."""

from __future__ import annotations

import csv
from pathlib import Path

from .localizations import read_csv
from .widgets.layers import DEFAULT_PIXEL_SIZE_NM, locs_to_points, points_kwargs

# Header cells that mark a file as a localization table we read.
_SIGNATURE = ("x [nm]", "y [nm]")


def _header(path: Path) -> list[str] | None:
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            first = handle.readline()
    except (OSError, UnicodeDecodeError):
        return None
    try:
        row = next(csv.reader([first]))
    except (csv.Error, StopIteration):
        return None
    return [cell.strip().strip('"') for cell in row]


def get_reader(path):
    """Return :func:`read_localizations` for a ``.csv`` whose header has ``x [nm]`` and ``y [nm]``
    (ThunderSTORM's and ours), else None so that another reader can try. A file with that header
    but bad rows is ours: reading it raises :class:`~napari_var_emitter.errors.CsvFormatError`."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    path = Path(path)
    if path.suffix.lower() != ".csv" or not path.is_file():
        return None
    header = _header(path)
    if header is None or not all(cell in header for cell in _SIGNATURE):
        return None
    return read_localizations


def read_localizations(path, pixel_size_nm: float = DEFAULT_PIXEL_SIZE_NM):
    """Layer data of one CSV: a Points layer (t, y, x) in pixels, with the table's columns as features."""
    if isinstance(path, (list, tuple)):
        path = path[0]
    path = Path(path)
    locs = read_csv(path, pixel_size_nm)
    data, features = locs_to_points(locs, ndim=3)
    kwargs = points_kwargs(
        path.stem,
        features,
        metadata={"pixel_size_nm": float(pixel_size_nm), "source": str(path)},
    )
    return [(data, kwargs, "points")]
