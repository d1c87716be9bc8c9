"""Opening the "Predict emitters" dock as a person would, and pressing Predict."""

PLUGIN = "napari-var-emitter"
SAMPLE = "Simulated SMLM movie"
TIMEOUT_MS = 180_000


def open_widget(make_napari_viewer, sample=True):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Predict emitters")
    if sample:
        viewer.open_sample(PLUGIN, "simulated_smlm_movie")
    return viewer, widget


def open_data_first(make_napari_viewer):
    """The usual order of clicks: the data first, then Plugins > Predict emitters."""
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "simulated_smlm_movie")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Predict emitters")
    return viewer, widget


def predict_and_wait(qtbot, widget):
    widget.run_button.click()
    assert widget.running
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
