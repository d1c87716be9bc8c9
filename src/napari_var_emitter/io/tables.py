"""Localization tables in either file format, chosen by the file's suffix: ThunderSTORM CSV
(``.csv``, :mod:`.localizations`) or Picasso HDF5 + YAML (``.hdf5``/``.h5``, :mod:`.picasso`)."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .localizations import (
    CSV_SUFFIXES,
    MAX_ROWS,
    PICASSO_SUFFIXES,
    Localizations,
    check_pixel_size,
    read_csv,
    to_csv,
)
from .picasso import read_picasso, to_picasso


def table_format(path: str | Path) -> str:
    """``"csv"`` or ``"picasso"`` from the file's suffix; :class:`InputError` for another one."""
    suffix = Path(path).suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in PICASSO_SUFFIXES:
        return "picasso"
    raise InputError(
        f"unknown localization file type {suffix or '(no suffix)'!r} for {path}: "
        "use .csv (ThunderSTORM) or .hdf5 (Picasso)"
    )


def write_localizations(
    locs: Localizations,
    path: str | Path,
    *,
    pixel_size_nm: float,
    frame_shape: tuple[int, int] | None = None,
    n_frames: int | None = None,
    extra_info: dict | None = None,
) -> list[Path]:
    """Write a table as ThunderSTORM CSV (``.csv``) or Picasso HDF5 + YAML (``.hdf5``, ``.h5``).

    ``frame_shape`` (height, width) and ``n_frames`` describe the movie (Picasso needs them; by
    default they are the smallest that hold every row). ``extra_info`` adds keys to Picasso's
    metadata. Returns the files written (the CSV; or the HDF5 and its YAML). Every file is written
    atomically. Raises :class:`InputError` for an unknown suffix or a table that cannot be written.
    """
    kind = table_format(path)
    if kind == "csv":
        return [to_csv(locs, path, pixel_size_nm)]
    return to_picasso(
        locs,
        path,
        pixel_size_nm=pixel_size_nm,
        frame_shape=frame_shape,
        n_frames=n_frames,
        extra_info=extra_info,
    )


def read_localizations(
    path: str | Path, pixel_size_nm: float | None = None, *, max_rows: int = MAX_ROWS
) -> tuple[Localizations, dict]:
    """Read a ThunderSTORM CSV or a Picasso HDF5 file; return the table and what the file tells.

    ``pixel_size_nm`` converts a CSV's nm to pixels (default 100 nm, docs/CONVENTIONS.md, section 2); a
    Picasso file stores pixels and its own pixel size (its ``Pixelsize``, else ``pixel_size_nm``).
    The dict holds ``format`` ("csv" or "picasso"), ``pixel_size_nm`` and, when the file says,
    ``frame_shape`` (height, width) and ``n_frames``. Raises a :class:`TableFormatError` subclass.
    """
    kind = table_format(path)
    if kind == "csv":
        px = check_pixel_size(100.0 if pixel_size_nm is None else pixel_size_nm)
        return read_csv(path, px, max_rows=max_rows), {"format": "csv", "pixel_size_nm": px}
    locs, info = read_picasso(path, max_rows=max_rows)
    meta = {"format": "picasso", "pixel_size_nm": info.get("pixel_size_nm")}
    if meta["pixel_size_nm"] is None:
        meta["pixel_size_nm"] = check_pixel_size(100.0 if pixel_size_nm is None else pixel_size_nm)
    for key in ("frame_shape", "n_frames"):
        if info.get(key) is not None:
            meta[key] = info[key]
    return locs, meta
