"""Reader and writer contributions: Points <-> ThunderSTORM CSV (docs/CONVENTIONS.md, sections 1 and 3)."""

from pathlib import Path

import numpy as np
import pytest

from napari_var_emitter.errors import CsvFormatError
from napari_var_emitter.io.localizations import THUNDERSTORM_HEADER
from napari_var_emitter.plugin.reader import get_reader
from napari_var_emitter.plugin.writer import write_points

DATA = Path(__file__).parent / "data"
DEMO_TRUTH = DATA / "deepstorm_demo1" / "truth.csv"


def _layer(viewer, name):
    return viewer.layers[name]


def _points_layer(viewer):
    rng = np.random.default_rng(3)
    n = 40
    data = np.column_stack([rng.integers(0, 5, n), rng.uniform(0, 63, n), rng.uniform(0, 63, n)])
    features = {
        "frame": data[:, 0].astype(int),
        "photons": rng.uniform(500, 5000, n),
        "background": rng.uniform(20, 80, n),
        "bkgstd": rng.uniform(3, 9, n),
        "sigma_nm": rng.uniform(100.0, 150.0, n),
        "uncertainty_nm": rng.uniform(5.0, 30.0, n),
        "probability": rng.uniform(0.5, 1, n),
        "grid_factor": np.full(n, 2.0),
    }
    return viewer.add_points(data, features=features, name="locs", metadata={"pixel_size_nm": 160.0})


def test_points_write_read_round_trip(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    layer = _points_layer(viewer)
    path = tmp_path / "locs.csv"
    written = viewer.layers.save(str(path), selected=False, plugin="napari-var-emitter")
    assert written == [str(path)]
    header = path.read_text().splitlines()[0].split(",")
    assert [h.strip('"') for h in header[: len(THUNDERSTORM_HEADER)]] == list(THUNDERSTORM_HEADER)

    reader = get_reader(str(path))
    assert reader is not None
    ((data, kwargs, layer_type),) = reader(str(path), pixel_size_nm=160.0)
    assert layer_type == "points"
    np.testing.assert_allclose(data, layer.data, rtol=0, atol=1e-9)
    for name in layer.features.columns:
        np.testing.assert_allclose(kwargs["features"][name], layer.features[name].to_numpy(), rtol=1e-12)


def test_writer_uses_pixel_size_and_one_based_frames(tmp_path):
    path = tmp_path / "one.csv"
    write_points(str(path), np.array([[0.0, 1.0, 2.0]]), {"metadata": {"pixel_size_nm": 160.0}})
    row = path.read_text().splitlines()[1].split(",")
    assert row[1] == "1"  # frame 0 -> 1
    assert float(row[2]) == pytest.approx((2.0 + 0.5) * 160.0)  # x
    assert float(row[3]) == pytest.approx((1.0 + 0.5) * 160.0)  # y
    write_points(str(path), np.array([[0.0, 1.0, 2.0]]), {})  # no metadata: 100 nm
    assert float(path.read_text().splitlines()[1].split(",")[2]) == pytest.approx(250.0)


def test_thunderstorm_truth_opens_in_the_right_place(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open(str(DEMO_TRUTH), plugin="napari-var-emitter")
    (layer,) = layers
    assert type(layer).__name__ == "Points"
    lines = DEMO_TRUTH.read_text().splitlines()
    first = [float(v) for v in lines[1].split(",")]
    frame, x_nm, y_nm = first[1], first[2], first[3]
    assert len(layer.data) == len(lines) - 1
    np.testing.assert_allclose(layer.data[0], [frame - 1, y_nm / 100 - 0.5, x_nm / 100 - 0.5], atol=1e-9)
    assert layer.data[:, 0].min() == 0 and layer.data[:, 0].max() == 19
    assert layer.features["photons"].iloc[0] == pytest.approx(first[5])
    assert layer.metadata["pixel_size_nm"] == 100.0


def test_reader_declines_other_files(tmp_path):
    other = tmp_path / "table.csv"
    other.write_text("a,b\n1,2\n")
    assert get_reader(str(other)) is None
    assert get_reader(str(tmp_path / "missing.csv")) is None
    tif = tmp_path / "image.tif"
    tif.write_bytes(b"II*\x00")
    assert get_reader(str(tif)) is None


def test_malformed_table_raises_a_clear_error(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text('"id","frame","x [nm]","y [nm]"\n1,1,abc,100\n')
    reader = get_reader(str(bad))
    assert reader is not None
    with pytest.raises(CsvFormatError, match="line 2"):
        reader(str(bad))
