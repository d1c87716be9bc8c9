"""Training never poisons its checkpoint: NaN losses are skipped then stop it, a crash keeps the last
good checkpoint, and resume continues from it."""

import numpy as np
import pytest
import torch

from _tiny import TINY, tiny_train_config
from napari_var_emitter import train as train_module
from napari_var_emitter.errors import CheckpointError, TrainingError
from napari_var_emitter.model import ModelConfig, TrueVAREmitterPredictor
from napari_var_emitter.model.checkpoint import (
    CONFIG_LIMITS,
    EmitterModel,
    load_checkpoint,
    read_payload,
    save_checkpoint,
)
from napari_var_emitter.train import TrainConfig, iter_train


def _cfg(tmp_path, **kwargs) -> TrainConfig:
    return tiny_train_config(tmp_path, **kwargs)


class _NaNAfter:
    """A loss that turns NaN from its ``start``-th call on (counting from 0)."""

    def __init__(self, real, start):
        self.real, self.start, self.calls = real, start, 0

    def __call__(self, *args, **kwargs):
        loss, parts = self.real(*args, **kwargs)
        self.calls += 1
        if self.calls > self.start:
            loss = loss * float("nan")
        return loss, parts


def _patch_loss(monkeypatch, start):
    real_cls = train_module.VAREmitterLoss
    made = []

    def factory(*args, **kwargs):
        made.append(_NaNAfter(real_cls(*args, **kwargs), start))
        return made[-1]

    monkeypatch.setattr(train_module, "VAREmitterLoss", factory)
    return made


def test_nan_loss_is_skipped_counted_and_stops_training(tmp_path, monkeypatch):
    _patch_loss(monkeypatch, start=2)  # steps 1, 2 are good (checkpoint at 2), then NaN for ever
    cfg = _cfg(tmp_path, steps=50, max_nonfinite_steps=3)
    events = []
    with pytest.raises(
        TrainingError, match=r"step 5: .*NaN or infinite 3 steps in a row.*last good checkpoint"
    ):
        for event in iter_train(cfg):
            events.append(event)
            if event.checkpoint:
                saved = torch.load(event.checkpoint, weights_only=True)["state_dict"]
    assert [e.step for e in events] == [1, 2, 3, 4]
    assert [e.skipped for e in events] == [0, 0, 1, 2]
    assert np.isnan(events[-1].loss) and events[1].checkpoint
    model = load_checkpoint(cfg.out)  # the last good checkpoint, untouched by the NaN steps
    assert model.meta["step"] == 2
    for key, value in model.net.state_dict().items():
        assert torch.equal(value, saved[key])
        assert torch.isfinite(value).all()


def test_an_occasional_nan_step_is_skipped_and_training_goes_on(tmp_path, monkeypatch):
    made = _patch_loss(monkeypatch, start=10**9)
    original = _NaNAfter.__call__

    def one_bad(self, *args, **kwargs):
        loss, parts = original(self, *args, **kwargs)
        return (loss * float("nan") if self.calls == 2 else loss), parts

    monkeypatch.setattr(_NaNAfter, "__call__", one_bad)
    events = list(iter_train(_cfg(tmp_path, max_nonfinite_steps=2)))
    assert made and [e.skipped for e in events] == [0, 1, 1, 1]
    assert load_checkpoint(tmp_path / "m.pt").meta["step"] == 4


def test_non_finite_weights_are_never_saved(tmp_path):
    torch.manual_seed(0)
    model = EmitterModel(net=TrueVAREmitterPredictor(ModelConfig(**TINY)))
    path = save_checkpoint(tmp_path / "m.pt", model)
    before = path.read_bytes()
    with torch.no_grad():
        next(model.net.parameters())[0] = float("nan")
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        save_checkpoint(path, model)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # no temporary left


def test_a_crash_keeps_the_last_checkpoint_and_resume_continues_from_it(tmp_path, monkeypatch):
    real = train_module.simulate_batch
    calls = []

    def crash_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("simulated crash (out of memory, a bug, a power cut...)")
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "simulate_batch", crash_on_third)
    cfg = _cfg(tmp_path)
    steps = []
    with pytest.raises(RuntimeError, match="simulated crash"):
        for event in iter_train(cfg):
            steps.append(event.step)
    assert steps == [1, 2]
    assert load_checkpoint(cfg.out).meta["step"] == 2
    assert read_payload(cfg.out)["train_state"]["step"] == 2

    monkeypatch.setattr(train_module, "simulate_batch", real)
    resumed = list(iter_train(_cfg(tmp_path, resume=True)))
    assert [e.step for e in resumed] == [3, 4]  # continues, does not start over
    assert load_checkpoint(cfg.out).meta["step"] == 4


def test_resume_from_a_damaged_training_state_is_a_clear_error(tmp_path):
    list(iter_train(_cfg(tmp_path, steps=2)))
    payload = read_payload(tmp_path / "m.pt")
    for state, message in [
        ({"step": "two"}, "no valid step"),
        ({"step": 2, "optimizer": {"state": {}, "param_groups": [{"params": [0]}]}}, "optimiser state"),
    ]:
        payload["train_state"] = state
        torch.save(payload, tmp_path / "m.pt")
        with pytest.raises(CheckpointError, match=message):
            list(iter_train(_cfg(tmp_path, steps=3, resume=True)))


@pytest.mark.parametrize(
    "override, message",
    [
        ({"embed_dim": 10**9}, "out of range"),  # ModelConfig.from_dict's own bound
        ({"conv_dim": 10**9}, "conv_dim"),
        ({"conv_blocks": 10**7}, "conv_blocks"),
        ({"encoder_blocks": 10**6}, "encoder_blocks"),
        ({"token_dim": 10**8}, "token_dim"),
        ({"num_phi": 10**6}, "num_phi"),
        ({"extra_levels": 60}, "extra_levels"),
        ({"frame_window": 10**6 + 1}, "frame_window"),
        ({"photon_scale": float("nan")}, "photon_scale"),
        ({"photon_scale": float("inf")}, "photon_scale"),
        ({"patch_nums": [8, 16, 32, 2**20], "train_size": 2**20}, "train_size"),
        ({"embed_dim": 4096, "num_layers": 128}, "weights"),  # each in range, together 25 G weights
        ({"unknown_key": 1}, "unknown"),
        ({"embed_dim": "48"}, "number"),
    ],
)
def test_out_of_range_model_config_is_refused_before_allocating(tmp_path, override, message):
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "m.pt", EmitterModel(net=TrueVAREmitterPredictor(ModelConfig(**TINY))))
    payload = torch.load(path, weights_only=True)
    payload["model_config"].update(override)
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_config_limits_cover_every_integer_size():
    sizes = {f for f, v in ModelConfig().to_dict().items() if isinstance(v, int) and not isinstance(v, bool)}
    assert sizes <= set(CONFIG_LIMITS)


def test_a_training_config_out_of_range_is_refused_before_allocating(tmp_path):
    with pytest.raises(CheckpointError, match="conv_dim"):
        next(iter_train(_cfg(tmp_path, model={**TINY, "conv_dim": 10**9})))


def test_finalize_weights_keeps_a_chosen_threshold_and_drops_the_training_state(tmp_path, capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
    from finalize_weights import main as finalize
    from napari_var_emitter.model.checkpoint import load_checkpoint, read_payload

    cfg = _cfg(tmp_path, steps=2)
    list(iter_train(cfg))
    assert "train_state" in read_payload(cfg.out)
    out = tmp_path / "final.pt"
    assert finalize([cfg.out, str(out), "--threshold", "0.4", "--note", "test"]) == 0
    model = load_checkpoint(out)
    assert model.threshold == 0.4 and model.meta["provenance"] == "test"
    assert model.meta["validation"]["threshold"] == 0.4 and np.isfinite(model.uncertainty_scale)
    assert "train_state" not in read_payload(out)
    assert "threshold" in capsys.readouterr().out


def test_a_resumed_run_draws_new_batches(tmp_path, monkeypatch):
    """Resuming at step k must not replay the batches of steps 0, 1, ...: the first resumed batch
    differs from the run's first batch."""
    seen = []
    real = train_module.simulate_batch

    def spy(*args, **kwargs):
        batch = real(*args, **kwargs)
        seen.append(batch.frames.clone())
        return batch

    monkeypatch.setattr(train_module, "simulate_batch", spy)
    list(iter_train(_cfg(tmp_path, steps=2)))
    first = seen[0]
    seen.clear()
    list(iter_train(_cfg(tmp_path, steps=4, resume=True)))
    assert len(seen) == 2 and not torch.equal(seen[0], first)


def test_a_later_stage_may_add_conv_blocks_which_training_opens(tmp_path):
    start, grown = tmp_path / "start.pt", tmp_path / "grown.pt"
    list(iter_train(_cfg(tmp_path, out=str(start))))
    blocks = load_checkpoint(start).net.config.conv_blocks
    more = {"conv_blocks": blocks + 1}
    list(iter_train(_cfg(tmp_path, out=str(grown), init_from=str(start), model=more, lr=1e-2)))
    net = load_checkpoint(grown).net
    assert net.config.conv_blocks == blocks + 1
    gates = net.conv_blocks[blocks].ada_lin[-1].bias[: 2 * net.config.conv_dim]
    assert gates.abs().max() > 0  # the added block's gates started at zero; training moved them
