"""The localization table behind a Points layer, and the layers made from it ("filtered",
"drift-corrected").

A layer holds its whole table in its points and features, or, above :data:`.layers.MAX_POINTS`
rows, shows a subsample and keeps the whole table in ``metadata[TABLE]``: :func:`table_of` gives
the whole table either way, and :func:`derived_layer` makes a new layer of a new table the same way.
No Qt here.
"""

from __future__ import annotations

import math

import numpy as np

from ..io.localizations import Localizations
from .layers import (
    DEFAULT_PIXEL_SIZE_NM,
    MAX_POINTS,
    TABLE,
    points_kwargs,
    points_to_locs,
    table_layer,
)

# metadata carried from a layer to the layers made from it
CARRIED = ("pixel_size_nm", "frame_shape", "n_frames", "source", "format")


def pixel_size_of(layer) -> float:
    """The layer's ``metadata["pixel_size_nm"]``, else 100 nm."""
    value = (getattr(layer, "metadata", None) or {}).get("pixel_size_nm")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return DEFAULT_PIXEL_SIZE_NM
    return value if math.isfinite(value) and value > 0 else DEFAULT_PIXEL_SIZE_NM


def is_subsampled(layer) -> bool:
    return isinstance((getattr(layer, "metadata", None) or {}).get(TABLE), Localizations)


def table_of(layer) -> Localizations:
    """The whole table of a Points layer: ``metadata[TABLE]`` where it shows a subsample, else its
    points (t, y, x) and features (:func:`.layers.points_to_locs`)."""
    if is_subsampled(layer):
        return layer.metadata[TABLE]
    features = {name: layer.features[name].to_numpy() for name in layer.features.columns}
    return points_to_locs(layer.data, features, pixel_size_of(layer))


def n_localizations(layer) -> int:
    return len(layer.metadata[TABLE]) if is_subsampled(layer) else len(layer.data)


def frame_shape_of(metadata: dict, locs: Localizations) -> tuple[int, int]:
    """The camera frame (height, width) in pixels: a layer's ``metadata["frame_shape"]``, else
    the smallest frame from pixel 0 that holds every localization."""
    shape = (metadata or {}).get("frame_shape")
    if shape is not None and len(shape) == 2:
        return int(shape[0]), int(shape[1])
    finite = np.isfinite(locs.x) & np.isfinite(locs.y)
    if not finite.any():
        return 1, 1
    return (
        max(int(math.ceil(float(locs.y[finite].max()) + 0.5)), 1),
        max(int(math.ceil(float(locs.x[finite].max()) + 0.5)), 1),
    )


def n_frames_of(metadata: dict, locs: Localizations) -> int | None:
    """The movie's length: a layer's ``metadata["n_frames"]`` where it holds every row, else None
    (the last frame with a localization + 1)."""
    n = (metadata or {}).get("n_frames")
    if n is None or not len(locs) or int(n) <= int(locs.frame.max()):
        return None
    return int(n)


def derived_layer(layer, locs: Localizations, name: str, rows: np.ndarray | None = None):
    """A Points layer ``name`` of the table ``locs`` made from ``layer``'s table: its ``rows`` (a
    boolean mask or indices; None for every row, in order) with the positions of ``locs``.

    It keeps the layer's geometry and metadata (pixel size, frame shape). A layer that shows every
    row keeps every feature column, including columns the table does not know; a large table
    becomes a subsample with the whole table kept (:func:`.layers.table_layer`)."""
    metadata = {key: layer.metadata[key] for key in CARRIED if key in layer.metadata}
    geometry = {"scale": list(layer.scale), "translate": list(layer.translate)}
    if is_subsampled(layer) or len(locs) > MAX_POINTS:
        return table_layer(
            locs,
            name,
            pixel_size_nm=pixel_size_of(layer),
            ndim=layer.ndim,
            metadata=metadata,
            **geometry,
        )
    index = slice(None) if rows is None else np.asarray(rows)
    data = np.array(layer.data[index], dtype=np.float64).reshape(len(locs), layer.ndim)
    data[:, -2], data[:, -1] = locs.y, locs.x
    features = layer.features.iloc[index].reset_index(drop=True)
    size = np.asarray(layer.size, dtype=float)
    kwargs = points_kwargs(
        name,
        features,
        size=float(np.median(size)) if size.size else 4.8,
        metadata=metadata,
        **geometry,
    )
    return data, kwargs, "points"
