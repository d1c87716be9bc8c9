"""Fast inference: the runner gives the network's own outputs, in fp32 exactly, in bf16 closely."""

import pytest
import torch

from _tiny import random_tiny_net
from napari_var_emitter.errors import InputError
from napari_var_emitter.model.checkpoint import load_checkpoint
from napari_var_emitter.model.runtime import InferenceRunner, resolve_precision
from napari_var_emitter.simulation import SimulationConfig, simulate_movie


@pytest.fixture(scope="module")
def net():
    return random_tiny_net()


@pytest.fixture(scope="module")
def frames():
    torch.manual_seed(1)
    return torch.rand(5, 1, 32, 32) * 300 + 20


def _reference(net, frames):
    with torch.no_grad():
        return net(frames)


def test_fp32_runner_equals_the_network(net, frames):
    ref = _reference(net, frames)
    out = InferenceRunner(net, torch.device("cpu"), "fp32")(frames, num_levels=4)
    assert len(out) == len(ref) == 4
    for o, r in zip(out, ref, strict=True):
        for key in ("logits", "offset", "photons", "sigma", "background"):
            torch.testing.assert_close(o[key], r[key], rtol=1e-4, atol=1e-4)


def test_bf16_runner_keeps_the_bundled_models_answers():
    model = load_checkpoint(None, torch.device("cpu"))
    movie = simulate_movie(SimulationConfig(frame_size=(32, 32), density_per_um2=1.0), 4, seed=7)
    photons = torch.from_numpy(model.camera.adu_to_photons(movie.frames.numpy()))  # (T, H, W)
    half = model.net.config.frame_window // 2  # frames t-half..t+half, clamped at the ends
    index = (torch.arange(4)[:, None] + torch.arange(-half, half + 1)[None, :]).clamp(0, 3)
    photons = photons[index]  # (T, window, H, W)
    ref = _reference(model.net, photons)[-1]
    out = InferenceRunner(model.net, torch.device("cpu"), "bf16")(photons, num_levels=4)[-1]
    assert out["offset"].dtype == torch.float32
    prob, prob_ref = torch.sigmoid(out["logits"]), torch.sigmoid(ref["logits"])
    assert (prob - prob_ref).abs().mean() < 2e-3  # bf16 moves single borderline cells, not the map
    emitters = (prob_ref > 0.5) & (prob > 0.5)
    assert emitters.sum() >= 5
    # at the emitters, positions agree to 0.5 nm typically and 7 nm at worst (100 nm pixels),
    # far below the model's ~20 nm localization error (and the fit then moves them anyway)
    shift = (out["offset"] - ref["offset"]).abs().amax(1)[emitters]
    assert shift.median() < 0.005 and shift.max() < 0.1


def test_bf16_runs_a_copy_and_leaves_the_callers_network_as_it_was():
    model = load_checkpoint(None, torch.device("cpu"))
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    runner = InferenceRunner(model.net, torch.device("cpu"), "bf16")
    assert runner.net is not model.net
    assert all(p.dtype == torch.float32 for p in model.net.parameters())
    for key, value in model.net.state_dict().items():
        assert torch.equal(value, before[key])
    gelus = [m for m in model.net.modules() if isinstance(m, torch.nn.GELU)]
    assert gelus and all(m.approximate == "tanh" for m in gelus)  # as trained
    assert all(m.approximate == "none" for m in runner.net.modules() if isinstance(m, torch.nn.GELU))
    assert runner.net.encoder.stem.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in runner.net.heads.parameters())  # offsets need fp32


def test_padded_batches_give_the_unpadded_outputs(net, frames):
    runner = InferenceRunner(net, torch.device("cpu"), "fp32")
    runner.compiled = True  # the padding path of a compiled runner, without paying for compilation
    full = runner(frames, num_levels=4)  # fixes the batch size at 5
    part = runner(frames[:2], num_levels=4)  # padded to 5, cut back to 2
    assert part[-1]["logits"].shape[0] == 2
    torch.testing.assert_close(part[-1]["logits"], full[-1]["logits"][:2], rtol=1e-4, atol=1e-4)


def test_precision_is_checked():
    with pytest.raises(InputError, match="precision"):
        resolve_precision("fp8", torch.device("cpu"))
    assert resolve_precision("fp32", torch.device("cpu")) == torch.float32
    assert resolve_precision("auto", torch.device("cuda")) == torch.bfloat16


def test_keep_freed_memory_on_glibc_only(monkeypatch):
    import platform

    from napari_var_emitter.model import runtime

    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert runtime.keep_freed_memory() is True
        assert runtime.keep_freed_memory() is True  # once per process, then a no-op
    monkeypatch.setattr(runtime, "_allocator_tuned", False)
    monkeypatch.setattr(runtime.platform, "system", lambda: "Darwin")
    assert runtime.keep_freed_memory() is False


def test_pointwise_ops_on_the_channels_last_view_keep_values_and_layout():
    from napari_var_emitter.model.ops import GELU, on_channels_last_view

    x = torch.randn(2, 8, 5, 7)
    cl = x.contiguous(memory_format=torch.channels_last)
    for fn in (torch.nn.functional.gelu, GELU(approximate="tanh")):
        out = on_channels_last_view(fn, cl) if not isinstance(fn, GELU) else fn(cl)
        assert out.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(out, fn(x) if not isinstance(fn, GELU) else torch.nn.GELU("tanh")(x))
    assert on_channels_last_view(torch.relu, x).is_contiguous()  # other layouts pass through


def test_a_bf16_runner_is_reused_until_the_weights_change():
    from napari_var_emitter.model.runtime import runner_for

    net = random_tiny_net()
    cpu = torch.device("cpu")
    first = runner_for(net, cpu, precision="bf16", sparse=True)
    assert runner_for(net, cpu, precision="bf16", sparse=True) is first
    assert runner_for(net, cpu, precision="bf16", sparse=False) is not first  # another kind of runner
    with torch.no_grad():
        net.encoder.stem.weight.mul_(2.0)  # as an optimizer step would
    again = runner_for(net, cpu, precision="bf16", sparse=True)
    assert again is not first
    torch.testing.assert_close(
        again.net.encoder.stem.weight.float(), net.encoder.stem.weight, rtol=1e-2, atol=0
    )
    assert runner_for(net, cpu, precision="fp32") is not runner_for(
        net, cpu, precision="fp32"
    )  # cheap: not kept
