"""Bad input in the widgets: an error notification, and the viewer keeps working (the table of
every surface's answer is test_bad_input.py)."""

from types import SimpleNamespace

import numpy as np
import pytest

from _fakes import HugeFrames
from _tiny import TINY, tiny_model
from napari_var_emitter.errors import InputError
from napari_var_emitter.io.stack import MAX_FRAME_PIXELS
from napari_var_emitter.model.checkpoint import save_checkpoint


def test_widgets_report_bad_input_as_notifications(
    make_napari_viewer, qtbot, tmp_path, monkeypatch, error_notifications, fresh_session
):
    from napari_var_emitter.plugin.predict_widget import CHECKPOINT_FILE, check_image_layer

    errors = error_notifications
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-var-emitter", "Predict emitters")
    widget.model.value = CHECKPOINT_FILE
    widget.checkpoint.value = save_checkpoint(tmp_path / "tiny.pt", tiny_model())

    # a frame too small for the model: refused before the worker starts
    viewer.add_image(np.zeros((1, 1), np.float32), name="dot")
    errors.mark()
    widget.image.value = viewer.layers["dot"]
    widget.run_button.click()
    assert any("too small" in m for m in errors.messages()) and not widget.running

    # 20,000 x 20,000 frames (a layer's shape is checked, its data never read)
    huge = SimpleNamespace(name="huge", data=HugeFrames(), rgb=False, multiscale=False)
    with pytest.raises(InputError, match="too large"):
        check_image_layer(huge)
    assert MAX_FRAME_PIXELS < 20_000 * 20_000

    # NaN inside the frames: found by the worker, reported, and the viewer keeps working
    frames = np.full((2, 16, 16), 300.0, np.float32)
    frames[1, 3, 3] = np.nan
    viewer.add_image(frames, name="nan")
    widget.image.value = viewer.layers["nan"]
    errors.mark()
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert any("NaN" in m for m in errors.messages()), errors.messages()
    viewer.add_image(np.full((2, 16, 16), 300.0, np.float32), name="good")
    widget.image.value = viewer.layers["good"]
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert "good emitters" in viewer.layers

    # a RuntimeError in the worker (torch's out of memory, say) is a notification too: superqt's
    # worker would swallow it and leave the widget "running" for ever
    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        yield

    monkeypatch.setattr("napari_var_emitter.localize.pipeline.iter_predict", out_of_memory)
    errors.mark()
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert any("RuntimeError: CUDA out of memory" in m for m in errors.messages()), errors.messages()
    assert widget.run_button.isEnabled()

    # an export that cannot be written is a notification, and leaves no file
    errors.mark()
    (tmp_path / "taken.csv").mkdir()
    assert widget.export_csv(tmp_path / "taken.csv") is None  # a folder
    assert widget.export_csv(tmp_path / "missing" / "x.hdf5") is None
    assert len(errors.messages()) == 2
    assert not (tmp_path / "missing").exists()
    assert widget.export_csv(tmp_path / "locs.hdf5") == tmp_path / "locs.hdf5"


def test_training_that_goes_nan_is_a_notification(
    make_napari_viewer, qtbot, tmp_path, monkeypatch, error_notifications, fresh_session
):
    from dataclasses import replace

    from napari_var_emitter import train as train_module

    class NaNLoss(train_module.VAREmitterLoss):
        def forward(self, *args, **kwargs):
            loss, parts = super().forward(*args, **kwargs)
            return loss * float("nan"), parts

    monkeypatch.setattr(train_module, "VAREmitterLoss", NaNLoss)
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-var-emitter", "Train model")
    widget.fine_tune.value = False
    widget.batch_size.value = 2
    widget.device.value = "cpu"
    widget.out.value = tmp_path / "m.pt"
    make_config = widget.make_config
    monkeypatch.setattr(
        widget,
        "make_config",
        lambda: replace(make_config(), model=TINY, frame_size=32, val_frames=2, max_nonfinite_steps=3),
    )
    error_notifications.mark()
    widget.train_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    (message,) = error_notifications.messages()
    assert "NaN or infinite 3 steps in a row" in message and "nothing was saved" in message
    assert widget.status.text().startswith("training failed")
    assert widget.train_button.isEnabled() and not (tmp_path / "m.pt").exists()
