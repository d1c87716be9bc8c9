"""Camera frames in the formats microscopes write, read lazily, and what their files say about the
camera.

- TIFF, OME-TIFF and BigTIFF: :mod:`.stream` and :mod:`.frames` (tifffile).
- Zarr (a ``(T, Y, X)`` array in a directory store, or a group holding one, as OME-Zarr does):
  the ``zarr`` package.
- Nikon ND2: the ``nd2`` package; Zeiss CZI: the ``pylibCZIrw`` package.

These packages are the ``formats`` extra (``pip install "napari-var-emitter[formats]"``); a file
that needs a missing one is refused with one line that says which. Each stack reads only the frames
that are indexed (:class:`.stack.LazyStack`). :func:`frames_metadata` reads the pixel size (and,
where a file records them, camera values) from the file's header, without reading pixels.
"""

from __future__ import annotations

import importlib
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ..errors import InputError
from .stack import LazyStack, check_frame_shape

FORMATS_EXTRA = 'pip install "napari-var-emitter[formats]"'
PACKAGES = {"zarr": "zarr", "nd2": "nd2", "czi": "pylibCZIrw"}
ZARR_MARKERS = (".zarray", ".zgroup", "zarr.json")
# length units of OME and OME-Zarr -> nm
UNITS_NM = {
    "nm": 1.0,
    "nanometer": 1.0,
    "µm": 1e3,
    "um": 1e3,
    "micron": 1e3,
    "micrometer": 1e3,
    "mm": 1e6,
    "millimeter": 1e6,
    "m": 1e9,
    "meter": 1e9,
}


def frames_format(path: str | Path) -> str:
    """``"zarr"``, ``"nd2"``, ``"czi"`` or ``"tiff"`` (anything else: tifffile says what it is)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".nd2", ".czi"):
        return suffix[1:]
    if suffix == ".zarr" or (path.is_dir() and any((path / m).exists() for m in ZARR_MARKERS)):
        return "zarr"
    return "tiff"


def _package(kind: str, path: Path):
    name = PACKAGES[kind]
    try:
        return importlib.import_module("pylibCZIrw.czi" if kind == "czi" else name)
    except ImportError:
        raise InputError(
            f"reading {path.name} needs the {name} package, which is not installed: {FORMATS_EXTRA}"
        ) from None


def _frames_of(shape, sizes: dict[str, int], path: Path) -> int:
    """The number of frames of a stack whose axes other than Y and X are ``sizes``: one of them may
    be longer than 1 (time, or z, or positions), not two (say, time and channels)."""
    long = {axis: n for axis, n in sizes.items() if n > 1}
    if len(long) > 1:
        axes = ", ".join(f"{axis}={n}" for axis, n in long.items())
        raise InputError(
            f"{path.name} has {axes}: expected one stack of frames (T, Y, X); save one channel, "
            "position or plane per file"
        )
    n = next(iter(long.values()), 1)
    check_frame_shape((n, *shape), min_size=1, name=str(path))
    return n


class ZarrStack(LazyStack):
    """A Zarr array ``(..., Y, X)`` whose leading axes hold at most one longer than 1."""

    def __init__(self, path: Path, array) -> None:
        self.path, self._array = path, array
        lead = tuple(int(n) for n in array.shape[:-2])
        n = _frames_of(array.shape[-2:], {str(k): v for k, v in enumerate(lead)}, path)
        self._lead, self._axis = len(lead), next((k for k, v in enumerate(lead) if v > 1), None)
        self.shape = (n, *(int(v) for v in array.shape[-2:]))
        self.dtype = np.dtype(array.dtype)

    def _read(self, a: int, b: int) -> np.ndarray:
        key = tuple(slice(a, b) if k == self._axis else 0 for k in range(self._lead))
        return np.asarray(self._array[key]).reshape(b - a, *self.shape[1:])

    def close(self) -> None:
        pass


def _zarr_array(path: Path):
    """The array of a Zarr store: the store's array, or a group's first-level (``"0"`` for OME-Zarr)."""
    zarr = _package("zarr", path)
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # noqa: BLE001 - zarr raises many kinds for a store it cannot read
        raise InputError(f"cannot read {path} as a Zarr store: {' '.join(str(exc).split())}") from None
    if hasattr(node, "shape"):
        return node, dict(node.attrs), {}
    arrays = dict(node.arrays()) if hasattr(node, "arrays") else {}
    if not arrays:
        raise InputError(f"{path} is a Zarr group without an array")
    name = "0" if "0" in arrays else sorted(arrays)[0]
    array = arrays[name]
    return array, dict(node.attrs), dict(array.attrs)


class ND2Stack(LazyStack):
    """A Nikon ND2 file, one frame per sequence index (``ND2File.read_frame``)."""

    def __init__(self, path: Path) -> None:
        nd2 = _package("nd2", path)
        self.path = path
        try:
            self._file = nd2.ND2File(str(path))
        except Exception as exc:  # noqa: BLE001 - nd2 raises many kinds for a damaged file
            raise InputError(f"cannot read {path} as an ND2 file: {' '.join(str(exc).split())}") from None
        sizes = {k: int(v) for k, v in self._file.sizes.items()}
        if self._file.is_rgb or sizes.get("S", 1) > 1:
            self._file.close()
            raise InputError(f"{path.name} is an RGB image; expected grayscale camera frames (T, Y, X)")
        try:
            n = _frames_of((sizes["Y"], sizes["X"]), {k: v for k, v in sizes.items() if k not in "YX"}, path)
        except InputError:
            self._file.close()
            raise
        self.shape = (n, sizes["Y"], sizes["X"])
        self.dtype = np.dtype(self._file.dtype)

    def _read(self, a: int, b: int) -> np.ndarray:
        out = np.empty((b - a, *self.shape[1:]), self.dtype)
        for k, i in enumerate(range(a, b)):
            out[k] = np.asarray(self._file.read_frame(i)).reshape(self.shape[1:])
        return out

    def close(self) -> None:
        self._file.close()


class CziStack(LazyStack):
    """A Zeiss CZI file, one frame per T (or Z) plane of one channel and scene (``pylibCZIrw``)."""

    def __init__(self, path: Path) -> None:
        pyczi = _package("czi", path)
        self.path = path
        try:
            self._doc = pyczi.CziReader(str(path))
            box = self._doc.total_bounding_box
            self._rect = self._doc.total_bounding_rectangle
            pixel_type = self._doc.pixel_types[0]
        except Exception as exc:  # noqa: BLE001 - libCZI raises many kinds for a damaged file
            raise InputError(f"cannot read {path} as a CZI file: {' '.join(str(exc).split())}") from None
        if not pixel_type.startswith("Gray"):
            self._doc.close()
            raise InputError(f"{path.name} holds {pixel_type} pixels; expected grayscale camera frames")
        lead = {k: int(stop - start) for k, (start, stop) in box.items() if k not in "XY"}
        try:
            n = _frames_of((self._rect.h, self._rect.w), lead, path)
        except InputError:
            self._doc.close()
            raise
        self._axis = next((k for k, v in lead.items() if v > 1), "T")
        self._start = {k: int(start) for k, (start, _) in box.items() if k not in "XY"}
        self.shape = (n, int(self._rect.h), int(self._rect.w))
        self.dtype = np.dtype({"Gray8": np.uint8, "Gray16": np.uint16, "Gray32Float": np.float32}[pixel_type])

    def _read(self, a: int, b: int) -> np.ndarray:
        out = np.empty((b - a, *self.shape[1:]), self.dtype)
        for k, i in enumerate(range(a, b)):
            plane = {**self._start, self._axis: self._start.get(self._axis, 0) + i}
            frame = self._doc.read(plane=plane, roi=self._rect)
            out[k] = np.asarray(frame).reshape(self.shape[1:])
        return out

    def close(self) -> None:
        self._doc.close()


def open_acquisition(path: str | Path) -> LazyStack:
    """A lazy ``(T, Y, X)`` stack of a Zarr store, an ND2 or a CZI file (:func:`frames_format`)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such file: {path}")
    kind = frames_format(path)
    if kind == "zarr":
        return ZarrStack(path, _zarr_array(path)[0])
    if kind == "nd2":
        return ND2Stack(path)
    if kind == "czi":
        return CziStack(path)
    raise InputError(f"{path} is a TIFF file: open it with open_frames")


# --- metadata -------------------------------------------------------------------------------
def frames_metadata(path: str | Path) -> dict:
    """What the file says about the camera, in docs/CONVENTIONS.md section 2 names: at least
    ``pixel_size_nm`` where the file records it (OME-TIFF ``PhysicalSizeX``, an ImageJ TIFF's
    resolution, an ND2's or CZI's calibration, a Zarr ``pixel_size_nm`` attribute or OME-Zarr
    scale), and camera values where it records them (a Zarr ``camera`` attribute; OME's EM
    ``AmplificationGain``). Empty where it records none; never reads pixels."""
    path = Path(path)
    if not path.exists():
        return {}
    kind = frames_format(path)
    readers = {"tiff": _tiff_metadata, "zarr": _zarr_metadata, "nd2": _nd2_metadata, "czi": _czi_metadata}
    try:
        found = readers[kind](path)
    except Exception:  # noqa: BLE001 - metadata we cannot parse is metadata we do not use
        return {}
    return {k: float(v) for k, v in found.items() if v is not None and math.isfinite(v) and v > 0}


def _tiff_metadata(path: Path) -> dict:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if tif.ome_metadata:
            return _ome_metadata(tif.ome_metadata)
        if tif.imagej_metadata and tif.pages:
            unit = str(tif.imagej_metadata.get("unit", "")).replace("\\u00B5", "µ").lower()
            tag = tif.pages[0].tags.get("XResolution")
            if unit in UNITS_NM and tag is not None:
                numerator, denominator = tag.value
                if numerator > 0:
                    return {"pixel_size_nm": denominator / numerator * UNITS_NM[unit]}
    return {}


def _ome_metadata(xml: str) -> dict:
    root = ET.fromstring(xml)
    found = {}
    for element in root.iter():
        tag = element.tag.rsplit("}", 1)[-1]
        if tag == "Pixels" and "pixel_size_nm" not in found and "PhysicalSizeX" in element.attrib:
            unit = element.attrib.get("PhysicalSizeXUnit", "µm")
            if unit in UNITS_NM:
                found["pixel_size_nm"] = float(element.attrib["PhysicalSizeX"]) * UNITS_NM[unit]
        if tag == "Detector" and "AmplificationGain" in element.attrib:
            found.setdefault("em_gain", float(element.attrib["AmplificationGain"]))
    return found


def _zarr_metadata(path: Path) -> dict:
    from ..camera import CAMERA_FIELDS

    array, group_attrs, array_attrs = _zarr_array(path)
    attrs = {**group_attrs, **array_attrs, **dict(array.attrs)}
    found = {}
    camera = attrs.get("camera")
    if isinstance(camera, dict):
        found.update({k: float(v) for k, v in camera.items() if k in CAMERA_FIELDS})
    if "pixel_size_nm" in attrs:
        found["pixel_size_nm"] = float(attrs["pixel_size_nm"])
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if "pixel_size_nm" not in found and multiscales:  # OME-Zarr: the first level's scale of x
        scene = multiscales[0]
        unit = scene["axes"][-1].get("unit", "") if isinstance(scene["axes"][-1], dict) else ""
        for transform in scene["datasets"][0].get("coordinateTransformations", []):
            if transform.get("type") == "scale" and unit in UNITS_NM:
                found["pixel_size_nm"] = float(transform["scale"][-1]) * UNITS_NM[unit]
    return found


def _nd2_metadata(path: Path) -> dict:
    nd2 = _package("nd2", path)
    with nd2.ND2File(str(path)) as handle:
        return {"pixel_size_nm": float(handle.voxel_size().x) * 1e3}  # the calibration is in um


def _czi_metadata(path: Path) -> dict:
    pyczi = _package("czi", path)
    with pyczi.open_czi(str(path)) as doc:
        items = doc.metadata["ImageDocument"]["Metadata"]["Scaling"]["Items"]["Distance"]
    for item in items if isinstance(items, list) else [items]:
        if item.get("@Id") == "X":
            return {"pixel_size_nm": float(item["Value"]) * 1e9}  # CZI scaling is in metres
    return {}
