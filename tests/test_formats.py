"""Camera frames in the formats microscopes write (OME-TIFF, BigTIFF, Zarr, ND2, CZI): each read
lazily, chunk by chunk, against the same frames written as a plain TIFF, with the pixel size the
file records."""

import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_var_emitter.cli import main
from napari_var_emitter.errors import InputError
from napari_var_emitter.io.formats import ND2Stack, frames_metadata
from napari_var_emitter.io.localizations import read_csv
from napari_var_emitter.io.stream import RawTiffStack, TiffPageStack, close_frames, open_frames

DEMO = Path(__file__).parent / "data" / "deepstorm_demo1" / "frames.tif"
PLUGIN = "napari-var-emitter"


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """Six real camera-like frames (64 x 64, uint16) with emitters in them."""
    return tifffile.imread(DEMO)[:6]


@pytest.fixture(scope="module")
def as_tiff(frames, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiff") / "frames.tif"
    tifffile.imwrite(path, frames)
    return path


def _same_frames_chunk_by_chunk(path, tiff_path, chunk=4):
    """The stack of ``path`` reads, chunk by chunk and frame by frame, as the plain TIFF does."""
    stack, reference = open_frames(path), open_frames(tiff_path)
    try:
        assert stack.shape == reference.shape and stack.dtype == reference.dtype
        for start in range(0, stack.shape[0], chunk):
            np.testing.assert_array_equal(stack[start : start + chunk], reference[start : start + chunk])
        np.testing.assert_array_equal(stack[-1], reference[-1])
        np.testing.assert_array_equal(stack[2, 10:20, 5], reference[2, 10:20, 5])
    finally:
        close_frames(stack)
        close_frames(reference)
    return stack


def test_ome_tiff_reads_lazily_and_gives_its_pixel_size(frames, as_tiff, tmp_path):
    path = tmp_path / "frames.ome.tif"
    tifffile.imwrite(path, frames, ome=True, metadata={"axes": "TYX", "PhysicalSizeX": 0.16})
    assert isinstance(_same_frames_chunk_by_chunk(path, as_tiff), RawTiffStack)
    assert frames_metadata(path) == {"pixel_size_nm": 160.0}
    packed = tmp_path / "packed.ome.tif"
    tifffile.imwrite(
        packed,
        frames,
        ome=True,
        compression="zlib",
        metadata={"PhysicalSizeX": 107.0, "PhysicalSizeXUnit": "nm"},
    )
    assert isinstance(_same_frames_chunk_by_chunk(packed, as_tiff), TiffPageStack)
    assert frames_metadata(packed) == {"pixel_size_nm": 107.0}
    assert frames_metadata(as_tiff) == {}


def test_bigtiff_small_and_past_4_gib(frames, as_tiff, tmp_path):
    path = tmp_path / "frames.btf"
    tifffile.imwrite(path, frames, bigtiff=True)
    assert isinstance(_same_frames_chunk_by_chunk(path, as_tiff), RawTiffStack)
    # a BigTIFF of 4.3 GiB, written sparse (only the frames set take disk space), read at its end
    if shutil.disk_usage(tmp_path).free < 6 << 30:
        pytest.skip("less than 6 GiB free for a sparse 4.3 GiB file")
    huge = tmp_path / "huge.tif"
    shape = (1100, 1024, 2048)
    tifffile.imwrite(huge, shape=shape, dtype=np.uint16, bigtiff=True)
    stored = tifffile.memmap(huge, mode="r+")
    stored[-1, :64, :64] = frames[0]
    stored.flush()
    del stored
    assert huge.stat().st_size > 4 << 30
    stack = open_frames(huge)
    try:
        assert isinstance(stack, RawTiffStack) and stack.shape == shape
        np.testing.assert_array_equal(stack[-1][:64, :64], frames[0])
        assert not stack[-2:-1].any()
    finally:
        close_frames(stack)
        huge.unlink()


def test_zarr_store_and_ome_zarr_group(frames, as_tiff, tmp_path):
    zarr = pytest.importorskip("zarr")
    path = tmp_path / "frames.zarr"
    array = zarr.open(str(path), mode="w", shape=frames.shape, chunks=(2, 64, 64), dtype=frames.dtype)
    array[:] = frames
    array.attrs["pixel_size_nm"] = 130
    _same_frames_chunk_by_chunk(path, as_tiff)
    assert frames_metadata(path) == {"pixel_size_nm": 130.0}
    # OME-Zarr: a group whose level "0" holds (T, C, Y, X), the pixel size in its scale
    group = zarr.open_group(str(tmp_path / "ome.zarr"), mode="w")
    level = group.create_array("0", shape=(6, 1, 64, 64), chunks=(1, 1, 64, 64), dtype=frames.dtype)
    level[:] = frames[:, None]
    axes = [
        {"name": "t"},
        {"name": "c"},
        {"name": "y", "unit": "micrometer"},
        {"name": "x", "unit": "micrometer"},
    ]
    scale = {"type": "scale", "scale": [1.0, 1.0, 0.1, 0.1]}
    group.attrs["multiscales"] = [
        {"axes": axes, "datasets": [{"path": "0", "coordinateTransformations": [scale]}]}
    ]
    _same_frames_chunk_by_chunk(tmp_path / "ome.zarr", as_tiff)
    assert frames_metadata(tmp_path / "ome.zarr") == {"pixel_size_nm": 100.0}


def test_czi_written_by_libczi(frames, as_tiff, tmp_path):
    pytest.importorskip("pylibCZIrw")
    from pylibCZIrw import czi as pyczi

    path = tmp_path / "frames.czi"
    with pyczi.create_czi(str(path), exist_ok=True) as writer:
        for t, frame in enumerate(frames):
            writer.write(frame[..., None], plane={"T": t, "C": 0, "Z": 0})
        writer.write_metadata(scale_x=1.07e-7, scale_y=1.07e-7)  # metres
    _same_frames_chunk_by_chunk(path, as_tiff)
    assert frames_metadata(path) == {"pixel_size_nm": pytest.approx(107.0)}


class _StandInND2:
    """The part of ``nd2.ND2File`` that ND2Stack uses, over an array. The nd2 package reads ND2 files
    but writes none, so the ND2 path is checked against this stand-in of its interface."""

    opened: list = []
    stacks: dict = {}

    def __init__(self, path):
        self.frames, self.sizes = self.stacks[path]
        self.is_rgb, self.dtype, self.closed = False, self.frames.dtype, False
        self.opened.append(self)

    def read_frame(self, index):
        return self.frames[index]

    def voxel_size(self):
        return types.SimpleNamespace(x=0.065, y=0.065, z=1.0)

    def close(self):
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_nd2_through_a_stand_in_of_the_nd2_package(frames, as_tiff, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nd2", types.SimpleNamespace(ND2File=_StandInND2))
    path, two_channels = tmp_path / "frames.nd2", tmp_path / "channels.nd2"
    for p in (path, two_channels):
        p.write_bytes(b"")
    _StandInND2.stacks = {
        str(path): (frames, {"T": 6, "C": 1, "Y": 64, "X": 64}),
        str(two_channels): (frames, {"T": 3, "C": 2, "Y": 64, "X": 64}),
    }
    assert isinstance(_same_frames_chunk_by_chunk(path, as_tiff), ND2Stack)
    assert all(handle.closed for handle in _StandInND2.opened)
    assert frames_metadata(path) == {"pixel_size_nm": pytest.approx(65.0)}
    with pytest.raises(InputError, match="T=3, C=2"):
        open_frames(two_channels)


def test_a_missing_package_is_one_line_that_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pylibCZIrw", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "pylibCZIrw.czi", None)
    path = tmp_path / "frames.czi"
    path.write_bytes(b"not read")
    with pytest.raises(InputError, match=r"needs the pylibCZIrw package.*napari-var-emitter\[formats\]"):
        open_frames(path)
    out = tmp_path / "out.csv"
    assert main(["predict", str(path), "--out", str(out), "--model", "classical"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("napari-var-emitter: error: ") and "pip install" in line
    assert not out.exists()


def test_predict_takes_the_pixel_size_from_the_file_and_says_so(frames, as_tiff, tmp_path, capsys):
    ome = tmp_path / "frames.ome.tif"
    tifffile.imwrite(ome, frames, ome=True, metadata={"axes": "TYX", "PhysicalSizeX": 0.16})
    args = ["--model", "classical", "--baseline", "100"]
    assert main(["predict", str(ome), "--out", str(tmp_path / "ome.csv"), *args]) == 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "pixel size 160 nm from the file" in last
    given = ["--pixel-size-nm", "160"]
    assert main(["predict", str(as_tiff), "--out", str(tmp_path / "tiff.csv"), *args, *given]) == 0
    assert "from the file" not in capsys.readouterr().err
    ome_locs, tiff_locs = read_csv(tmp_path / "ome.csv", 160.0), read_csv(tmp_path / "tiff.csv", 160.0)
    assert len(ome_locs) > 10
    np.testing.assert_allclose(ome_locs.x, tiff_locs.x)
    # a pixel size given on the command line wins over the file's
    assert (
        main(["predict", str(ome), "--out", str(tmp_path / "given.csv"), *args, "--pixel-size-nm", "100"])
        == 0
    )
    assert "from the file" not in capsys.readouterr().err


def test_napari_opens_czi_and_zarr_lazily_and_predict_takes_their_pixel_size(
    make_napari_viewer, qtbot, frames, tmp_path
):
    zarr = pytest.importorskip("zarr")
    pytest.importorskip("pylibCZIrw")
    from pylibCZIrw import czi as pyczi

    czi = tmp_path / "movie.czi"
    with pyczi.create_czi(str(czi), exist_ok=True) as writer:
        for t, frame in enumerate(frames):
            writer.write(frame[..., None], plane={"T": t})
        writer.write_metadata(scale_x=1.07e-7, scale_y=1.07e-7)
    store = tmp_path / "other.zarr"
    array = zarr.open(str(store), mode="w", shape=frames.shape, chunks=(1, 64, 64), dtype=frames.dtype)
    array[:] = frames
    array.attrs["camera"] = {"pixel_size_nm": 130, "em_gain": 1, "e_per_adu": 0.5}

    from napari_var_emitter.plugin.frames_reader import get_frames_reader

    assert get_frames_reader(str(czi)) is not None and get_frames_reader(str(store)) is not None
    assert get_frames_reader(str(DEMO)) is None  # TIFF: napari's own reader
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(czi), plugin=PLUGIN)
    assert type(layer.data).__name__ == "Array"  # dask: napari reads the frames it shows
    np.testing.assert_array_equal(np.asarray(layer.data[3]), frames[3])
    assert layer.metadata["pixel_size_nm"] == pytest.approx(107.0)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Predict emitters")
    assert widget.image.value is layer
    assert widget.camera_widgets["pixel_size_nm"].value == pytest.approx(107.0)
    (other,) = viewer.open(str(store), plugin=PLUGIN)
    widget.image.value = other
    assert other.name == "other" and other.data.shape == frames.shape
    assert widget.camera_widgets["pixel_size_nm"].value == 130.0
    assert widget.camera().e_per_adu == 0.5 and widget.camera().em_gain == 1.0
    widget.image.value = layer  # predict on the CZI frames, read chunk by chunk from the file
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=180_000)
    emitters = viewer.layers["movie emitters"]
    assert len(emitters.data) > 10 and emitters.metadata["pixel_size_nm"] == pytest.approx(107.0)
