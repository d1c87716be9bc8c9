"""Millions of localizations in the viewer: a render and a subsample of points, the whole table kept
for saving and analysis, and a viewer that stays responsive."""

import time
from types import SimpleNamespace

import numpy as np
import pytest

from napari_var_emitter.io.localizations import Localizations
from napari_var_emitter.io.tables import read_localizations, write_localizations
from napari_var_emitter.plugin import layers as L

PLUGIN = "napari-var-emitter"
N_LOCS = 2_000_000
FRAME_SHAPE = (256, 256)
BOUND_S = 30.0  # generous: on a shared 2-core machine the times below are about 1-3 s each


def _table(n: int, seed: int = 0) -> Localizations:
    rng = np.random.default_rng(seed)
    return Localizations(
        frame=np.sort(rng.integers(0, 20_000, n)),
        x=rng.uniform(0, FRAME_SHAPE[1] - 1, n),
        y=rng.uniform(0, FRAME_SHAPE[0] - 1, n),
        photons=rng.gamma(4.0, 500.0, n),
        background=20.0,
        bkgstd=4.0,
        sigma=1.2,
        uncertainty=rng.uniform(0.05, 0.3, n),
        probability=rng.uniform(0.5, 1.0, n),
        grid_factor=1.0,
    )


@pytest.fixture(scope="module")
def two_million(tmp_path_factory):
    locs = _table(N_LOCS)
    path = tmp_path_factory.mktemp("large") / "two_million.hdf5"
    write_localizations(locs, path, pixel_size_nm=100.0, frame_shape=FRAME_SHAPE, n_frames=20_000)
    return path, locs


def test_two_million_localizations_open_as_a_render_and_a_subsample_and_stay_responsive(
    make_napari_viewer, qtbot, two_million, tmp_path, capsys
):
    path, locs = two_million
    viewer = make_napari_viewer()
    start = time.perf_counter()
    render, points = viewer.open(str(path), plugin=PLUGIN)
    added = time.perf_counter() - start
    viewer.screenshot(canvas_only=True)
    drawn = time.perf_counter() - start - added
    camera = getattr(viewer, "scene", viewer).camera  # napari 0.9 moved it to the scene
    camera.center = (0, 64, 64)
    camera.zoom *= 2
    viewer.dims.set_current_step(0, 10_000)
    viewer.screenshot(canvas_only=True)
    panned = time.perf_counter() - start - added - drawn
    with capsys.disabled():
        print(
            f"\n2,000,000 localizations: add {added:.2f} s, draw {drawn:.2f} s, pan and step {panned:.2f} s"
        )
    assert added < BOUND_S and drawn < BOUND_S and panned < BOUND_S

    assert len(points.data) == L.MAX_POINTS and points.metadata["n_localizations"] == N_LOCS
    assert points.metadata[L.TABLE] is not None and len(points.metadata[L.TABLE]) == N_LOCS
    rows = L.shown_rows(N_LOCS)
    np.testing.assert_allclose(points.data[:, 1], locs.y[rows])  # a random subsample, in order
    assert render.visible and render.data.sum() == N_LOCS  # every localization is in the render
    assert render.metadata["render_pixel_nm"] == 20.0

    # the analysis and the writer use the whole table
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Analyze localizations")
    widget.points.value = points
    assert widget.info.value.startswith("2,000,000 localizations (200,000 shown)")
    widget.filter.rows["photons"].low.setValue(3000)
    widget.filter.apply_button.click()
    keep = locs.photons >= 3000
    filtered = viewer.layers["two_million filtered"]
    assert len(filtered.metadata[L.TABLE]) == keep.sum() and len(filtered.data) == L.MAX_POINTS
    viewer.layers.selection = {filtered}
    saved = tmp_path / "filtered.hdf5"
    viewer.layers.save(str(saved), selected=True, plugin=PLUGIN)
    back, meta = read_localizations(saved)
    assert len(back) == keep.sum() and meta["frame_shape"] == FRAME_SHAPE
    np.testing.assert_allclose(back.x, locs.x[keep], atol=1e-4)  # Picasso stores float32 pixels


def test_predict_results_above_the_limit_show_their_render_and_a_subsample():
    locs = _table(L.MAX_POINTS + 50_000, seed=1)
    result = SimpleNamespace(maps={}, localizations=locs)
    layers = L.result_layers(result, "movie", FRAME_SHAPE, (1, 1, 1), (0, 0, 0), render_factor=4)
    (image, image_kwargs, _), (data, kwargs, _) = layers
    assert image_kwargs["visible"] and image.sum() == len(locs)  # a histogram of every row
    assert len(data) == L.MAX_POINTS and kwargs["metadata"][L.TABLE] is locs
    assert kwargs["metadata"]["frame_shape"] == FRAME_SHAPE
    small = SimpleNamespace(maps={}, localizations=locs.subset(slice(0, 1000)))
    (image, image_kwargs, _), (data, kwargs, _) = L.result_layers(
        small, "movie", FRAME_SHAPE, (1, 1, 1), (0, 0, 0), render_factor=4
    )
    assert not image_kwargs["visible"] and len(data) == 1000 and L.TABLE not in kwargs["metadata"]


def test_the_points_benchmark_runs_and_prints_its_table(make_napari_viewer, capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
    import bench_points

    make_napari_viewer()  # a Qt application under pytest-qt, closed with the test
    assert bench_points.main(["--sizes", "2000,5000", "--limit", "3000"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]
    assert [row.split("|")[1:3] for row in rows] == [
        [" 2,000 ", " all points "],
        [" 5,000 ", " all points "],
        [" 5,000 ", " render + 3,000 points "],
    ]
    assert all(float(v) >= 0 for row in rows for v in row.split("|")[3:6])
