"""Dock widget "Train model", driven as a person would, with a tiny training run."""

from dataclasses import replace

import pytest
import torch

from napari_var_emitter.localize import load_model
from napari_var_emitter.plugin.session import SESSION

PLUGIN = "napari-var-emitter"
TIMEOUT_MS = 300_000


pytestmark = pytest.mark.usefixtures("fresh_session")


def _open(make_napari_viewer, tmp_path, monkeypatch, steps=4):
    viewer = make_napari_viewer()
    _, predict = viewer.window.add_plugin_dock_widget(PLUGIN, "Predict emitters")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Train model")
    widget.fine_tune.value = False
    widget.steps.value = steps
    widget.batch_size.value = 2
    widget.val_every.value = 2
    widget.device.value = "cpu"
    widget.out.value = tmp_path / "models" / "mine.pt"
    widget.model_name.value = "mine"
    # a tiny run: small frames and a small validation set (sizes the form does not show)
    make_config = widget.make_config
    monkeypatch.setattr(widget, "make_config", lambda: replace(make_config(), frame_size=32, val_frames=2))
    return viewer, predict, widget


def test_camera_follows_the_predict_widget(make_napari_viewer, tmp_path, monkeypatch):
    viewer, predict, widget = _open(make_napari_viewer, tmp_path, monkeypatch)
    predict.camera_widgets["pixel_size_nm"].value = 160.0
    predict.camera_widgets["em_gain"].value = 1.0
    assert widget.camera_widgets["pixel_size_nm"].value == 160.0
    assert widget.camera().em_gain == 1.0
    assert widget.make_config().camera == predict.camera()


def test_training_in_background_registers_the_model(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    viewer, predict, widget = _open(make_napari_viewer, tmp_path, monkeypatch)
    widget.train_button.click()
    # the click returns at once: training runs in a worker thread, not on the UI thread
    assert widget.running and not widget.train_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)

    assert widget.progress.maximum() == 4 and widget.progress.value() == 4
    assert len(widget.loss_curve.values) == 4
    assert widget.metrics.text().startswith("validation at step 4")
    assert widget.status.text().startswith("done")
    out = tmp_path / "models" / "mine.pt"
    assert out.exists()
    assert SESSION.models() == {"mine": out}
    # the trained model is a choice of the predict widget at once, and loads
    choices = [choice for choice in predict.model.choices if choice == str(out)]
    assert choices == [str(out)]
    predict.model.value = str(out)
    assert predict.current_model() is not None
    widget.loss_curve.grab()  # paints


def test_cancel_keeps_the_last_checkpoint(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    viewer, predict, widget = _open(make_napari_viewer, tmp_path, monkeypatch, steps=10_000)
    out = tmp_path / "models" / "mine.pt"
    widget.train_button.click()
    qtbot.waitUntil(lambda: "mine" in SESSION.models(), timeout=TIMEOUT_MS)  # first checkpoint
    widget.cancel_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.status.text().startswith("cancelled; the last checkpoint is kept")
    assert widget.progress.value() < 10_000
    assert load_model(out) is not None
    assert widget.train_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_bad_settings_are_reported(make_napari_viewer, qtbot, tmp_path, monkeypatch, error_notifications):
    errors = error_notifications
    viewer, predict, widget = _open(make_napari_viewer, tmp_path, monkeypatch)
    widget.psf_min.value, widget.psf_max.value = 200.0, 100.0
    errors.mark()
    widget.train_button.click()
    assert any("PSF sigma range is empty" in m for m in errors.messages())
    assert not widget.running

    widget.psf_min.value = 100.0
    folder = tmp_path / "folder.pt"
    folder.mkdir()
    widget.out.value = folder
    errors.mark()
    widget.train_button.click()
    assert any("is a folder" in m for m in errors.messages())
    assert not widget.running

    widget.out.value = tmp_path / "ok.pt"
    not_psf = tmp_path / "camera.json"
    not_psf.write_text("{}")
    widget.psf_file.value = not_psf
    errors.mark()
    widget.train_button.click()
    assert any('"kind": "psf"' in m for m in errors.messages())
    assert not widget.running
    widget.psf_file.value = ""

    # an error inside the worker (a device this machine lacks) is a notification, not a crash
    widget.out.value = tmp_path / "ok.pt"
    widget.device.value = "mps" if not torch.backends.mps.is_available() else "cuda"
    errors.mark()
    widget.train_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert any("not available" in m for m in errors.messages())
    assert widget.status.text().startswith("training failed")


def test_train_for_this_movie_simulates_the_movie_predicted(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    viewer, predict, widget = _open(make_napari_viewer, tmp_path, monkeypatch)
    assert not widget.for_movie_button.isEnabled()  # nothing predicted yet
    viewer.open_sample(PLUGIN, "simulated_smlm_movie")
    predict.last_frame.value = 9
    predict.run_button.click()
    qtbot.waitUntil(lambda: not predict.running, timeout=TIMEOUT_MS)
    scene = SESSION.scene
    assert scene.name == "Simulated SMLM movie" and widget.for_movie_button.isEnabled()
    summary = predict.results.summary
    assert scene.density_per_um2 == summary.density_per_um2 > 0.1
    assert 10 < scene.background_photons < 200 and scene.psf_sigma_nm == 125.0  # the model's own
    widget.for_movie_button.click()
    assert widget.running
    cfg = widget.cfg
    assert cfg.psf_sigma_nm == pytest.approx((0.9 * 125.0, 1.1 * 125.0))
    background = (0.5 * scene.background_photons, 1.5 * scene.background_photons)
    assert cfg.background_photons == pytest.approx(background, abs=0.01)  # the form's 2 decimals
    assert cfg.density_per_um2[1] == pytest.approx(2 * scene.density_per_um2, abs=0.01)
    assert cfg.camera == predict.camera() and cfg.init_from == "bundled"
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert "for Simulated SMLM movie" in SESSION.models()
    assert any(choice.startswith(str(tmp_path)) for choice in predict.model.choices)
    assert scene.psf_file is None and cfg.psf_file is None

    # a prediction that fitted a PSF measured from beads: training draws the movies with it
    from napari_var_emitter.calibration.beads import measure_psf
    from napari_var_emitter.simulation.beads import simulate_beads

    path = tmp_path / "psf.json"
    measure_psf(simulate_beads(planes_nm=(0.0,) * 3, seed=1)[0]).save(path)
    predict.model.value = predict.model.choices[0]
    predict.camera_section.psf_file.value = path
    predict.run_button.click()
    qtbot.waitUntil(lambda: not predict.running, timeout=TIMEOUT_MS)
    assert SESSION.scene.psf_file == str(path)
    widget.set_scene(SESSION.scene)
    cfg = widget.make_config()
    assert cfg.psf_file == str(path) and SESSION.scene.psf_sigma_nm == pytest.approx(99.5, abs=2)
