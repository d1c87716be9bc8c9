"""Property-based tests of every reader and writer (hypothesis).

Random valid tables round-trip: Picasso HDF5 exactly (its columns are float32, so the tables are
float32 numbers); ThunderSTORM CSV exactly in what the file stores (nm, photons, 1-based frames) and
to a few ulps in pixels (x_px = x_nm / px - 0.5 is one rounding away). Random or damaged bytes never
raise anything but this package's own error of that reader.
"""

import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from napari_var_emitter.camera import Camera
from napari_var_emitter.errors import (
    CameraError,
    CheckpointError,
    CsvFormatError,
    InputError,
    PicassoFormatError,
)
from napari_var_emitter.io.frames import read_frames
from napari_var_emitter.io.localizations import (
    MAX_FRAME,
    Localizations,
    csv_header,
    csv_rows,
    parse_csv,
    read_csv,
    to_csv,
)
from napari_var_emitter.io.picasso import read_picasso
from napari_var_emitter.io.tables import read_localizations, write_localizations
from napari_var_emitter.model import ModelConfig, TrueVAREmitterPredictor
from napari_var_emitter.model.checkpoint import EmitterModel, load_checkpoint, save_checkpoint

SETTINGS = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,  # the same examples on every run: a CI failure can be reproduced
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
VALUES = ("photons", "background", "bkgstd", "probability", "grid_factor")


@st.composite
def tables(draw, width: int = 64) -> Localizations:
    n = draw(st.integers(0, 25))
    special = st.sampled_from([np.nan, np.inf, -np.inf])
    big = 1e300 if width == 64 else None  # float64 values whose * pixel size stays finite

    def column(lo=None, hi=None, finite=False):
        kw = dict(width=width, allow_nan=False, allow_infinity=False, min_value=lo, max_value=hi)
        elements = st.floats(**kw) if finite else st.floats(**kw) | special
        return draw(arrays(np.float64 if width == 64 else np.float32, n, elements=elements)).astype(
            np.float64
        )

    return Localizations(
        frame=draw(arrays(np.int64, n, elements=st.integers(0, MAX_FRAME - 1))),
        x=column(-0.5, 1e5, finite=True),
        y=column(-0.5, 1e5, finite=True),
        sigma=column(-big if big else None, big),
        uncertainty=column(-big if big else None, big),
        **{name: column() for name in VALUES},
    )


pixel_sizes = st.floats(0.01, 1e4, allow_nan=False)


def _same(a, b) -> None:
    np.testing.assert_array_equal(a, b)  # NaN == NaN here


@SETTINGS
@given(locs=tables(width=64), px=pixel_sizes)
def test_csv_round_trip(locs, px):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.csv"
        to_csv(locs, path, px)
        back = read_csv(path, px)
        text = path.read_text()
    assert len(back) == len(locs)
    _same(back.frame, locs.frame)
    for name in VALUES:
        _same(getattr(back, name), getattr(locs, name))
    rows = [line.split(",") for line in text.splitlines()[1:]]
    x_nm = np.array([float(r[2]) for r in rows]).reshape(-1)
    _same(x_nm, (locs.x + 0.5) * px)  # the file holds exactly the nm of docs/CONVENTIONS.md, section 1
    for name, shift in (("x", 0.5), ("y", 0.5), ("sigma", 0.0), ("uncertainty", 0.0)):
        ours, theirs = getattr(locs, name), getattr(back, name)
        finite = np.isfinite(ours)
        _same(theirs[~finite], ours[~finite])
        v = np.abs(ours[finite])
        # a few roundings of the value, and of its nm value (which may be subnormal), in pixels
        tolerance = (
            4 * np.spacing(np.maximum(v, 1.0 if shift else 0.0)) + 4 * np.spacing((v + shift) * px) / px
        )
        assert np.all(np.abs(theirs[finite] - ours[finite]) <= tolerance), name


@SETTINGS
@given(locs=tables(width=32), px=pixel_sizes)
def test_picasso_round_trip_is_exact(locs, px):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.hdf5"
        write_localizations(locs, path, pixel_size_nm=px)
        back, meta = read_localizations(path)
    assert meta["pixel_size_nm"] == px
    for name in Localizations.column_names():
        _same(getattr(back, name), getattr(locs, name))


def _parsed_or_refused(text: str, px: float) -> Localizations | None:
    """The table ``text`` holds, or None where it is refused with our one-line error. A table read
    has 0-based frames and finite positions, and reads back the same after being written again."""
    try:
        locs = parse_csv(text, px)
    except CsvFormatError as exc:
        assert str(exc) and "\n" not in str(exc)
        return None
    assert isinstance(locs, Localizations)
    assert np.all(locs.frame >= 0) and np.all(locs.frame < MAX_FRAME)
    assert np.all(np.isfinite(locs.x)) and np.all(np.isfinite(locs.y))
    again = parse_csv(csv_header() + csv_rows(locs, px), px)
    _same(again.frame, locs.frame)
    np.testing.assert_allclose(again.x, locs.x, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(again.y, locs.y, rtol=1e-12, atol=1e-9)
    return locs


@SETTINGS
@given(text=st.text(max_size=400), px=pixel_sizes)
def test_csv_text_never_raises_another_error(text, px):
    _parsed_or_refused(text, px)


@SETTINGS
@given(
    header=st.sampled_from(['"frame","x [nm]","y [nm]"', "frame,x [nm],y [nm],sigma [nm]"]), body=st.text()
)
def test_csv_with_a_good_header_and_random_rows(header, body):
    locs = _parsed_or_refused(header + "\n" + body, 100.0)
    if locs is not None:  # at most one row per line
        assert len(locs) <= body.count("\n") + 1


def test_good_rows_are_read_and_bad_ones_refused():
    good = _parsed_or_refused('"frame","x [nm]","y [nm]"\n1,150,250\n3,50,50\n', 100.0)
    np.testing.assert_array_equal(good.frame, [0, 2])
    np.testing.assert_allclose(good.x, [1.0, 0.0])
    np.testing.assert_allclose(good.y, [2.0, 0.0])
    assert _parsed_or_refused('"frame","x [nm]","y [nm]"\n0,150,250\n', 100.0) is None  # 1-based


# --- damaged files --------------------------------------------------------------------------------
def _valid_files(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    n = 12
    locs = Localizations(
        frame=rng.integers(0, 4, n),
        x=rng.uniform(0, 30, n),
        y=rng.uniform(0, 30, n),
        photons=1000.0,
        sigma=1.1,
    )
    files = {
        "csv": to_csv(locs, folder / "a.csv", 100.0),
        "hdf5": write_localizations(locs, folder / "a.hdf5", pixel_size_nm=100.0)[0],
        "tif": folder / "a.tif",
        "pt": folder / "a.pt",
        "json": folder / "a.json",
    }
    (folder / "a.yaml").unlink()  # the HDF5 file alone: its embedded metadata is read
    tifffile.imwrite(
        files["tif"], rng.integers(0, 999, (3, 16, 16)).astype(np.uint16), photometric="minisblack"
    )
    torch.manual_seed(0)
    tiny = ModelConfig(
        embed_dim=8, conv_dim=4, num_heads=2, num_layers=1, encoder_channels=4, token_dim=4, vocab_size=4
    )
    save_checkpoint(files["pt"], EmitterModel(net=TrueVAREmitterPredictor(tiny)))
    Camera().save(files["json"])
    return files


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("valid")
    return {kind: path.read_bytes() for kind, path in _valid_files(folder).items()}


READERS = {
    "csv": (lambda p: read_csv(p, 100.0), CsvFormatError),
    "hdf5": (read_picasso, PicassoFormatError),
    "tif": (read_frames, InputError),
    "pt": (load_checkpoint, CheckpointError),
    "json": (Camera.load, CameraError),
}

edits = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8)


def _read(kind: str, content: bytes) -> None:
    reader, error = READERS[kind]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"x.{kind}"
        path.write_bytes(content)
        try:
            reader(path)
        except error as exc:
            assert "\n" not in str(exc)  # one line
            assert str(exc)


@pytest.mark.parametrize("kind", list(READERS))
def test_random_bytes_raise_only_our_error(kind):
    @SETTINGS
    @given(content=st.binary(max_size=3000))
    def check(content):
        _read(kind, content)

    check()


@pytest.mark.parametrize("kind", list(READERS))
def test_damaged_valid_files_raise_only_our_error(kind, valid_files):
    base = valid_files[kind]

    @SETTINGS
    @given(edits=edits, cut=st.none() | st.integers(0, len(base)))
    def check(edits, cut):
        content = bytearray(base)
        for position, value in edits:
            content[position % len(content)] = value
        _read(kind, bytes(content[:cut] if cut is not None else content))

    check()
