"""Pure functions from results to napari layer data tuples ``(data, kwargs, layer_type)``.

No Qt here and no napari import: the functions return plain tuples, and :func:`add_or_replace`
only uses the public ``viewer.layers`` API of the viewer it is given.

Geometry (docs/CONVENTIONS.md, section 1): a map with factor ``f = input_size / map_size`` per axis goes
into napari with ``scale = s * f`` and ``translate = t + s * (f - 1) / 2``, where ``s`` and ``t``
are the input layer's own scale and translate. Points keep the input layer's scale/translate, since
their coordinates are the input's pixel coordinates.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..analysis.render import render_gaussians, render_histogram
from ..io.localizations import Localizations

LayerDataTuple = tuple[Any, dict, str]

# Features that Points layers carry: the table's columns (0-based frames, photons), lengths in nm as
# their names say (a user reads them; the table in memory holds pixels).
NM_FEATURES = {"sigma": "sigma_nm", "uncertainty": "uncertainty_nm"}
FEATURE_COLUMNS = tuple(NM_FEATURES.get(n, n) for n in Localizations.column_names() if n not in ("x", "y"))
DEFAULT_PIXEL_SIZE_NM = 100.0
RENDER_FACTOR = 8
RING_SIGMAS = 5.0  # an emitter's ring: this many PSF sigmas across (its spot lies inside)
# Metadata key of every layer a prediction adds (its value: the input layer's name), so that the
# plugin's own outputs (maps, render) are never offered as camera frames to predict on.
OUTPUT_OF = "napari_var_emitter_output_of"
# Above this many rows a Points layer shows a random subsample (napari stays quick to add, slice and
# draw it) and keeps the whole table in ``metadata[TABLE]``: saving and analysis use the whole table.
MAX_POINTS = 200_000
TABLE = "localizations"
SUBSAMPLE_SEED = 0


def is_output_layer(layer) -> bool:
    """Whether ``layer`` is one of the plugin's prediction outputs (a map, a render, emitters)."""
    return OUTPUT_OF in (getattr(layer, "metadata", None) or {})


# --- names ----------------------------------------------------------------------------------
def map_layer_name(source: str, level_name: str) -> str:
    return f"{source} probability {level_name}"


def points_layer_name(source: str) -> str:
    return f"{source} emitters"


def render_layer_name(source: str) -> str:
    return f"{source} super-resolution"


# --- geometry -------------------------------------------------------------------------------
def map_geometry(
    factor: Sequence[float], scale: Sequence[float], translate: Sequence[float]
) -> tuple[list[float], list[float]]:
    """Scale and translate of a map with per-axis ``factor`` (input size / map size)."""
    factor = np.asarray(factor, dtype=float)
    scale = np.asarray(scale, dtype=float)
    translate = np.asarray(translate, dtype=float)
    return list(scale * factor), list(translate + scale * (factor - 1) / 2)


def _yx(values: Sequence[float]) -> list[float]:
    return [float(v) for v in list(values)[-2:]]


# --- localizations <-> points -------------------------------------------------------------
def locs_to_points(
    locs: Localizations, ndim: int = 3, pixel_size_nm: float = DEFAULT_PIXEL_SIZE_NM
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Points data ``(N, 3)`` as (t, y, x) (or ``(N, 2)`` as (y, x)) and the feature columns
    (:data:`FEATURE_COLUMNS`; ``sigma_nm`` and ``uncertainty_nm`` in nm)."""
    if ndim == 3:
        data = np.column_stack([locs.frame.astype(np.float64), locs.y, locs.x])
    elif ndim == 2:
        data = np.column_stack([locs.y, locs.x])
    else:
        raise ValueError(f"points must be 2-D (y, x) or 3-D (t, y, x), not {ndim}-D")
    data = data.reshape(len(locs), ndim)
    columns = [n for n in Localizations.column_names() if n not in ("x", "y")]
    features = {NM_FEATURES.get(n, n): getattr(locs, n) for n in columns}
    for column, feature in NM_FEATURES.items():
        features[feature] = getattr(locs, column) * float(pixel_size_nm)
    return data, features


def points_to_locs(data, features=None, pixel_size_nm: float = DEFAULT_PIXEL_SIZE_NM) -> Localizations:
    """Inverse of :func:`locs_to_points`: positions from the data, the rest from the features.

    ``data`` is ``(N, 2)`` (y, x) or ``(N, D)`` with (t, y, x) in its last three columns; the frame is
    the rounded t coordinate (or the ``frame`` feature for 2-D points, else 0). ``sigma_nm`` and
    ``uncertainty_nm`` become pixels of ``pixel_size_nm``. Missing features are NaN.
    """
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2 or data.shape[1] < 2:
        raise ValueError(f"points data must be (N, 2) or (N, 3), got shape {data.shape}")
    n = len(data)
    columns: dict[str, np.ndarray] = {}
    if features is not None:
        for name in Localizations.column_names():
            feature = NM_FEATURES.get(name, name)
            if feature in features:
                columns[name] = np.asarray(features[feature], dtype=np.float64).reshape(-1)
                if feature != name:
                    columns[name] = columns[name] / float(pixel_size_nm)
    if data.shape[1] >= 3:
        columns["frame"] = np.round(data[:, -3])
    frame = columns.get("frame", np.zeros(n))
    out = {"frame": np.asarray(np.nan_to_num(frame), dtype=np.int64), "y": data[:, -2], "x": data[:, -1]}
    for name in Localizations.column_names():
        if name not in out:
            out[name] = columns.get(name, np.full(n, np.nan))
    return Localizations(**out)


def points_kwargs(name: str, features: dict, size: float = 4.8, **extra) -> dict:
    """Layer keyword arguments shared by every Points layer we add: hollow circles of ``size``
    pixels across (the spot they mark stays visible), their outline coloured by probability when the
    layer has one (viridis, 0 to 1), shown only in their own frame."""
    kwargs = {"name": name, "features": features, "size": size, "face_color": "transparent"}
    kwargs["border_width"] = 0.12  # of the size: a thin outline
    probability = np.asarray(features.get("probability", []), dtype=float)
    if len(probability) and np.isfinite(probability).any():
        kwargs.update(
            border_color="probability", border_colormap="viridis", border_contrast_limits=(0.0, 1.0)
        )
    else:
        kwargs.update(border_color="magenta")
    kwargs.update(extra)
    return kwargs


def shown_rows(n: int, limit: int = MAX_POINTS, seed: int = SUBSAMPLE_SEED) -> np.ndarray | None:
    """The rows a layer of ``n`` rows shows: None (all of them) up to ``limit``, else ``limit`` rows
    drawn at random (the same ones for the same ``n``), in the table's order."""
    if n <= limit:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def subsample_note(shown: int, total: int) -> str:
    return (
        f"showing a random {shown:,} of {total:,} localizations and their render; the whole table is "
        "kept for saving and analysis"
    )


def table_layer(
    locs: Localizations,
    name: str,
    *,
    pixel_size_nm: float = DEFAULT_PIXEL_SIZE_NM,
    ndim: int = 3,
    metadata: dict | None = None,
    limit: int = MAX_POINTS,
    **extra,
) -> LayerDataTuple:
    """The Points layer of a table (:func:`locs_to_points`, :func:`points_kwargs`), with
    ``metadata["pixel_size_nm"]``. Above ``limit`` rows it shows a random subsample of ``limit`` rows
    and keeps the whole table in ``metadata[TABLE]`` (``metadata["n_localizations"]`` rows)."""
    rows = shown_rows(len(locs), limit)
    shown = locs if rows is None else locs.subset(rows)
    data, features = locs_to_points(shown, ndim, pixel_size_nm)
    meta = {**(metadata or {}), "pixel_size_nm": float(pixel_size_nm)}
    meta.pop(TABLE, None)
    meta.pop("n_localizations", None)
    if rows is not None:
        meta.update({TABLE: locs, "n_localizations": len(locs)})
    kwargs = points_kwargs(name, features, size=ring_size(shown), metadata=meta, **extra)
    return data, kwargs, "points"


def ring_size(locs: Localizations, default_sigma_px: float = 1.2) -> float:
    """Ring diameter in pixels for these localizations: RING_SIGMAS of their PSF sigma."""
    sigma = locs.sigma[np.isfinite(locs.sigma)] if len(locs) else np.zeros(0)
    return RING_SIGMAS * float(np.median(sigma) if len(sigma) else default_sigma_px)


# --- prediction results -> layers --------------------------------------------------------
def map_layer(
    pmap,
    source: str,
    input_scale: Sequence[float],
    input_translate: Sequence[float],
    *,
    ndim: int = 3,
    frame_start: int = 0,
    visible: bool = True,
) -> LayerDataTuple:
    """Image layer of one ``ProbabilityMap`` (``data`` (T, h, w), ``factor`` (fy, fx)), additive over
    the movie so that both stay readable.

    For a 3-D input, the map's first axis is the predicted frames, starting at ``frame_start``.
    """
    data = np.asarray(pmap.data, dtype=np.float32)
    scale_yx, translate_yx = map_geometry(pmap.factor, _yx(input_scale), _yx(input_translate))
    if ndim == 3:
        st, tt = float(input_scale[0]), float(input_translate[0])
        scale = [st, *scale_yx]
        translate = [tt + st * frame_start, *translate_yx]
    else:
        data = data.reshape(data.shape[-2:]) if data.ndim == 3 and data.shape[0] == 1 else data
        scale, translate = scale_yx, translate_yx
    kwargs = {
        "name": map_layer_name(source, pmap.name),
        "scale": scale,
        "translate": translate,
        "colormap": "magma",
        "contrast_limits": (0.0, 1.0),
        "blending": "additive",
        "opacity": 0.7,
        "visible": visible,
        "metadata": {"factor": tuple(float(f) for f in pmap.factor), "level": pmap.level, OUTPUT_OF: source},
    }
    return data, kwargs, "image"


def points_layer(
    locs: Localizations,
    source: str,
    input_scale: Sequence[float],
    input_translate: Sequence[float],
    *,
    ndim: int = 3,
    pixel_size_nm: float = DEFAULT_PIXEL_SIZE_NM,
    frame_shape: tuple[int, int] | None = None,
) -> LayerDataTuple:
    metadata = {OUTPUT_OF: source}
    if frame_shape is not None:
        metadata["frame_shape"] = tuple(int(v) for v in frame_shape)
    return table_layer(
        locs,
        points_layer_name(source),
        pixel_size_nm=pixel_size_nm,
        ndim=ndim,
        scale=[float(v) for v in input_scale][-ndim:],
        translate=[float(v) for v in input_translate][-ndim:],
        metadata=metadata,
    )


def render_layer(
    locs: Localizations,
    source: str,
    frame_shape: tuple[int, int],
    input_scale: Sequence[float],
    input_translate: Sequence[float],
    *,
    factor: int = RENDER_FACTOR,
    name: str | None = None,
) -> LayerDataTuple:
    """A 2-D super-resolution image of all localizations, ``factor`` times finer than the input.
    Up to :data:`MAX_POINTS` rows: Gaussians of their uncertainty, added hidden (it would cover the
    movie; one click shows it). Above: a histogram (fast for millions), shown, as the points are
    only a subsample then."""
    many = len(locs) > MAX_POINTS
    image = (render_histogram if many else render_gaussians)(locs, frame_shape, factor)
    scale, translate = map_geometry((1.0 / factor, 1.0 / factor), _yx(input_scale), _yx(input_translate))
    kwargs = {
        "name": name or render_layer_name(source),
        "scale": scale,
        "translate": translate,
        "colormap": "inferno",
        "contrast_limits": render_limits(image),
        "visible": many,
        "metadata": {"render_factor": int(factor), OUTPUT_OF: source},
    }
    return image, kwargs, "image"


def render_limits(image: np.ndarray) -> tuple[float, float]:
    """Contrast limits of a render: 0 to the 99.5th percentile of its lit pixels."""
    lit = image[image > 0]
    return 0.0, max(float(np.percentile(lit, 99.5)) if len(lit) else 1.0, 1e-6)


def result_layers(
    result,
    source: str,
    frame_shape: tuple[int, int],
    input_scale: Sequence[float],
    input_translate: Sequence[float],
    *,
    ndim: int = 3,
    frame_start: int = 0,
    pixel_size_nm: float = DEFAULT_PIXEL_SIZE_NM,
    render_factor: int = RENDER_FACTOR,
) -> list[LayerDataTuple]:
    """All layers of a ``PredictionResult``, bottom to top: its maps (coarse to fine; the finest one
    shown, the others ready to be), the render (hidden), the points."""
    levels = sorted(result.maps)
    layers = [
        map_layer(
            result.maps[level],
            source,
            input_scale,
            input_translate,
            ndim=ndim,
            frame_start=frame_start,
            visible=level == levels[-1],
        )
        for level in levels
    ]
    if render_factor:
        layers.append(
            render_layer(
                result.localizations, source, frame_shape, input_scale, input_translate, factor=render_factor
            )
        )
    layers.append(
        points_layer(
            result.localizations,
            source,
            input_scale,
            input_translate,
            ndim=ndim,
            pixel_size_nm=pixel_size_nm,
            frame_shape=frame_shape,
        )
    )
    return layers


# --- viewer -----------------------------------------------------------------------------
def place_above(viewer, source: str, names: Sequence[str]) -> None:
    """Put the layers ``names`` just above the layer ``source``, in this order (bottom to top):
    the same order whatever was added, removed or moved before. Without ``source``, on top."""
    present = [name for name in names if name in viewer.layers]
    if source not in viewer.layers:
        for name in present:  # each to the top, in order
            viewer.layers.move(viewer.layers.index(name), len(viewer.layers))
        return
    anchor = source
    for name in present:
        current, after = viewer.layers.index(name), viewer.layers.index(anchor) + 1
        if current != after:
            viewer.layers.move(current, after)  # indices of the list before the move (napari)
        anchor = name


def add_or_replace(viewer, layer_data: LayerDataTuple):
    """Add a layer; a layer of the same name is replaced at the same place in the layer list."""
    data, kwargs, layer_type = layer_data
    name = kwargs["name"]
    index = None
    if name in viewer.layers:
        old = viewer.layers[name]
        index = viewer.layers.index(old)
        viewer.layers.remove(old)
    new = getattr(viewer, f"add_{layer_type}")(data, **kwargs)
    if index is not None:
        viewer.layers.move(viewer.layers.index(new), index)
    return new
