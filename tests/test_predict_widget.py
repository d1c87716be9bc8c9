"""Dock widget "Predict emitters", driven as a person would: choose, press, wait, look at the layers."""

from pathlib import Path

import numpy as np
import pytest
import torch

from _widget import PLUGIN, SAMPLE, TIMEOUT_MS, open_data_first, open_widget, predict_and_wait
from napari_var_emitter.camera import Camera
from napari_var_emitter.io.localizations import read_csv
from napari_var_emitter.model.checkpoint import EmitterModel, bundled_path, save_checkpoint
from napari_var_emitter.model.config import ModelConfig
from napari_var_emitter.model.var import TrueVAREmitterPredictor
from napari_var_emitter.plugin.predict_widget import CHECKPOINT_FILE

# The bundled models find the sample's emitters with JI 88.7 (one frame) and 90.4 (3 frames)
# (`pytest tests/test_predict_widget.py -k bundled -s`); the bound leaves a few points of margin.
MIN_SAMPLE_JACCARD = 80.0


pytestmark = pytest.mark.usefixtures("fresh_session")


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory) -> Path:
    """An untrained model file: enough to check the widget's mechanics without the bundled weights."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "random.pt"
    save_checkpoint(path, EmitterModel(net=TrueVAREmitterPredictor(ModelConfig()), threshold=0.5))
    return path


def _use_checkpoint(widget, path):
    widget.model.value = CHECKPOINT_FILE
    widget.checkpoint.value = path


def _outputs(viewer, name=SAMPLE):
    return [
        layer
        for layer in viewer.layers
        if layer.name.startswith(f"{name} ") and "ground truth" not in layer.name
    ]


@pytest.mark.parametrize("opener", [open_data_first, open_widget], ids=["data first", "widget first"])
def test_the_whole_movie_and_every_level_in_either_order(make_napari_viewer, qtbot, opener):
    viewer, widget = opener(make_napari_viewer)
    movie = viewer.layers[SAMPLE]
    n_frames = movie.data.shape[0]
    assert n_frames == 30
    assert widget.image.value is movie
    assert (widget.first_frame.value, widget.last_frame.value) == (0, n_frames - 1)
    assert list(widget.scales.value) == ["8x8", "16x16", "32x32", "64x64"]
    assert widget.camera() == Camera.from_dict(movie.metadata["camera"])
    predict_and_wait(qtbot, widget)
    assert widget.status.text().startswith(
        f"{len(viewer.layers[f'{SAMPLE} emitters'].data)} emitters in 30 frame"
    )
    for size in (8, 16, 32, 64):
        assert viewer.layers[f"{SAMPLE} probability {size}x{size}"].data.shape == (n_frames, size, size)
    frames = viewer.layers[f"{SAMPLE} emitters"].features["frame"].to_numpy()
    assert set(np.unique(frames)) == set(range(n_frames))  # every frame has emitters in the sample
    # the plugin's own outputs are never offered as camera frames
    assert [name for name, _ in widget._image_choices()] == [SAMPLE]


def test_the_form_follows_a_layer_replaced_under_the_widget(make_napari_viewer):
    viewer, widget = open_widget(make_napari_viewer, sample=False)
    viewer.add_image(np.full((5, 32, 32), 100, np.uint16), name="movie")
    assert widget.last_frame.value == 4
    widget.first_frame.value = 2  # a choice the user made for this layer is kept ...
    viewer.add_image(np.zeros((3, 16, 16), np.uint16), name="other")
    assert widget.image.value is viewer.layers["movie"] and widget.first_frame.value == 2
    viewer.layers.remove("movie")  # ... until the layer is replaced by another of the same name
    viewer.add_image(np.full((12, 48, 48), 100, np.uint16), name="movie")
    widget.image.value = viewer.layers["movie"]
    assert (widget.first_frame.value, widget.last_frame.value) == (0, 11)
    assert widget.scales.choices[-1] == "48x48"
    viewer.layers["movie"].data = np.full((20, 48, 48), 100, np.uint16)  # new data, same layer
    assert widget.make_job().stop == 20


def test_a_layer_removed_during_a_run(make_napari_viewer, qtbot, random_checkpoint, error_notifications):
    viewer, widget = open_widget(make_napari_viewer, sample=False)
    viewer.add_image(np.full((300, 64, 64), 100, np.float32), name="long")
    _use_checkpoint(widget, random_checkpoint)
    widget.threshold.value = 0.05
    widget.run_button.click()
    viewer.layers.remove("long")
    assert widget.image.value is None
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert not error_notifications.messages()
    assert "300 frame(s)" in widget.status.text()
    assert viewer.layers["long emitters"].data.shape[1] == 3  # the results of the run are kept
    assert widget.image.value is None and widget.run_button.isEnabled()


def test_maps_points_and_render_geometry(make_napari_viewer, qtbot, random_checkpoint):
    viewer, widget = open_widget(make_napari_viewer)
    _use_checkpoint(widget, random_checkpoint)
    assert list(widget.scales.choices) == ["8x8", "16x16", "32x32", "64x64"]
    movie = viewer.layers[SAMPLE]
    movie.scale = (1.0, 2.0, 2.0)  # the input's own geometry must be honoured
    movie.translate = (0.0, 10.0, -4.0)
    widget.threshold.value = 0.05
    widget.first_frame.value, widget.last_frame.value = 2, 5
    predict_and_wait(qtbot, widget)
    assert "device: cpu" in widget.status.text() or "device: cuda" in widget.status.text()

    maps = {layer.name: layer for layer in _outputs(viewer) if "probability" in layer.name}
    assert sorted(maps) == sorted(f"{SAMPLE} probability {n}" for n in ("8x8", "16x16", "32x32", "64x64"))
    for size in (8, 16, 32, 64):
        layer = maps[f"{SAMPLE} probability {size}x{size}"]
        f = 64 / size
        assert layer.data.shape == (4, size, size)
        np.testing.assert_allclose(layer.scale, [1.0, 2.0 * f, 2.0 * f])
        # docs/CONVENTIONS.md, section 1: translate = t + s * (f - 1) / 2; frames start at the range's first
        np.testing.assert_allclose(layer.translate, [2.0, 10.0 + (f - 1), -4.0 + (f - 1)])
        assert np.all((layer.data >= 0) & (layer.data <= 1))

    render = viewer.layers[f"{SAMPLE} super-resolution"]
    assert render.data.shape == (512, 512)
    np.testing.assert_allclose(render.scale, [0.25, 0.25])
    np.testing.assert_allclose(render.translate, [10.0 + 2 * (0.125 - 1) / 2, -4.0 + 2 * (0.125 - 1) / 2])

    points = viewer.layers[f"{SAMPLE} emitters"]
    np.testing.assert_allclose(points.scale, movie.scale)
    np.testing.assert_allclose(points.translate, movie.translate)
    assert points.data.shape[1] == 3
    for column in ("probability", "photons", "background", "uncertainty_nm", "sigma_nm", "frame"):
        assert column in points.features.columns
    if len(points.data):
        assert set(np.unique(points.data[:, 0])) <= {2.0, 3.0, 4.0, 5.0}
        np.testing.assert_array_equal(points.data[:, 0], points.features["frame"].to_numpy())
        assert points.features["probability"].min() >= 0.05


def test_rerun_replaces_layers_and_super_resolution_map(make_napari_viewer, qtbot, random_checkpoint):
    viewer, widget = open_widget(make_napari_viewer)
    _use_checkpoint(widget, random_checkpoint)
    widget.last_frame.value = 1
    predict_and_wait(qtbot, widget)
    n_layers = len(viewer.layers)
    predict_and_wait(qtbot, widget)
    assert len(viewer.layers) == n_layers  # same names: replaced, not duplicated

    widget.sr_factor.value = 2
    assert "128x128" in widget.scales.choices
    widget.scales.value = ["8x8", "128x128"]
    predict_and_wait(qtbot, widget)
    maps = [layer for layer in _outputs(viewer) if "probability" in layer.name]
    assert sorted(layer.name for layer in maps) == [
        f"{SAMPLE} probability 128x128",
        f"{SAMPLE} probability 8x8",
    ]
    fine = viewer.layers[f"{SAMPLE} probability 128x128"]
    assert fine.data.shape == (2, 128, 128)
    np.testing.assert_allclose(fine.scale[1:], [0.5, 0.5])  # docs/CONVENTIONS.md: 2x -> scale 0.5,
    np.testing.assert_allclose(fine.translate[1:], [-0.25, -0.25])  # translate -0.25


def test_export_csv_button(make_napari_viewer, qtbot, random_checkpoint, tmp_path, monkeypatch):
    viewer, widget = open_widget(make_napari_viewer)
    _use_checkpoint(widget, random_checkpoint)
    widget.threshold.value = 0.05
    widget.last_frame.value = 2
    assert not widget.export_button.isEnabled()
    predict_and_wait(qtbot, widget)
    target = tmp_path / "locs.csv"
    monkeypatch.setattr(
        "napari_var_emitter.plugin.predict_widget.QFileDialog.getSaveFileName",
        lambda *args, **kwargs: (str(target), "CSV (*.csv)"),
    )
    widget.export_button.click()
    assert target.exists()
    back = read_csv(target, 100.0)
    points = viewer.layers[f"{SAMPLE} emitters"]
    assert len(back) == len(points.data)
    np.testing.assert_allclose(np.column_stack([back.frame, back.y, back.x]), points.data, atol=1e-9)
    np.testing.assert_allclose(back.probability, points.features["probability"].to_numpy())


def test_lazy_dask_stack(make_napari_viewer, qtbot, random_checkpoint):
    import dask.array as da

    viewer, widget = open_widget(make_napari_viewer, sample=False)
    frames = da.from_array(np.full((6, 32, 32), 100, np.uint16), chunks=(1, 32, 32))
    viewer.add_image(frames, name="lazy")
    _use_checkpoint(widget, random_checkpoint)
    widget.first_frame.value = 3
    predict_and_wait(qtbot, widget)
    assert viewer.layers["lazy probability 32x32"].data.shape == (3, 32, 32)


def test_single_frame_layer(make_napari_viewer, qtbot, random_checkpoint):
    viewer, widget = open_widget(make_napari_viewer, sample=False)
    viewer.add_image(np.full((32, 32), 100, np.float32), name="frame", scale=(0.5, 0.5))
    _use_checkpoint(widget, random_checkpoint)
    predict_and_wait(qtbot, widget)
    coarse = viewer.layers["frame probability 4x4"]
    assert coarse.data.shape == (4, 4)
    np.testing.assert_allclose(coarse.scale, [4.0, 4.0])  # s * f = 0.5 * 8
    np.testing.assert_allclose(coarse.translate, [1.75, 1.75])  # s * (f - 1) / 2
    assert viewer.layers["frame emitters"].data.shape[1] == 2


def test_cancel(make_napari_viewer, qtbot, random_checkpoint):
    viewer, widget = open_widget(make_napari_viewer, sample=False)
    viewer.add_image(np.full((800, 64, 64), 100, np.float32), name="long")
    _use_checkpoint(widget, random_checkpoint)
    widget.run_button.click()
    widget.cancel_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.status.text() == "cancelled"
    assert [layer.name for layer in viewer.layers] == ["long"]
    assert widget.run_button.isEnabled()


def test_bad_input_is_reported_and_the_viewer_keeps_working(
    make_napari_viewer, qtbot, random_checkpoint, tmp_path, error_notifications
):
    errors = error_notifications
    viewer, widget = open_widget(make_napari_viewer, sample=False)
    _use_checkpoint(widget, random_checkpoint)

    errors.mark()
    widget.run_button.click()  # no image layer
    assert any("no image layer" in m for m in errors.messages())
    assert not widget.running

    viewer.add_image(np.zeros((2, 3, 32, 32), np.float32), name="4d")
    errors.mark()
    widget.image.value = viewer.layers["4d"]
    widget.run_button.click()
    assert any("4 dimensions" in m for m in errors.messages())

    viewer.add_image(np.zeros((32, 32, 3), np.uint8), name="rgb", rgb=True)
    errors.mark()
    widget.image.value = viewer.layers["rgb"]
    widget.run_button.click()
    assert any("RGB" in m for m in errors.messages())

    viewer.add_image(np.zeros((0, 32, 32), np.float32), name="empty", contrast_limits=(0, 1))
    errors.mark()
    widget.image.value = viewer.layers["empty"]
    widget.run_button.click()
    assert any("empty" in m for m in errors.messages())

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    errors.mark()
    widget.checkpoint.value = garbage
    assert errors.messages(), "an unreadable checkpoint must be reported"

    # an error inside the worker (a device this machine lacks) reaches the user too
    viewer.add_image(np.full((2, 32, 32), 100, np.float32), name="good")
    widget.image.value = viewer.layers["good"]
    widget.checkpoint.value = random_checkpoint
    widget.device.value = "mps" if not torch.backends.mps.is_available() else "cuda"
    errors.mark()
    predict_and_wait(qtbot, widget)
    assert any("not available" in m for m in errors.messages())
    assert widget.status.text().startswith("failed")

    # and the viewer still works: predict on the CPU
    widget.device.value = "cpu"
    predict_and_wait(qtbot, widget)
    assert "good probability 32x32" in viewer.layers


@pytest.mark.parametrize("choice", ["bundled", "bundled, 3 frames (movies)"])
def test_bundled_model_finds_the_sample_emitters(make_napari_viewer, qtbot, choice):
    from napari_var_emitter.analysis.metrics import evaluate
    from napari_var_emitter.plugin.layers import points_to_locs

    assert bundled_path().exists(), f"the bundled weights are missing: {bundled_path()}"
    assert bundled_path("window-3").exists()
    viewer, widget = open_widget(make_napari_viewer)
    assert widget.model.value == "bundled, auto"  # the default
    widget.model.value = dict(widget._model_choices())[choice]
    assert widget.current_model().net.config.frame_window == (1 if choice == "bundled" else 3)
    predict_and_wait(qtbot, widget)
    truth = viewer.layers[f"{SAMPLE} ground truth"]
    points = viewer.layers[f"{SAMPLE} emitters"]
    report = evaluate(
        points_to_locs(points.data, points.features), points_to_locs(truth.data, truth.features), 100.0
    )
    print(f"bundled model on the sample: {report}")
    assert report.jaccard > MIN_SAMPLE_JACCARD


def test_the_confirm_checkbox_reaches_the_prediction(make_napari_viewer, qtbot):
    viewer, widget = open_widget(make_napari_viewer)
    widget.threshold.value = 0.95  # the network alone keeps few; the fit confirms more below it
    widget.last_frame.value = 9
    counts = {}
    for confirm in (True, False):
        widget.confirm.value = confirm
        assert widget.make_job().options.confirm is confirm
        predict_and_wait(qtbot, widget)
        points = viewer.layers[f"{SAMPLE} emitters"]
        counts[confirm] = len(points.data)
        if not confirm:
            assert points.features["probability"].min() >= 0.95
    assert counts[True] > counts[False]


def test_auto_model_takes_3_frames_for_a_movie_and_1_for_shuffled_frames(make_napari_viewer, qtbot):
    viewer, widget = open_widget(make_napari_viewer)
    assert widget.model.value == "bundled, auto"
    predict_and_wait(qtbot, widget)
    assert "model: bundled, 3 frames (a movie:" in widget.status.text()
    movie = viewer.layers[SAMPLE].data
    shuffled = movie[np.random.default_rng(0).permutation(len(movie))]
    viewer.add_image(shuffled, name="shuffled")
    widget.image.value = viewer.layers["shuffled"]
    predict_and_wait(qtbot, widget)
    assert "model: bundled, 1 frame (not a movie:" in widget.status.text()


def test_the_large_frame_option_reaches_the_prediction(make_napari_viewer, qtbot, monkeypatch):
    from napari_var_emitter.localize import pipeline as predict_module

    seen = []
    real = predict_module.iter_predict

    def spy(*args, **kwargs):
        seen.append(kwargs["options"].local_attention)
        return real(*args, **kwargs)

    monkeypatch.setattr(predict_module, "iter_predict", spy)
    viewer, widget = open_widget(make_napari_viewer)
    widget.last_frame.value = 1
    assert widget.local_attention.value is False  # off by default: the default answers are global
    for value in (True, False):
        widget.local_attention.value = value
        assert widget.make_job().options.local_attention is value
        predict_and_wait(qtbot, widget)
        assert len(viewer.layers[f"{SAMPLE} emitters"].data) > 0
    assert seen == [True, False]


def test_results_show_the_movie_rings_and_a_summary_in_a_fixed_order(make_napari_viewer, qtbot, tmp_path):
    viewer, widget = open_data_first(make_napari_viewer)
    widget.last_frame.value = 9
    predict_and_wait(qtbot, widget)
    names = [layer.name for layer in viewer.layers]
    maps = [f"{SAMPLE} probability {n}" for n in ("8x8", "16x16", "32x32", "64x64")]
    expected = [SAMPLE, *maps, f"{SAMPLE} super-resolution", f"{SAMPLE} emitters"]
    assert names[: len(expected)] == expected  # bottom to top; the truth stays above
    assert viewer.layers[SAMPLE].visible
    assert [viewer.layers[n].visible for n in maps] == [False, False, False, True]  # the finest shows
    assert all(viewer.layers[n].blending == "additive" for n in maps)
    assert not viewer.layers[f"{SAMPLE} super-resolution"].visible  # it would cover the movie
    points = viewer.layers[f"{SAMPLE} emitters"]
    assert np.all(points.face_color[:, 3] == 0) and points.size.min() > 3  # hollow, the spot's size
    assert np.all(points.border_color[:, 3] > 0) and len(np.unique(points.border_color, axis=0)) > 1
    # user-facing lengths in nm, as in the exported table
    widget.export_csv(tmp_path / "locs.csv")
    exported = read_csv(tmp_path / "locs.csv", 100.0)
    np.testing.assert_allclose(points.features["uncertainty_nm"], exported.uncertainty * 100.0)
    report = (tmp_path / "locs.summary.md").read_text()
    assert "per frame" in report and "camera (from the layer's metadata)" in report
    # the results panel
    assert not widget.results.isHidden()
    text = widget.results.text.text()
    assert "10 frame(s)" in text and "per um^2" in text and "precision: median" in text
    assert len(widget.results.per_frame.values) == 10
    # a 2x run after the user moved layers around: the same order again
    viewer.layers.move(viewer.layers.index(f"{SAMPLE} emitters"), 0)
    widget.sr_factor.value = 2
    widget.scales.value = ["8x8", "128x128"]
    predict_and_wait(qtbot, widget)
    names = [layer.name for layer in viewer.layers]
    fine = [f"{SAMPLE} probability 8x8", f"{SAMPLE} probability 128x128"]
    assert names[:5] == [SAMPLE, *fine, f"{SAMPLE} super-resolution", f"{SAMPLE} emitters"]


def test_long_stacks_show_no_maps_by_default_and_too_many_are_refused(
    make_napari_viewer, error_notifications
):
    import dask.array as da

    viewer, widget = open_widget(make_napari_viewer, sample=False)
    viewer.add_image(da.zeros((100_000, 512, 512), np.uint16, chunks=(1, 512, 512)), name="long")
    assert widget.scales.choices == ["64x64", "128x128", "256x256", "512x512"] and widget.scales.value == []
    assert widget.memory.value == "no maps: localizations only"
    widget.scales.value = ["512x512"]
    assert widget.memory.value.startswith("maps: 97.7 GB (too much")  # 100,000 x 512 x 512 float32
    widget.run_button.click()
    assert not widget.running
    assert any("would take 97.7 GB" in m for m in error_notifications.messages())
    assert widget.status.text().startswith("not started: the maps chosen would take")


def test_both_docks_fit_a_1080p_screen(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "simulated_smlm_movie")
    _, predict = viewer.window.add_plugin_dock_widget(PLUGIN, "Predict emitters")
    _, train = viewer.window.add_plugin_dock_widget(PLUGIN, "Train model")
    # the forms scroll: what each dock asks for leaves room for the other and napari's own panels
    assert predict.sizeHint().height() + train.sizeHint().height() < 1080 - 200
    assert max(predict.minimumSizeHint().height(), train.minimumSizeHint().height()) < 400
