"""Dock widget "Analyze localizations", driven as a person would: open a table, open the widget,
choose a tab, press its button, wait, look at the layers."""

import numpy as np
import pytest

from napari_var_emitter.analysis.drift import Drift
from napari_var_emitter.analysis.frc import frc
from napari_var_emitter.io.localizations import to_csv
from napari_var_emitter.plugin.layers import map_geometry
from napari_var_emitter.plugin.reader import read_localizations
from napari_var_emitter.simulation.tables import simulate_filaments

PLUGIN = "napari-var-emitter"
TIMEOUT_MS = 60_000
PX_NM = 100.0


@pytest.fixture(scope="module")
def drifting():
    """20,000 localizations on filaments over 2,000 frames, with a known drift of up to 150 nm."""
    return simulate_filaments(20_000, 2_000, noise_nm=10.0, seed=11)


def _open_table(make_napari_viewer, tmp_path, locs, name="table"):
    """The usual order: the table first (File > Open, our reader), then the widget."""
    path = tmp_path / f"{name}.csv"
    to_csv(locs, path, PX_NM)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Analyze localizations")
    return viewer, widget, layer


def _press(qtbot, tab):
    tab.panel.run_button.click()
    qtbot.waitUntil(lambda: not tab.running, timeout=TIMEOUT_MS)


def _rms_to_truth_nm(layer, sim) -> float:
    y, x = layer.data[:, 1], layer.data[:, 2]
    return float(np.sqrt(np.mean((x - sim.true_x) ** 2 + (y - sim.true_y) ** 2) / 2) * PX_NM)


def test_drift_by_rcc_corrects_every_row_in_order_and_saves_its_trace(
    make_napari_viewer, qtbot, tmp_path, drifting
):
    viewer, widget, layer = _open_table(make_napari_viewer, tmp_path, drifting.locs)
    assert widget.layer() is layer and "20,000 localizations" in widget.info.value
    widget.tabs.setCurrentWidget(widget.drift)
    widget.drift.segments.value = 10
    _press(qtbot, widget.drift)
    corrected = viewer.layers["table drift-corrected"]
    assert viewer.layers.index(corrected) == viewer.layers.index(layer) + 1
    np.testing.assert_array_equal(corrected.data[:, 0], layer.data[:, 0])  # every row, in order
    assert list(corrected.features.columns) == list(layer.features.columns)
    before, after = _rms_to_truth_nm(layer, drifting), _rms_to_truth_nm(corrected, drifting)
    assert before > 50.0 and after < 20.0, (before, after)  # the noise alone is 10 nm
    assert "corrected in 'table drift-corrected'" in widget.drift.status.text()
    assert set(widget.drift.plot.curves) == {"dx", "dy"}
    assert len(widget.drift.plot.x) == 2_000

    trace = widget.drift.save_trace(tmp_path / "drift.csv")
    back = Drift.read_csv(trace, PX_NM)
    np.testing.assert_allclose(back.dx * PX_NM, widget.drift.plot.curves["dx"], atol=1e-9)


def test_fiducials_replace_the_layer_where_it_is(make_napari_viewer, qtbot, tmp_path):
    sim = simulate_filaments(15_000, 3_000, noise_nm=10.0, n_fiducials=3, seed=6)
    viewer, widget, layer = _open_table(make_napari_viewer, tmp_path, sim.locs, name="beads")
    viewer.add_points(np.zeros((1, 3)), name="on top")
    widget.points.value = layer
    widget.drift.method.value = "fiducials"
    assert not widget.drift.radius.native.isHidden() and widget.drift.segments.native.isHidden()
    widget.drift.replace.value = True
    _press(qtbot, widget.drift)
    assert [lay.name for lay in viewer.layers] == ["beads", "on top"]
    replaced = viewer.layers["beads"]
    assert replaced is not layer and len(replaced.data) == len(layer.data)
    assert "3 fiducial(s)" in widget.drift.status.text()
    assert _rms_to_truth_nm(layer, sim) > 50.0 and _rms_to_truth_nm(replaced, sim) < 15.0
    assert widget.layer() is replaced  # the widget follows the layer that replaced its own


def test_a_drift_that_cannot_be_measured_says_why(make_napari_viewer, qtbot, tmp_path, error_notifications):
    sim = simulate_filaments(1_000, 100, seed=3)
    _viewer, widget, _layer = _open_table(make_napari_viewer, tmp_path, sim.locs)
    _press(qtbot, widget.drift)  # automatic segments need 6,000 localizations
    assert widget.drift.status.text().startswith("failed: ") and "too few" in widget.drift.status.text()
    assert any("too few" in message for message in error_notifications.messages())


def test_frc_curve_threshold_and_resolution(make_napari_viewer, qtbot, tmp_path, drifting):
    _viewer, widget, layer = _open_table(make_napari_viewer, tmp_path, drifting.locs)
    widget.frc.render_nm.value = 10
    _press(qtbot, widget.frc)
    expected = frc(widget.table(), pixel_size_nm=PX_NM, render_nm=10.0)
    assert widget.frc.result.resolution_nm == pytest.approx(expected.resolution_nm)
    assert widget.frc.status.text().startswith(f"resolution {expected.resolution_nm:.1f} nm")
    assert widget.frc.plot.hline == pytest.approx(1 / 7)
    np.testing.assert_allclose(widget.frc.plot.curves["FRC"], expected.curve)


def test_filter_keeps_the_rows_in_range_with_every_feature_and_saves_them(
    make_napari_viewer, qtbot, tmp_path
):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(2)
    n = 500
    data = np.column_stack([rng.integers(0, 50, n), rng.uniform(0, 60, n), rng.uniform(0, 60, n)])
    features = {
        "frame": data[:, 0].astype(int),
        "photons": rng.uniform(100, 5000, n),
        "uncertainty_nm": rng.uniform(3, 40, n),
        "probability": rng.uniform(0.3, 1, n),
        "sigma_nm": np.full(n, np.nan),  # unknown: not filtered
        "label": rng.integers(0, 3, n),  # a column of the user's own
    }
    layer = viewer.add_points(data, features=features, name="locs", metadata={"pixel_size_nm": 160.0})
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Analyze localizations")
    rows = widget.filter.rows
    assert rows["photons"].low.value() <= features["photons"].min()
    assert rows["photons"].high.value() >= features["photons"].max()
    assert rows["uncertainty_nm"].low.isEnabled() and not rows["sigma_nm"].low.isEnabled()
    rows["photons"].low.setValue(1000)
    rows["uncertainty_nm"].high.setValue(20)
    rows["frame"].low.setValue(10)
    widget.filter.apply_button.click()
    keep = (features["photons"] >= 1000) & (features["uncertainty_nm"] <= 20) & (data[:, 0] >= 10)
    filtered = viewer.layers["locs filtered"]
    np.testing.assert_array_equal(filtered.data, data[keep])
    assert list(filtered.features.columns) == list(layer.features.columns)
    np.testing.assert_array_equal(filtered.features["label"], features["label"][keep])
    assert filtered.metadata["pixel_size_nm"] == 160.0
    assert f"kept {keep.sum():,} of 500" in widget.filter.status.text()

    path = tmp_path / "filtered.csv"
    viewer.layers.selection = {filtered}
    assert viewer.layers.save(str(path), selected=True, plugin=PLUGIN) == [str(path)]
    ((points, kwargs, _),) = read_localizations(path, pixel_size_nm=160.0)
    np.testing.assert_allclose(points, data[keep], atol=1e-6)
    np.testing.assert_allclose(kwargs["features"]["photons"], features["photons"][keep], rtol=1e-9)


def test_render_histogram_on_the_layers_geometry(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    yx = np.array([[10.0, 20.0], [10.0, 20.0], [30.2, 5.7]])
    data = np.column_stack([[0, 1, 2], yx])
    layer = viewer.add_points(
        data,
        name="few",
        scale=(1, 2, 2),
        translate=(0, 5, -3),
        metadata={"pixel_size_nm": 100.0, "frame_shape": (40, 40)},
    )
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Analyze localizations")
    widget.render.render_nm.value = 25  # 4 render pixels per camera pixel
    _press(qtbot, widget.render)
    render = viewer.layers["few render"]
    assert viewer.layers.index(render) == viewer.layers.index(layer) - 1  # below its points
    assert render.data.shape == (160, 160) and render.data.sum() == 3
    scale, translate = map_geometry((0.25, 0.25), (2, 2), (5, -3))
    np.testing.assert_allclose(render.scale, scale)
    np.testing.assert_allclose(render.translate, translate)
    # the brightest render pixel's centre lands within half a render pixel of the two points
    k = np.unravel_index(np.argmax(render.data), render.data.shape)
    world = np.asarray(k) * render.scale + render.translate
    expected = np.array([10.0, 20.0]) * 2 + [5, -3]
    assert np.all(np.abs(world - expected) <= 0.5 * render.scale + 1e-9)


def test_render_gaussians_coloured_by_time(make_napari_viewer, qtbot, tmp_path, drifting):
    viewer, widget, layer = _open_table(make_napari_viewer, tmp_path, drifting.locs.subset(slice(0, 4000)))
    widget.render.method.value = "gaussians"
    widget.render.render_nm.value = 50
    widget.render.by_time.value = True
    widget.render.time_bins.value = 4
    _press(qtbot, widget.render)
    render = viewer.layers["table render"]
    assert render.rgb and render.data.ndim == 3 and render.data.shape[-1] == 3
    assert 0 <= render.data.min() and render.data.max() <= 1 and render.data.max() > 0.5
    assert render.metadata["render_pixel_nm"] == 50
    assert "coloured by time (4 spans, turbo)" in widget.render.status.text()


def test_a_long_gaussian_render_can_be_cancelled(make_napari_viewer, qtbot, monkeypatch):
    from napari_var_emitter.analysis import render as render_module

    monkeypatch.setattr(render_module, "ROWS_PER_STEP", 2_000)
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    n = 200_000
    data = np.column_stack([rng.integers(0, 100, n), rng.uniform(0, 63, n), rng.uniform(0, 63, n)])
    viewer.add_points(data, name="many", features={"uncertainty_nm": np.full(n, 10.0)})
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Analyze localizations")
    widget.render.method.value = "gaussians"
    widget.render.render_nm.value = 5
    widget.render.panel.run_button.click()
    qtbot.waitUntil(lambda: widget.render.panel.progress.value() > 0, timeout=TIMEOUT_MS)
    widget.render.panel.cancel_button.click()
    qtbot.waitUntil(lambda: not widget.render.running, timeout=TIMEOUT_MS)
    assert widget.render.status.text() == "cancelled"
    assert "many render" not in viewer.layers


def test_a_render_too_large_is_refused(make_napari_viewer, error_notifications):
    viewer = make_napari_viewer()
    viewer.add_points(np.array([[0, 5000.0, 5000.0]]), name="far")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Analyze localizations")
    widget.render.render_nm.value = 1
    widget.render.panel.run_button.click()
    assert not widget.render.running
    assert "choose a larger render pixel" in widget.render.status.text()
