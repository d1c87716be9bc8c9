"""io.read_frames / io.as_frames: shapes, dtypes, memory-mapping and one clear InputError each."""

import numpy as np
import pytest
import tifffile

from napari_var_emitter.errors import InputError
from napari_var_emitter.io.frames import as_frames, read_frames


def test_read_stack_is_memory_mapped(tmp_path):
    data = np.arange(3 * 16 * 20, dtype=np.uint16).reshape(3, 16, 20)
    tifffile.imwrite(tmp_path / "s.tif", data, photometric="minisblack")
    out = read_frames(tmp_path / "s.tif")
    assert isinstance(out, np.memmap)
    assert out.shape == (3, 16, 20)
    np.testing.assert_array_equal(out, data)


def test_read_single_frame_and_compressed(tmp_path):
    frame = np.random.default_rng(0).integers(0, 1000, (12, 14)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "one.tif", frame)
    assert read_frames(tmp_path / "one.tif").shape == (1, 12, 14)
    stack = np.stack([frame, frame + 1])
    tifffile.imwrite(tmp_path / "z.tif", stack, compression="zlib", photometric="minisblack")
    np.testing.assert_array_equal(read_frames(tmp_path / "z.tif"), stack)


def test_read_singleton_axes_are_dropped(tmp_path):
    data = np.ones((4, 1, 10, 10), dtype=np.float32)
    tifffile.imwrite(tmp_path / "h.tif", data, imagej=True)
    assert read_frames(tmp_path / "h.tif").shape == (4, 10, 10)


@pytest.mark.parametrize("content", [None, b"not a tiff at all", b""])
def test_read_missing_or_not_tiff(tmp_path, content):
    path = tmp_path / "x.tif"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=r"no such file|cannot read .* as a TIFF"):
        read_frames(path)


def test_read_directory(tmp_path):
    with pytest.raises(InputError, match="directory"):
        read_frames(tmp_path)


def test_as_frames_shapes_and_dtype():
    out = as_frames(np.zeros((16, 16), dtype=np.uint16))
    assert out.shape == (1, 16, 16) and out.dtype == np.float32
    out = as_frames(np.ones((2, 9, 10), dtype=np.float64))
    assert out.shape == (2, 9, 10) and out.dtype == np.float32
    torch = pytest.importorskip("torch")
    assert as_frames(torch.ones(2, 10, 10)).shape == (2, 10, 10)


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((0, 16, 16)), "empty"),
        (np.zeros((2, 2, 16, 16)), "4 dimensions"),
        (np.zeros(16), "1 dimensions"),
        (np.zeros((64, 64, 3), dtype=np.uint8), "RGB"),
        (np.zeros((64, 64, 4), dtype=np.uint8), "RGB"),
        (np.full((16, 16), np.nan), "NaN"),
        (np.full((16, 16), np.inf), "NaN or infinite"),
        (np.full((16, 16), 1e300), "NaN or infinite"),  # overflows float32
        (np.array([["a"] * 16] * 16), "dtype"),
        (np.zeros((16, 16), dtype=complex), "dtype"),
        (np.zeros((16, 16), dtype=bool), "dtype"),
        (np.zeros((5, 16)), "too small"),
    ],
)
def test_as_frames_rejects(array, message):
    with pytest.raises(InputError, match=message) as info:
        as_frames(array)
    assert "\n" not in str(info.value)


def test_as_frames_min_size_parameter():
    assert as_frames(np.zeros((5, 5)), min_size=3).shape == (1, 5, 5)
    with pytest.raises(InputError, match="at least 6x6"):
        as_frames(np.zeros((5, 5)), min_size=6)


def test_small_stack_of_three_frames_is_not_rgb():
    # (3, 64, 64) is three frames, not an RGB image.
    assert as_frames(np.zeros((3, 64, 64))).shape == (3, 64, 64)


def test_damaged_tiff_is_found_even_when_tifffile_is_silenced(tmp_path):
    """tifffile reports a truncated ImageJ stack only in its log (reading 1 frame of 10); picasso.io
    silences that log at import. read_frames must still refuse the file, and leave the log as it was."""
    import logging

    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, np.ones((10, 32, 32), np.uint16), imagej=True)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with pytest.raises(InputError, match="damaged or truncated"):
            read_frames(path)
        assert logger.level == logging.CRITICAL and not logger.handlers
    finally:
        logger.setLevel(level)
