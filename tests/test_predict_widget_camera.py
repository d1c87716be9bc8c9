"""The camera and PSF sections of "Predict emitters": filled from the layer, measured from the frames
or from an image of beads, and warned about when the frames contradict them."""

from pathlib import Path

import numpy as np
import pytest

from _widget import PLUGIN, SAMPLE, TIMEOUT_MS, open_data_first, open_widget, predict_and_wait
from napari_var_emitter.camera import Camera

pytestmark = pytest.mark.usefixtures("fresh_session")


def test_camera_prefilled_from_the_sample(make_napari_viewer):
    viewer, widget = open_widget(make_napari_viewer)
    assert widget.image.value is viewer.layers[SAMPLE]
    assert widget.camera() == Camera.from_dict(viewer.layers[SAMPLE].metadata["camera"])
    assert widget.last_frame.value == viewer.layers[SAMPLE].data.shape[0] - 1
    # a layer with physical units gives its pixel size
    layer = viewer.add_image(np.zeros((2, 32, 32), np.float32), name="um", scale=(1, 0.16, 0.16))
    layer.units = ("pixel", "um", "um")
    widget.image.value = layer
    assert widget.camera_widgets["pixel_size_nm"].value == pytest.approx(160.0)


REAL = Path(__file__).parent / "data" / "real_af647_sdt" / "frames.tif"


def test_a_movie_without_camera_metadata_has_its_camera_measured(make_napari_viewer, qtbot):
    import tifffile

    viewer = make_napari_viewer()
    viewer.add_image(tifffile.imread(REAL), name="af647")  # real frames: the camera is not known
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Predict emitters")
    assert widget.camera_section.source == "the form's defaults"
    widget.model.value = "bundled"
    predict_and_wait(qtbot, widget)
    section = widget.camera_section
    assert section.source == "measured from the frames" and section.note.value.startswith("measured: offset")
    assert 150 < widget.camera().baseline < 230 and section.psf_sigma_nm() > 80
    assert "camera (measured from the frames)" in widget.results.text.text()
    per_frame = widget.results.summary.per_frame
    assert 10 <= per_frame.mean() <= 35

    # a camera typed by hand that the frames contradict: a warning beside the fields
    widget.camera_widgets["e_per_adu"].value = 1.0
    widget.camera_widgets["em_gain"].value = 1.0
    assert section.source == "entered in the form"
    predict_and_wait(qtbot, widget)
    assert section.note.value.startswith("warning: the camera's noise variance slope")


def test_measure_from_image_fills_the_camera_and_says_how_sure(make_napari_viewer, qtbot):
    import tifffile

    viewer = make_napari_viewer()
    viewer.add_image(tifffile.imread(REAL), name="af647")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Predict emitters")
    widget.camera_section.form.measure_button.clicked.emit()
    qtbot.waitUntil(lambda: not widget.camera_section.measuring, timeout=TIMEOUT_MS)
    note = widget.camera_section.note.value
    assert note.startswith("measured: offset") and "+-" in note and "PSF" in note
    assert widget.camera_section.source == "measured from the frames"
    assert widget.camera().em_gain == 100.0  # the EMCCD convention; only em_gain / e_per_adu is measured


def test_a_psf_from_beads_reaches_the_fit_and_a_bad_file_is_refused(
    make_napari_viewer, qtbot, tmp_path, error_notifications
):
    from napari_var_emitter.calibration.beads import measure_psf
    from napari_var_emitter.simulation.beads import simulate_beads

    path = tmp_path / "psf.json"
    measure_psf(simulate_beads(planes_nm=(0.0,) * 3, seed=1)[0]).save(path)
    viewer, widget = open_data_first(make_napari_viewer)
    widget.last_frame.value = 4
    widget.camera_section.psf_file.value = path
    psf = widget.make_job().options.psf
    assert psf is not None and psf.source["beads"] >= 9
    predict_and_wait(qtbot, widget)
    found = len(viewer.layers[f"{SAMPLE} emitters"].data)
    assert found > 0

    # a file that is not a PSF: one message, and the results on screen stay
    not_psf = tmp_path / "camera.json"
    Camera().save(not_psf)
    widget.camera_section.psf_file.value = not_psf
    error_notifications.mark()
    widget.run_button.click()
    assert not widget.running
    assert any('"kind": "psf"' in m for m in error_notifications.messages())
    assert len(viewer.layers[f"{SAMPLE} emitters"].data) == found


def test_measure_psf_from_an_image_of_beads(
    make_napari_viewer, qtbot, tmp_path, monkeypatch, error_notifications
):
    """Open the beads, choose them, press "Measure PSF from image (beads)": the PSF is measured, saved
    and chosen; then the movie is predicted with it. An image without beads: one message."""
    from napari_var_emitter.simulation.beads import simulate_beads

    monkeypatch.setenv("HOME", str(tmp_path))
    viewer, widget = open_data_first(make_napari_viewer)
    viewer.add_image(simulate_beads(planes_nm=(0.0,) * 3, seed=2)[0], name="beads 1")
    widget.image.value = viewer.layers["beads 1"]
    section = widget.camera_section
    section.beads_button.clicked.emit()
    qtbot.waitUntil(lambda: not section.measuring, timeout=TIMEOUT_MS)
    saved = tmp_path / "napari-var-emitter-models" / "beads_1_psf.json"
    assert saved.is_file() and Path(str(section.psf_file.value)) == saved
    assert section.note.value.startswith("PSF measured from") and "sigma" in section.note.value

    widget.image.value = viewer.layers[SAMPLE]
    widget.last_frame.value = 2
    assert widget.make_job().options.psf.source["beads"] >= 9
    predict_and_wait(qtbot, widget)
    assert len(viewer.layers[f"{SAMPLE} emitters"].data) > 0

    viewer.add_image(np.full((3, 40, 40), 100.0, np.float32), name="no beads")
    widget.image.value = viewer.layers["no beads"]
    error_notifications.mark()
    section.beads_button.clicked.emit()
    qtbot.waitUntil(lambda: not section.measuring, timeout=TIMEOUT_MS)
    assert section.note.value.startswith("PSF not measured")
    assert any("PSF could not be measured" in m for m in error_notifications.messages())
    assert Path(str(section.psf_file.value)) == saved  # the PSF chosen before stays
