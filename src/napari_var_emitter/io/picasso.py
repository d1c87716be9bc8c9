"""Picasso's localization files: an HDF5 file with a ``/locs`` table and a YAML sidecar.

The format is the one ``picasso.io.save_locs`` writes and ``picasso.io.load_locs`` reads
(Picasso 0.6 to 0.11): ``/locs`` is a compound (structured) dataset, one row per localization,
``/metadata`` a JSON copy of the metadata, and ``<name>.yaml`` beside it the metadata as a YAML
list of mappings with at least ``Frames``, ``Height``, ``Width`` and ``Pixelsize`` (nm).

Coordinates. Picasso's ``x``, ``y`` are camera pixels, and the centre of pixel (row i, column j)
is (y, x) = (i, j): its spots are cut around integer pixel indices and its Gaussian fits integrate
pixel j over [j - 0.5, j + 0.5] (``picasso.gausslq``, ``picasso.gaussmle``). That is our pixel
convention (docs/CONVENTIONS.md, section 1), so the mapping is the identity::

    x_picasso = x,  y_picasso = y                     (pixels; x_nm = (x + 0.5) * Pixelsize)
    frame_picasso = frame                             (0-based in both)
    photons = photons, bg = background                (photons; bg per pixel)
    sx = sy = sigma, lpx = lpy = uncertainty          (pixels)
    bkgstd, probability, grid_factor                  (our own columns, kept under their names)

Reading a Picasso file, ``sigma`` is ``sx`` where ``sx == sy`` and ``sqrt((sx^2 + sy^2) / 2)``
otherwise, and ``uncertainty`` likewise from ``lpx``, ``lpy``; other Picasso columns are ignored.
Columns are stored as Picasso stores them (``frame`` uint32, the rest float32), so a table whose
values are float32 numbers round-trips exactly; others are rounded to float32 (1e-7 relative).
Columns that are NaN in every row are left out (they read back as NaN).

What Picasso's own loader does differently (``picasso.lib.ensure_sanity``): it drops rows with NaN
in any column, with ``x`` or ``y`` below 0 (the outer half of the first column and row, which our
convention puts in [-0.5, 0)), ``x >= Width``, ``y >= Height``, or negative ``photons``, ``sx``,
``sy``, ``lpx``, ``lpy``. Our reader keeps every row.

Both files are written atomically (a temporary file, then a rename), the HDF5 file first; the
metadata is embedded in it too (``/metadata``, JSON as a fixed-length byte string, which Picasso
reads), and read from the YAML when there is one (as Picasso does). An embedded ``/metadata`` that
is a *variable-length* string (what Picasso itself writes) is not read: the HDF5 library can loop
for ever on a damaged one (a single changed byte did, in our fuzzing), so files without their
YAML open with an unknown pixel size instead.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from ..errors import InputError, PicassoFormatError
from .atomic import atomic_path, write_text
from .localizations import MAX_ROWS, Localizations, check_pixel_size, check_writable

# (Picasso column, dtype, our column): in Picasso's order, then ours.
COLUMNS = (
    ("frame", "<u4", "frame"),
    ("x", "<f4", "x"),
    ("y", "<f4", "y"),
    ("photons", "<f4", "photons"),
    ("sx", "<f4", "sigma"),
    ("sy", "<f4", "sigma"),
    ("bg", "<f4", "background"),
    ("lpx", "<f4", "uncertainty"),
    ("lpy", "<f4", "uncertainty"),
    ("bkgstd", "<f4", "bkgstd"),
    ("probability", "<f4", "probability"),
    ("grid_factor", "<f4", "grid_factor"),
)
_ALWAYS = ("frame", "x", "y")
MAX_YAML_BYTES = 10 << 20
_BLOCK = 1 << 20  # rows read at a time


def yaml_path(path: str | Path) -> Path:
    """The metadata sidecar of a Picasso file: same name, ``.yaml``."""
    return Path(os.path.splitext(str(path))[0] + ".yaml")


def _h5py(error=PicassoFormatError):
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is in the test extras
        raise error("Picasso files need the h5py package: pip install h5py") from None
    return h5py


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("napari-var-emitter")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


# --- writing ------------------------------------------------------------------------------------
def to_picasso(
    locs: Localizations,
    path: str | Path,
    *,
    pixel_size_nm: float,
    frame_shape: tuple[int, int] | None = None,
    n_frames: int | None = None,
    extra_info: dict | None = None,
) -> list[Path]:
    """Write ``path`` (HDF5, ``/locs`` + ``/metadata``) and its ``.yaml``; return both paths.

    ``frame_shape`` (height, width) and ``n_frames`` go into the metadata as ``Height``, ``Width``,
    ``Frames``; by default they are the smallest that hold every row. Raises :class:`InputError`
    (before writing anything) for a table or metadata that cannot be written.
    """
    h5py = _h5py(InputError)
    path = Path(path)
    px = check_pixel_size(pixel_size_nm)
    check_writable(locs)
    n = len(locs)
    last_frame = int(locs.frame.max()) + 1 if n else 1
    if n_frames is None:
        n_frames = last_frame
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < last_frame:
        raise InputError(
            f"n_frames must be a whole number >= {last_frame} (the table's frames), got {n_frames!r}"
        )
    if frame_shape is None:  # pixel j covers [j - 0.5, j + 0.5)
        height = int(np.floor(locs.y.max() + 0.5)) + 1 if n else 1
        width = int(np.floor(locs.x.max() + 0.5)) + 1 if n else 1
        frame_shape = (max(height, 1), max(width, 1))
    try:
        height, width = (int(v) for v in frame_shape)
    except (TypeError, ValueError):
        raise InputError(f"frame_shape must be (height, width), got {frame_shape!r}") from None
    if height < 1 or width < 1:
        raise InputError(f"frame_shape must be positive, got {frame_shape!r}")

    dtype = []
    values = {}
    for name, kind, ours in COLUMNS:
        column = getattr(locs, ours)
        if name not in _ALWAYS and n and np.all(np.isnan(column)):
            continue  # unknown everywhere: left out (Picasso would drop every row with a NaN)
        dtype.append((name, kind))
        values[name] = column
    table = np.zeros(n, dtype=dtype)
    with np.errstate(over="ignore"):
        for name, column in values.items():
            table[name] = column
    if n and not (np.all(np.isfinite(table["x"])) and np.all(np.isfinite(table["y"]))):
        raise InputError("positions are too large for Picasso's float32 columns")

    info = {
        "Generated by": f"napari-var-emitter {_version()}",
        "Frames": int(n_frames),
        "Height": height,
        "Width": width,
        "Pixelsize": px,
    }
    for key, value in (extra_info or {}).items():
        info.setdefault(str(key), value)
    import yaml

    try:
        metadata = json.dumps([info], allow_nan=False)
        text = yaml.safe_dump_all([info], default_flow_style=False)
    except (TypeError, ValueError, yaml.YAMLError) as exc:
        raise InputError(f"the metadata cannot be written: {exc}") from None

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as handle:
            handle.create_dataset("locs", data=table)
            handle.create_dataset("metadata", data=np.bytes_(metadata.encode("utf-8")))
    sidecar = write_text(yaml_path(path), text)
    return [path, sidecar]


# --- reading ------------------------------------------------------------------------------------
def _load_yaml(path: Path, source: str) -> list[dict] | None:
    if not path.is_file():
        return None
    import yaml

    if path.stat().st_size > MAX_YAML_BYTES:
        raise PicassoFormatError(f"{path} is larger than {MAX_YAML_BYTES >> 20} MB: not Picasso metadata")
    try:
        docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PicassoFormatError(f"cannot read the metadata {path}: {first}") from None
    docs = [d for d in docs if d is not None]
    if not all(isinstance(d, dict) for d in docs):
        raise PicassoFormatError(f"the metadata {path} must be YAML mappings (Picasso's info)")
    return docs


def _embedded(handle, source: str) -> list[dict] | None:
    """The embedded JSON metadata, if it is a fixed-length byte string (see the module docstring)."""
    import h5py

    dataset = handle.get("metadata")
    if not isinstance(dataset, h5py.Dataset) or dataset.dtype.kind != "S" or dataset.shape != ():
        return None
    if dataset.dtype.itemsize > MAX_YAML_BYTES:
        return None
    try:
        raw = dataset[()]
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8")
        docs = json.loads(raw)
    except Exception:  # noqa: BLE001 - anything that is not a JSON string dataset
        return None
    if isinstance(docs, dict):
        docs = [docs]
    if not isinstance(docs, list) or not all(isinstance(d, dict) for d in docs):
        return None
    return docs


def _meta_value(docs: list[dict], key: str, source: str, kind: str):
    """Picasso's lookup (the last mapping that has it), checked: a whole number >= 1 or a number > 0."""
    for doc in reversed(docs):
        value = doc.get(key)
        if value is None:
            continue
        ok = (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
            and value > 0
        )
        if kind == "int":
            ok = ok and float(value).is_integer()
        if not ok:
            raise PicassoFormatError(f"{source}: metadata {key} must be a number > 0, got {value!r}")
        return int(value) if kind == "int" else float(value)
    return None


def read_picasso(path: str | Path, *, max_rows: int = MAX_ROWS) -> tuple[Localizations, dict]:
    """Read a Picasso HDF5 localization file (see the module docstring for the mapping).

    Returns the table and a dict with ``pixel_size_nm``, ``frame_shape`` (height, width),
    ``n_frames`` (each None where the metadata lacks it) and ``info`` (the metadata mappings).
    Raises :class:`PicassoFormatError` with one clear message for anything unreadable.
    """
    path = Path(path)
    source = str(path)
    if path.is_dir():
        raise PicassoFormatError(f"{path} is a folder, not a Picasso file")
    if not path.is_file():
        raise PicassoFormatError(f"no such file: {path}")
    h5py = _h5py()
    try:
        handle = h5py.File(path, "r")
    except Exception as exc:  # noqa: BLE001 - h5py raises OSError, but also others on odd bytes
        raise PicassoFormatError(
            f"{path} is not an HDF5 file (truncated or another format): {type(exc).__name__}"
        ) from None
    try:
        with handle:
            dataset = handle.get("locs")
            if not isinstance(dataset, h5py.Dataset):
                raise PicassoFormatError(f"{path} has no 'locs' table: not a Picasso localization file")
            names = dataset.dtype.names or ()
            missing = [c for c in _ALWAYS if c not in names]
            if missing:
                raise PicassoFormatError(f"{path}: the 'locs' table lacks the column(s) {', '.join(missing)}")
            if dataset.ndim != 1:
                raise PicassoFormatError(
                    f"{path}: the 'locs' table must be one-dimensional, got {dataset.shape}"
                )
            n = int(dataset.shape[0])
            if n > max_rows:
                raise PicassoFormatError(
                    f"{path} holds {n:,} rows: more than the {max_rows:,} rows this reader takes"
                )
            for name in names:
                if dataset.dtype[name].kind not in "uif" or dataset.dtype[name].shape != ():
                    raise PicassoFormatError(f"{path}: column {name} is not numeric ({dataset.dtype[name]})")
            wanted = [c for c, _, _ in COLUMNS if c in names]
            columns = {c: np.empty(n, dtype=np.float64) for c in wanted}
            for start in range(0, n, _BLOCK):
                block = dataset[start : start + _BLOCK]
                with np.errstate(all="ignore"):  # odd dtypes (float16, uint64...) cast as they can
                    for c in wanted:
                        columns[c][start : start + len(block)] = block[c]
            docs = _load_yaml(yaml_path(path), source)
            if docs is None:
                docs = _embedded(handle, source) or []
    except PicassoFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file: h5py and numpy raise many kinds
        raise PicassoFormatError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None

    for c in ("x", "y"):
        if not np.all(np.isfinite(columns[c])):
            raise PicassoFormatError(f"{path}: column {c} holds NaN or infinite values")
    frame = columns["frame"]
    if n and (np.any(frame < 0) or np.any(frame >= 2**32 - 1) or np.any(frame != np.round(frame))):
        raise PicassoFormatError(f"{path}: frames must be whole numbers >= 0 (0-based)")

    def pair(a: str, b: str) -> np.ndarray:
        if a in columns and b in columns:
            u, v = columns[a], columns[b]
            with np.errstate(over="ignore", invalid="ignore"):
                return np.where(u == v, u, np.sqrt((u * u + v * v) / 2))
        return columns.get(a, columns.get(b, np.full(n, np.nan)))

    nan = np.full(n, np.nan)
    locs = Localizations(
        frame=frame.astype(np.int64),
        x=columns["x"],
        y=columns["y"],
        photons=columns.get("photons", nan),
        background=columns.get("bg", nan),
        bkgstd=columns.get("bkgstd", nan),
        sigma=pair("sx", "sy"),
        uncertainty=pair("lpx", "lpy"),
        probability=columns.get("probability", nan),
        grid_factor=columns.get("grid_factor", nan),
    )
    height = _meta_value(docs, "Height", source, "int")
    width = _meta_value(docs, "Width", source, "int")
    info = {
        "pixel_size_nm": _meta_value(docs, "Pixelsize", source, "float"),
        "frame_shape": (height, width) if height and width else None,
        "n_frames": _meta_value(docs, "Frames", source, "int"),
        "info": docs,
    }
    return locs, info


def is_picasso_file(path: str | Path) -> bool:
    """True for an HDF5 file with a structured ``locs`` table holding frame, x and y (cheap check)."""
    try:
        import h5py
    except ImportError:  # pragma: no cover
        return False
    try:
        with h5py.File(path, "r") as handle:
            dataset = handle.get("locs")
            names = dataset.dtype.names if isinstance(dataset, h5py.Dataset) else None
            return bool(names) and all(c in names for c in _ALWAYS)
    except Exception:  # noqa: BLE001 - not HDF5, unreadable: not ours to open
        return False
