"""napari reader: localization tables as Points layers (t, y, x).

Opens ThunderSTORM CSV (ours and ThunderSTORM's: a header with ``x [nm]`` and ``y [nm]``) and
Picasso HDF5 files (``.hdf5``/``.h5`` with a structured ``locs`` table; pixel size from its
metadata). Other files are declined (None) so that another reader can try them. A table of more
than :data:`.layers.MAX_POINTS` rows opens as its render (a histogram, shown) and a random subsample
of its points, the whole table kept in the layer's metadata for saving and analysis.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..io.localizations import CSV_SUFFIXES, PICASSO_SUFFIXES
from ..io.tables import read_localizations as _read_table
from .layers import DEFAULT_PIXEL_SIZE_NM, MAX_POINTS, render_layer, subsample_note, table_layer

RENDER_NM = 20.0  # the render of a large table: pixels of about this size
MAX_RENDER_SIDE = 4096  # and at most this many per side

# Header cells that mark a file as a localization table we read.
_SIGNATURE = ("x [nm]", "y [nm]")


def _header(path: Path) -> list[str] | None:
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            first = handle.readline(1 << 16)
    except (OSError, UnicodeDecodeError):
        return None
    try:
        row = next(csv.reader([first]))
    except (csv.Error, StopIteration):
        return None
    return [cell.strip().strip('"').strip() for cell in row]


def get_reader(path):
    """Return :func:`read_localizations` for a ``.csv`` whose header has ``x [nm]`` and ``y [nm]``
    (ThunderSTORM's and ours) or a Picasso ``.hdf5``/``.h5`` file, else None so that another reader
    can try. A file that looks like ours but has bad rows is ours: reading it raises a
    :class:`~napari_var_emitter.errors.TableFormatError`."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file() or suffix not in CSV_SUFFIXES + PICASSO_SUFFIXES:
        return None
    if suffix in PICASSO_SUFFIXES:
        from ..io.picasso import is_picasso_file

        return read_localizations if is_picasso_file(path) else None
    header = _header(path)
    if header is None or not all(cell in header for cell in _SIGNATURE):
        return None
    return read_localizations


def read_localizations(path, pixel_size_nm: float | None = None):
    """Layer data of one table: a Points layer (t, y, x) in pixels, with the table's columns as
    features. ``pixel_size_nm`` converts a CSV's nm (default 100 nm); Picasso files carry theirs."""
    if isinstance(path, (list, tuple)):
        path = path[0]
    path = Path(path)
    locs, meta = _read_table(path, DEFAULT_PIXEL_SIZE_NM if pixel_size_nm is None else pixel_size_nm)
    pixel_size_nm = float(meta["pixel_size_nm"])
    metadata = {"source": str(path), "format": meta["format"]}
    for key in ("frame_shape", "n_frames"):
        if key in meta:
            metadata[key] = meta[key]
    points = table_layer(locs, path.stem, pixel_size_nm=pixel_size_nm, metadata=metadata)
    if len(locs) <= MAX_POINTS:
        return [points]
    from napari.utils.notifications import show_info

    from .layer_tables import frame_shape_of

    shape = frame_shape_of(metadata, locs)
    factor = int(max(1, min(round(pixel_size_nm / RENDER_NM), MAX_RENDER_SIDE // max(shape))))
    render = render_layer(
        locs, path.stem, shape, (1.0, 1.0), (0.0, 0.0), factor=factor, name=f"{path.stem} render"
    )
    render[1]["metadata"]["render_pixel_nm"] = pixel_size_nm / factor
    show_info(f"{path.name}: {subsample_note(len(points[0]), len(locs))}")
    return [render, points]
