"""napari writer: a Points layer as a localization table.

``.csv``: ThunderSTORM CSV (docs/CONVENTIONS.md, section 3: nm, 1-based frames). ``.hdf5``/``.h5``: Picasso's
HDF5 + YAML (pixels, 0-based frames; see :mod:`.picasso_io`). Another suffix becomes ``.csv``.
"""

from __future__ import annotations

from pathlib import Path

from ..io.localizations import CSV_SUFFIXES, PICASSO_SUFFIXES, Localizations
from ..io.tables import write_localizations
from .layers import DEFAULT_PIXEL_SIZE_NM, TABLE, points_to_locs


def write_points(path: str, data, meta: dict) -> list[str]:
    """Write the points (t, y, x) in pixels as a localization table; return the files written.

    The pixel size is the layer's ``metadata["pixel_size_nm"]`` when present, else 100 nm; the
    other columns come from the layer's features (missing ones are written as NaN). A layer that
    shows a subsample of a large table writes the whole table (``metadata["localizations"]``). For
    Picasso, the layer's ``metadata["frame_shape"]`` and ``["n_frames"]`` are used when present.
    """
    metadata = meta.get("metadata") or {}
    pixel_size_nm = float(metadata.get("pixel_size_nm", DEFAULT_PIXEL_SIZE_NM))
    table = metadata.get(TABLE)
    if isinstance(table, Localizations):
        locs = table
    else:
        locs = points_to_locs(data, meta.get("features"), pixel_size_nm)
    path = Path(path)
    if path.suffix.lower() not in CSV_SUFFIXES + PICASSO_SUFFIXES:
        path = path.with_suffix(".csv")
    extra = {}
    if path.suffix.lower() in PICASSO_SUFFIXES:
        extra = {k: metadata[k] for k in ("frame_shape", "n_frames") if metadata.get(k) is not None}
    written = write_localizations(locs, path, pixel_size_nm=pixel_size_nm, **extra)
    return [str(p) for p in written]
