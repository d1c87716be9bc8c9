"""Picasso HDF5 + YAML: our files open in Picasso's own reader, and Picasso's files open in ours."""

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from napari_var_emitter.errors import InputError, PicassoFormatError
from napari_var_emitter.io.localizations import Localizations, read_csv, to_csv
from napari_var_emitter.io.picasso import read_picasso, to_picasso, yaml_path
from napari_var_emitter.io.tables import read_localizations, write_localizations
from napari_var_emitter.plugin.reader import get_reader
from napari_var_emitter.plugin.writer import write_points

picasso_io = pytest.importorskip("picasso.io", reason="picassosr is in the testing extras")

PX = 160.0


def _table(n=60, seed=0, width=64, height=48, frames=10) -> Localizations:
    rng = np.random.default_rng(seed)
    return Localizations(
        frame=rng.integers(0, frames, n),
        x=rng.uniform(0, width - 1, n),
        y=rng.uniform(0, height - 1, n),
        photons=rng.uniform(200, 5000, n),
        background=rng.uniform(10, 80, n),
        bkgstd=rng.uniform(2, 9, n),
        sigma=rng.uniform(0.8, 1.5, n),
        uncertainty=rng.uniform(0.03, 0.3, n),
        probability=rng.uniform(0.3, 1.0, n),
        grid_factor=np.full(n, 2.0),
    )


def _f4(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).astype(np.float64)


def test_picasso_reads_our_file_at_the_same_positions(tmp_path):
    locs = _table()
    written = write_localizations(
        locs, tmp_path / "locs.hdf5", pixel_size_nm=PX, frame_shape=(48, 64), n_frames=10
    )
    assert written == [tmp_path / "locs.hdf5", tmp_path / "locs.yaml"]

    df, info = picasso_io.load_locs(str(tmp_path / "locs.hdf5"))  # Picasso's own reader
    assert len(df) == len(locs)
    assert (info[0]["Width"], info[0]["Height"], info[0]["Frames"], info[0]["Pixelsize"]) == (64, 48, 10, PX)
    assert df["frame"].dtype == np.uint32 and df["x"].dtype == np.float32
    np.testing.assert_array_equal(df["frame"].to_numpy(), locs.frame)  # 0-based in both
    for column, ours in [
        ("x", locs.x),
        ("y", locs.y),
        ("photons", locs.photons),
        ("bg", locs.background),
        ("sx", locs.sigma),
        ("sy", locs.sigma),
        ("lpx", locs.uncertainty),
        ("lpy", locs.uncertainty),
    ]:
        np.testing.assert_array_equal(df[column].to_numpy(), _f4(ours), err_msg=column)

    # The same points through ThunderSTORM CSV (nm, 1-based): Picasso's pixels + 0.5, times its pixel size.
    to_csv(locs, tmp_path / "locs.csv", PX)
    lines = (tmp_path / "locs.csv").read_text().splitlines()[1:]
    x_nm = np.array([float(line.split(",")[2]) for line in lines])
    y_nm = np.array([float(line.split(",")[3]) for line in lines])
    frame_csv = np.array([int(line.split(",")[1]) for line in lines])
    np.testing.assert_allclose((df["x"].to_numpy() + 0.5) * info[0]["Pixelsize"], x_nm, rtol=0, atol=1e-3)
    np.testing.assert_allclose((df["y"].to_numpy() + 0.5) * info[0]["Pixelsize"], y_nm, rtol=0, atol=1e-3)
    np.testing.assert_array_equal(df["frame"].to_numpy() + 1, frame_csv)


def test_our_reader_gives_back_the_table_and_the_metadata(tmp_path):
    locs = _table()
    to_picasso(locs, tmp_path / "locs.h5", pixel_size_nm=PX, frame_shape=(48, 64), n_frames=12)
    assert yaml_path(tmp_path / "locs.h5") == tmp_path / "locs.yaml"
    back, meta = read_localizations(tmp_path / "locs.h5", pixel_size_nm=100.0)  # the file's own 160 wins
    assert meta == {"format": "picasso", "pixel_size_nm": PX, "frame_shape": (48, 64), "n_frames": 12}
    np.testing.assert_array_equal(back.frame, locs.frame)
    for name in Localizations.column_names():
        if name != "frame":
            np.testing.assert_array_equal(getattr(back, name), _f4(getattr(locs, name)), err_msg=name)
    # without the YAML, the metadata embedded in the HDF5 file is used, by us and by Picasso
    os.remove(tmp_path / "locs.yaml")
    assert read_localizations(tmp_path / "locs.h5")[1]["pixel_size_nm"] == PX
    assert picasso_io.load_locs(str(tmp_path / "locs.h5"))[1][0]["Pixelsize"] == PX


def test_what_picassos_loader_drops_and_ours_keeps(tmp_path):
    """Picasso's ensure_sanity drops NaN rows and x or y < 0: the outer half of the first pixel
    column/row, which our convention puts in [-0.5, 0). Our reader keeps every row; columns that are
    NaN everywhere are left out so that Picasso keeps the rows."""
    locs = Localizations(
        frame=[0, 1, 2],
        x=[-0.3, 5.0, 9.4],
        y=[4.0, -0.49, 3.0],
        photons=[1000.0, np.nan, 900.0],
        **{n: np.full(3, np.nan) for n in ("background", "bkgstd", "sigma", "uncertainty", "probability")},
        grid_factor=1.0,
    )
    to_picasso(locs, tmp_path / "edge.hdf5", pixel_size_nm=100.0)
    with h5py.File(tmp_path / "edge.hdf5") as handle:
        assert handle["locs"].dtype.names == ("frame", "x", "y", "photons", "grid_factor")
    meta = yaml.safe_load((tmp_path / "edge.yaml").read_text())
    assert (meta["Width"], meta["Height"], meta["Frames"]) == (10, 5, 3)  # the smallest that hold every row
    back, _ = read_picasso(tmp_path / "edge.hdf5")
    assert len(back) == 3 and np.isnan(back.sigma).all() and np.isnan(back.photons[1])
    df, _ = picasso_io.load_locs(str(tmp_path / "edge.hdf5"))
    assert df["x"].tolist() == [pytest.approx(9.4)]  # x < 0, NaN photons, y < 0: dropped by Picasso


def test_we_read_what_picasso_writes(tmp_path, monkeypatch):
    import pandas as pd

    # save_locs asks the user settings whether to write the YAML; do not touch the user's settings
    monkeypatch.setattr(picasso_io, "_save_metadata_in_yaml", lambda: True)
    rng = np.random.default_rng(5)
    n = 30
    df = pd.DataFrame(
        {
            "frame": rng.integers(0, 50, n).astype(np.uint32),
            "x": rng.uniform(0, 31, n).astype(np.float32),
            "y": rng.uniform(0, 31, n).astype(np.float32),
            "photons": rng.uniform(500, 3000, n).astype(np.float32),
            "sx": rng.uniform(0.9, 1.2, n).astype(np.float32),
            "sy": rng.uniform(0.9, 1.2, n).astype(np.float32),
            "bg": rng.uniform(5, 20, n).astype(np.float32),
            "lpx": rng.uniform(0.02, 0.1, n).astype(np.float32),
            "lpy": rng.uniform(0.02, 0.1, n).astype(np.float32),
            "net_gradient": rng.uniform(1e3, 1e4, n).astype(np.float32),
            "iterations": rng.integers(1, 20, n).astype(np.int32),
        }
    )
    info = [{"Frames": 50, "Height": 32, "Width": 32}, {"Generated by": "Picasso Localize", "Pixelsize": 130}]
    picasso_io.save_locs(str(tmp_path / "theirs.hdf5"), df, info)
    locs, meta = read_picasso(tmp_path / "theirs.hdf5")
    assert meta["pixel_size_nm"] == 130.0 and meta["frame_shape"] == (32, 32) and meta["n_frames"] == 50
    np.testing.assert_array_equal(locs.frame, df["frame"])
    np.testing.assert_array_equal(locs.x, df["x"].astype(np.float64))
    np.testing.assert_array_equal(locs.background, df["bg"].astype(np.float64))
    sx, sy = df["sx"].to_numpy(np.float64), df["sy"].to_numpy(np.float64)
    np.testing.assert_allclose(locs.sigma, np.sqrt((sx**2 + sy**2) / 2), rtol=1e-12)
    assert np.isnan(locs.probability).all()


def test_writes_are_atomic_and_checked_first(tmp_path):
    path = tmp_path / "locs.hdf5"
    to_picasso(_table(n=5), path, pixel_size_nm=PX)
    before = (path.read_bytes(), yaml_path(path).read_bytes())
    bad = [
        (_table(n=5), {"pixel_size_nm": 0.0}, "pixel_size_nm"),
        (_table(n=5), {"pixel_size_nm": PX, "n_frames": 3}, "n_frames"),
        (_table(n=5), {"pixel_size_nm": PX, "extra_info": {"Camera": object()}}, "metadata"),
        (Localizations(frame=[-1], x=[1.0], y=[1.0]), {"pixel_size_nm": PX}, "frames"),
        (Localizations(frame=[0], x=[np.nan], y=[1.0]), {"pixel_size_nm": PX}, "NaN"),
        (Localizations(frame=[0], x=[1e300], y=[1.0]), {"pixel_size_nm": PX}, "float32"),
    ]
    for locs, kwargs, message in bad:
        with pytest.raises(InputError, match=message):
            to_picasso(locs, path, **kwargs)
    assert (path.read_bytes(), yaml_path(path).read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locs.hdf5", "locs.yaml"]  # no temporaries


def _h5(path, **datasets):
    with h5py.File(path, "w") as handle:
        for name, value in datasets.items():
            if isinstance(value, tuple):  # (shape, dtype): a dataset that claims rows it does not store
                handle.create_dataset(name, shape=value[0], dtype=value[1], chunks=(1024,))
            else:
                handle.create_dataset(name, data=value)


LOCS_DTYPE = np.dtype([("frame", "<u4"), ("x", "<f4"), ("y", "<f4")])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b"not an hdf5 file"), "not an HDF5 file"),
        (lambda p: p.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40), "not an HDF5 file"),  # truncated
        (lambda p: _h5(p, other=np.zeros(3)), "no 'locs' table"),
        (lambda p: _h5(p, locs=np.zeros(3)), "lacks the column"),
        (lambda p: _h5(p, locs=np.zeros(2, [("frame", "<u4"), ("x", "<f4")])), "lacks the column"),
        (lambda p: _h5(p, locs=np.zeros(2, [("frame", "<u4"), ("x", "S4"), ("y", "<f4")])), "not numeric"),
        (lambda p: _h5(p, locs=np.array([(0, np.nan, 1.0)], LOCS_DTYPE)), "NaN"),
        (
            lambda p: _h5(p, locs=np.array([(0, 1.5, 1.0)], [("frame", "<f4"), ("x", "<f4"), ("y", "<f4")])),
            None,
        ),
        (
            lambda p: _h5(
                p, locs=np.array([(0.5, 1.5, 1.0)], [("frame", "<f4"), ("x", "<f4"), ("y", "<f4")])
            ),
            "frames",
        ),
        (lambda p: _h5(p, locs=((10**9,), LOCS_DTYPE)), "1,000,000,000 rows"),  # a billion-row claim
    ],
)
def test_bad_picasso_files_give_one_clear_error(tmp_path, make, message):
    path = tmp_path / "bad.hdf5"
    make(path)
    if message is None:
        assert len(read_picasso(path)[0]) == 1
        return
    with pytest.raises(PicassoFormatError, match=message) as info:
        read_picasso(path)
    assert "\n" not in str(info.value)


def test_metadata_that_would_run_code_is_refused(tmp_path):
    """Picasso's own load_info uses yaml.UnsafeLoader; ours is safe_load, so this never runs."""
    path = tmp_path / "evil.hdf5"
    to_picasso(_table(n=3), path, pixel_size_nm=PX)
    marker = tmp_path / "pwned"
    yaml_path(path).write_text(f"!!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(PicassoFormatError, match="metadata"):
        read_picasso(path)
    assert not marker.exists()
    yaml_path(path).write_text("Pixelsize: -3\n")
    with pytest.raises(PicassoFormatError, match="Pixelsize"):
        read_picasso(path)


def test_napari_reader_and_writer_handle_picasso(tmp_path):
    locs = _table(n=20)
    to_picasso(locs, tmp_path / "in.hdf5", pixel_size_nm=PX, frame_shape=(48, 64), n_frames=10)
    reader = get_reader(str(tmp_path / "in.hdf5"))
    assert reader is not None
    ((data, kwargs, layer_type),) = reader(str(tmp_path / "in.hdf5"))
    assert layer_type == "points"
    np.testing.assert_array_equal(data, np.column_stack([locs.frame, _f4(locs.y), _f4(locs.x)]))
    assert kwargs["metadata"]["pixel_size_nm"] == PX and kwargs["metadata"]["frame_shape"] == (48, 64)

    written = write_points(str(tmp_path / "out.hdf5"), data, kwargs)
    assert written == [str(tmp_path / "out.hdf5"), str(tmp_path / "out.yaml")]
    df, info = picasso_io.load_locs(str(tmp_path / "out.hdf5"))
    np.testing.assert_array_equal(df["x"].to_numpy(), _f4(locs.x))
    assert (info[0]["Width"], info[0]["Height"], info[0]["Frames"]) == (64, 48, 10)

    (tmp_path / "plain.h5").write_bytes(b"\x89HDF but not really")
    assert get_reader(str(tmp_path / "plain.h5")) is None  # not ours: another reader may try
    _h5(tmp_path / "image.h5", data=np.zeros((4, 4)))
    assert get_reader(str(tmp_path / "image.h5")) is None


def test_the_thunderstorm_demo_truth_reads_the_same_both_ways(tmp_path):
    """Deep-STORM's demo truth is a ThunderSTORM file: read it, write it as CSV and as Picasso, read
    those back: the same points (to float32 for Picasso, to 1e-9 nm for the CSV)."""
    truth_csv = Path(__file__).parent / "data" / "deepstorm_demo1" / "truth.csv"
    truth = read_csv(truth_csv, 100.0)
    raw = np.array(
        [[float(v) for v in line.split(",")[1:4]] for line in truth_csv.read_text().splitlines()[1:]]
    )
    np.testing.assert_array_equal(truth.frame, raw[:, 0] - 1)
    np.testing.assert_allclose((truth.x + 0.5) * 100.0, raw[:, 1], rtol=0, atol=1e-9)
    to_csv(truth, tmp_path / "again.csv", 100.0)
    again = read_csv(tmp_path / "again.csv", 100.0)
    np.testing.assert_allclose(again.x, truth.x, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(again.photons, truth.photons)
    to_picasso(truth, tmp_path / "truth.hdf5", pixel_size_nm=100.0, frame_shape=(64, 64), n_frames=20)
    back, _ = read_picasso(tmp_path / "truth.hdf5")
    np.testing.assert_array_equal(back.x, _f4(truth.x))
    np.testing.assert_array_equal(back.frame, truth.frame)


def test_a_damaged_variable_length_metadata_never_hangs_the_reader(tmp_path):
    """Picasso embeds its metadata as a variable-length string; the HDF5 library loops for ever
    reading one whose heap object size is wrong (found by fuzzing). We do not read those (the YAML
    is read instead), so the reader returns; run in a subprocess so that a regression fails, not hangs."""
    import json
    import subprocess
    import sys

    meta = json.dumps([{"Frames": 1, "Width": 8, "Height": 8, "Pixelsize": 130}])
    path = tmp_path / "theirs.hdf5"
    _h5(path, locs=np.zeros(3, LOCS_DTYPE), metadata=meta)
    content = bytearray(path.read_bytes())
    at = content.find(meta.encode())
    size = int.from_bytes(content[at - 8 : at], "little")  # the global heap object's size field
    assert size == len(meta)
    content[at - 8 : at] = (size + 93).to_bytes(8, "little")
    path.write_bytes(bytes(content))
    code = (
        "import sys\n"
        "from napari_var_emitter.io.picasso import read_picasso\n"
        "print(read_picasso(sys.argv[1])[1])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "'pixel_size_nm': None" in done.stdout and "'n_frames': None" in done.stdout
