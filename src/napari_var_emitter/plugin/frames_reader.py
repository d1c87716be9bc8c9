"""napari reader: camera frames that napari does not read (Nikon ND2, Zeiss CZI), and Zarr stores
with the pixel size they record.

The frames open as an Image layer ``(T, Y, X)`` backed by a dask array over the lazy stack of
:mod:`..io.formats`: napari reads the frames it shows, "Predict emitters" the frames it predicts,
chunk by chunk. The file's pixel size and camera values go to the layer's metadata, where the
Predict widget takes its camera fields from. Other paths are declined (None).
"""

from __future__ import annotations

from pathlib import Path

from ..io.formats import frames_format, frames_metadata, open_acquisition


def get_frames_reader(path):
    """:func:`read_frames_layer` for an ``.nd2``, a ``.czi`` or a Zarr store, else None."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    path = Path(path)
    if not path.exists() or frames_format(path) == "tiff":
        return None
    return read_frames_layer


def read_frames_layer(path):
    """One Image layer of the frames, lazily, with ``metadata["pixel_size_nm"]`` and
    ``metadata["camera"]`` where the file records them. A missing package raises
    :class:`~napari_var_emitter.errors.InputError` that says how to install it."""
    import dask.array as da

    if isinstance(path, (list, tuple)):
        path = path[0]
    path = Path(path)
    stack = open_acquisition(path)
    data = da.from_array(stack, chunks=(1, *stack.shape[1:]), lock=True, asarray=True, fancy=False)
    metadata = {"source": str(path), "format": frames_format(path)}
    found = frames_metadata(path)
    if "pixel_size_nm" in found:
        metadata["pixel_size_nm"] = found["pixel_size_nm"]
    if found:
        metadata["camera"] = found
    name = path.name[: -len(path.suffix)] if path.suffix else path.name
    return [(data, {"name": name, "metadata": metadata}, "image")]
