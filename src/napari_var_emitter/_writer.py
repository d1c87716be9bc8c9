"""napari writer: a Points layer as a localization table (CONVENTIONS section 3 CSV)."""

from __future__ import annotations

from pathlib import Path

from .localizations import to_csv
from .widgets.layers import DEFAULT_PIXEL_SIZE_NM, points_to_locs


def write_points(path: str, data, meta: dict) -> list[str]:
    """Write the points (t, y, x) in pixels as ThunderSTORM CSV: nm, 1-based frames.

    The pixel size is the layer's ``metadata["pixel_size_nm"]`` when present, else 100 nm; the
    other columns come from the layer's features (missing ones are written as NaN).
    """
    metadata = meta.get("metadata") or {}
    pixel_size_nm = float(metadata.get("pixel_size_nm", DEFAULT_PIXEL_SIZE_NM))
    locs = points_to_locs(data, meta.get("features"))
    path = Path(path)
    if path.suffix.lower() != ".csv":
        path = path.with_suffix(".csv")
    to_csv(locs, path, pixel_size_nm)
    return [str(path)]
