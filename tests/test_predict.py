"""Post-processing geometry, model files, and the predict API (with small untrained models)."""

import os

import numpy as np
import pytest
import torch

from _tiny import TINY
from napari_var_emitter.camera import Camera
from napari_var_emitter.errors import CheckpointError, InputError
from napari_var_emitter.localize import iter_predict, predict
from napari_var_emitter.localize.detect import extract
from napari_var_emitter.model import ModelConfig, TrueVAREmitterPredictor
from napari_var_emitter.model.checkpoint import EmitterModel, load_checkpoint, save_checkpoint


def _level(h, w, stride, cells):
    """A fake decoded level with probability 0.9 and given offsets at ``cells`` [(r, c, dx, dy)]."""
    logits = torch.full((1, h, w), -8.0)
    offset = torch.zeros(1, 2, h, w)
    for r, c, dx, dy in cells:
        logits[0, r, c] = 2.2
        offset[0, :, r, c] = torch.tensor([dx, dy])
    ones = torch.ones(1, h, w)
    return {
        "logits": logits,
        "offset": offset,
        "photons": ones * 1000,
        "sigma": torch.ones(1, 2, h, w) * 0.1,
        "photon_sigma": ones,
        "background": ones * 20,
        "stride": stride,
    }


def test_extract_puts_emitters_at_the_conventions_coordinates():
    det = extract(_level(16, 16, 1.0, [(5, 7, 0.3, -0.2)]), 0.5, 16, 16)
    np.testing.assert_allclose([det["x"].item(), det["y"].item()], [7.3, 4.8], atol=1e-6)
    assert det["uncertainty"].item() == pytest.approx(0.1)


def test_extract_on_a_super_resolved_grid():
    # cell (10, 14) of a 2x grid has its centre at input pixel (4.75, 6.75); offsets are in cells
    det = extract(_level(32, 32, 0.5, [(10, 14, 0.4, 0.0)]), 0.5, 16, 16)
    np.testing.assert_allclose([det["x"].item(), det["y"].item()], [6.75 + 0.2, 4.75], atol=1e-6)
    assert det["uncertainty"].item() == pytest.approx(0.05)


def test_adjacent_emitters_are_both_found_and_isolated_ones_once():
    det = extract(_level(16, 16, 1.0, [(5, 5, 0, 0), (5, 6, 0, 0), (12, 2, 0, 0)]), 0.5, 16, 16)
    assert len(det["x"]) == 3


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return EmitterModel(net=TrueVAREmitterPredictor(ModelConfig(**TINY)).eval(), threshold=0.3)


def test_checkpoint_round_trip_gives_identical_outputs(tiny_model, tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", tiny_model)
    loaded = load_checkpoint(path)
    assert loaded.config == tiny_model.config and loaded.threshold == 0.3
    x = torch.rand(1, 1, 16, 16) * 100
    with torch.no_grad():
        a, b = tiny_model.net(x), loaded.net(x)
    for la, lb in zip(a, b, strict=False):
        assert torch.equal(la["logits"], lb["logits"])


def test_checkpoint_from_another_architecture_is_refused(tiny_model, tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", tiny_model)
    payload = torch.load(path, weights_only=True)
    payload["model_config"]["embed_dim"] = 32
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(path)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/napari_var_emitter_pwned",))


def test_checkpoint_carrying_code_is_refused_and_never_runs(tmp_path):
    marker = "/tmp/napari_var_emitter_pwned"
    if os.path.exists(marker):
        os.unlink(marker)
    path = tmp_path / "evil.pt"
    torch.save({"format": "napari-var-emitter/1", "payload": _Evil()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not os.path.exists(marker)


@pytest.mark.parametrize("content", [b"", b"not a model at all", b"PK\x03\x04truncated"])
def test_unreadable_checkpoint_files(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no model file"):
        load_checkpoint(tmp_path / "missing.pt")


def test_predict_returns_maps_with_geometry_and_progress(tiny_model):
    frames = np.random.default_rng(0).poisson(600, size=(5, 24, 20)).astype(np.uint16)
    events = []
    result = predict(
        frames,
        tiny_model,
        Camera(),
        device="cpu",
        batch_size=2,
        maps=(0, 3),
        progress=lambda done, total: events.append((done, total)),
    )
    assert events == [(2, 5), (4, 5), (5, 5)]
    assert set(result.maps) == {0, 3}
    assert result.maps[0].data.shape == (5, 3, 3) and result.maps[0].factor == (8.0, 8.0)
    assert result.maps[3].data.shape == (5, 24, 20) and result.maps[3].factor == (1.0, 1.0)
    assert result.device == "cpu" and result.grid_factor == 1.0
    sr = predict(frames, tiny_model, Camera(), device="cpu", mode="super_resolution", maps=(4,))
    assert sr.maps[4].data.shape == (5, 48, 40) and sr.grid_factor == 2.0


def test_predict_reads_only_the_frame_range(tiny_model):
    frames = np.random.default_rng(0).poisson(600, size=(6, 16, 16)).astype(np.float32)
    frames[0] = np.nan  # outside the range: never read
    result = predict(frames, tiny_model, Camera(), device="cpu", frame_range=(2, 5), maps=(3,))
    assert result.maps[3].data.shape[0] == 3
    assert np.all((result.localizations.frame >= 2) & (result.localizations.frame < 5))


@pytest.mark.parametrize(
    "frames, kwargs, message",
    [
        (np.zeros((0, 16, 16)), {}, "empty"),
        (np.zeros((2, 3, 16, 16)), {}, "dimensions"),
        (np.full((2, 16, 16), np.nan), {}, "NaN"),
        (np.zeros((2, 16, 16)), {"mode": "magic"}, "mode"),
        (np.zeros((2, 16, 16)), {"frame_range": (1, 9)}, "range"),
        (
            np.zeros((2, 16, 16)),
            {"device": "cuda"} if not torch.cuda.is_available() else {"device": "tpu"},
            "device",
        ),
        (np.zeros((2, 16, 16)), {"mode": "super_resolution", "sr_factor": 3}, "factor"),
        (np.zeros((2, 16, 16), dtype=bool), {}, "numbers"),
    ],
)
def test_predict_bad_input_gives_one_clear_error(tiny_model, frames, kwargs, message):
    with pytest.raises(InputError, match=message):
        gen = iter_predict(frames, tiny_model, Camera(), **kwargs)
        for _ in gen:
            pass


def test_refinement_brings_the_bundled_models_positions_closer_to_the_truth():
    """The network's positions are pulled toward pixel centres at a few hundred to a few thousand
    photons; the fit of the same pixels removes that pull and reaches the Cramer-Rao bound on
    isolated emitters. (The bundled "window-3" model also sees frames t-1 and t+1, so on persistent
    emitters its own positions can beat a fit of frame t alone; there the refinement is for the
    pixel-grid bias.) Measured with the bundled one-frame model: RMSE 21.4 -> 20.8 nm, RMSE/CRLB
    1.05 -> 1.00."""
    from napari_var_emitter.analysis.metrics import evaluate, subpixel_flatness
    from napari_var_emitter.simulation import SimulationConfig, simulate_movie

    config = SimulationConfig(density_per_um2=0.3, photons=(500.0, 3000.0))  # 64 x 64 frames
    movie = simulate_movie(config, 60, seed=321)
    frames = movie.frames.numpy()
    model = load_checkpoint(None, torch.device("cpu"))
    reports, flatness = {}, {}
    for refine in (False, True):  # without the fit's confirmation of dim candidates: same detections
        locs = predict(
            frames, model, config.camera, device="cpu", precision="fp32", refine=refine, confirm=False
        ).localizations
        reports[refine] = evaluate(
            locs,
            movie.truth,
            config.camera.pixel_size_nm,
            crlb_min_photons=1000.0,
            unseen=movie.outside,
            frame_shape=frames.shape[-2:],
        )
        flatness[refine] = subpixel_flatness(locs)
    # the same detections, better positions
    assert reports[True].n_pred == reports[False].n_pred
    assert reports[True].rmse_nm < 0.98 * reports[False].rmse_nm
    assert reports[True].n_crlb >= 100
    assert reports[True].rmse_over_crlb < min(1.1, reports[False].rmse_over_crlb)
    assert flatness[True] < flatness[False]


def test_in_a_movie_dim_emitters_that_stay_on_are_confirmed_by_the_next_frame():
    """A candidate under the threshold whose own fit is too weak is kept when the same spot in an
    adjacent frame confirms it jointly (pooling, for the 3-frame model): more dim emitters found,
    and no false ones."""
    from napari_var_emitter.analysis.metrics import evaluate
    from napari_var_emitter.simulation import SimulationConfig, simulate_movie

    config = SimulationConfig(density_per_um2=0.5, photons=(150.0, 600.0), background_photons=(50.0, 100.0))
    movie = simulate_movie(config, 60, seed=5)
    model = load_checkpoint("bundled:window-3", torch.device("cpu"))
    reports = {}
    for pool in (False, True):  # without pooling, nothing is confirmed across frames
        locs = predict(movie.frames.numpy(), model, config.camera, device="cpu", pool=pool).localizations
        reports[pool] = evaluate(locs, movie.truth, config.camera.pixel_size_nm, unseen=movie.outside)
    assert reports[True].tp >= reports[False].tp + 6  # 584 -> 605 of 1,144
    assert reports[True].fp <= reports[False].fp + 2  # 6 and 6


def test_an_emitter_on_a_pixel_edge_is_reported_once():
    from napari_var_emitter.localize.classical import gaussian_model
    from napari_var_emitter.simulation import apply_camera

    camera = Camera()  # the EMCCD the bundled model was trained for
    truth = [(x + 0.5, y) for x in (10, 22, 34) for y in (10, 22, 34)]  # on the edge between 2 pixels
    grid = np.arange(48, dtype=np.float64)
    expected = np.full((6, 48, 48), 60.0)
    for x, y in truth:
        expected += gaussian_model(np.array([[x, y, 4000.0, 0.0, 1.2]]), grid, False)[0][0]
    generator = torch.Generator().manual_seed(5)
    frames = apply_camera(torch.from_numpy(expected).float(), camera, generator).numpy()
    locs = predict(frames, None, camera, device="cpu", precision="fp32").localizations
    for t in range(6):
        xy = np.column_stack([locs.x, locs.y])[locs.frame == t]
        for x, y in truth:
            assert np.sum(np.hypot(xy[:, 0] - x, xy[:, 1] - y) < 1.0) == 1


def test_both_bundled_models_load_and_find_emitters():
    """The default bundled model sees frame t; ``bundled:window-3`` sees frames t-1, t, t+1."""
    from napari_var_emitter.simulation import SimulationConfig, simulate_movie

    default, window = load_checkpoint(None), load_checkpoint("bundled:window-3")
    assert default.net.config.frame_window == 1 and window.net.config.frame_window == 3
    movie = simulate_movie(SimulationConfig(density_per_um2=0.3, photons=(3000.0, 5000.0)), 6, seed=21)
    for model in (default, window):
        locs = predict(movie.frames.numpy(), model, movie.config.camera)
        assert 0.8 * len(movie.truth) <= len(locs.localizations) <= 1.2 * len(movie.truth)
    with pytest.raises(CheckpointError, match="no bundled model 'nope'"):
        load_checkpoint("bundled:nope")


def test_the_sparse_finest_level_gives_the_dense_localizations():
    from napari_var_emitter.simulation import SimulationConfig, simulate_movie

    model = load_checkpoint(None, torch.device("cpu"))
    movie = simulate_movie(SimulationConfig(frame_size=(48, 48), density_per_um2=0.5), 12, seed=11)
    frames = movie.frames.numpy()
    dense = predict(frames, model, device="cpu", sparse=False, maps=(3,))
    sparse = predict(frames, model, device="cpu", sparse=True, maps=(3,))
    assert len(dense.localizations) > 20
    # The same detections; the same numbers up to float32 rounding: the sparse level convolves the
    # same cells from smaller crops, and the CPU's kernels may sum in another order (3e-7 relative
    # was seen on an AVX-512 CPU, bit-identical on others).
    np.testing.assert_array_equal(sparse.localizations.frame, dense.localizations.frame)
    for column in ("x", "y", "photons", "uncertainty", "probability"):
        np.testing.assert_allclose(
            getattr(sparse.localizations, column), getattr(dense.localizations, column), rtol=1e-5, atol=1e-6
        )
    kept = sparse.maps[3].data > 1e-10
    assert kept.mean() < 0.5  # most of the finest level was skipped ...
    np.testing.assert_allclose(sparse.maps[3].data[kept], dense.maps[3].data[kept], rtol=1e-5, atol=1e-7)
    assert dense.maps[3].data[~kept].max() < 0.01  # ... where the dense level sees nothing


@pytest.mark.parametrize(
    "dtype", [np.uint16, np.uint8, np.int16, np.int32, np.uint32, np.float32, np.float64]
)
def test_frames_become_photons_on_the_device_as_the_float32_formula_gives(dtype):
    from napari_var_emitter.localize.pipeline import _photons_on

    camera = Camera()
    rng = np.random.default_rng(0)
    high = min(np.iinfo(dtype).max, 65535) if np.dtype(dtype).kind in "ui" else 65535
    adu = rng.integers(0, high, size=(3, 8, 8), endpoint=True).astype(dtype)
    adu.flat[:2] = [0, high]  # the ends of the range (uint16 travels as int16 bits)
    expected = (adu.astype(np.float32) - camera.baseline) * camera.photons_per_adu
    photons = _photons_on(adu, camera, torch.device("cpu"))
    assert photons.dtype == torch.float32
    np.testing.assert_array_equal(photons.numpy(), expected)


def test_the_default_batch_is_the_cpus_on_the_cpu_and_a_pass_fills_its_pixel_budget():
    from napari_var_emitter.localize.batching import (
        CPU_BATCH_PIXELS,
        DEFAULT_BATCH_SIZE,
        default_batch_pixels,
        default_batch_size,
        pass_sizes,
    )
    from napari_var_emitter.model.runtime import runner_for

    model = load_checkpoint(None, torch.device("cpu"))
    runner = runner_for(model.net, torch.device("cpu"))
    assert default_batch_size("cpu") == DEFAULT_BATCH_SIZE
    assert default_batch_pixels(runner) == CPU_BATCH_PIXELS
    assert pass_sizes((64, 64), DEFAULT_BATCH_SIZE, CPU_BATCH_PIXELS, None) == (128, 128)
    assert pass_sizes((128, 128), DEFAULT_BATCH_SIZE, CPU_BATCH_PIXELS, None) == (32, 32)  # 2**19 px
    assert pass_sizes((128, 128), 4096, 1 << 24, None) == (1024, 1024)
    assert pass_sizes((128, 128), 64, None, None) == (64, 64)


@pytest.mark.parametrize("layout", ["read-only", "reversed frames", "mirrored rows", "float32 read-only"])
def test_any_array_layout_reaches_torch_writable_and_gives_the_same_localizations(layout, monkeypatch):
    from napari_var_emitter.localize import pipeline as predict_module

    model = load_checkpoint(None, torch.device("cpu"))
    rng = np.random.default_rng(1)
    frames = (rng.poisson(20.0, (4, 32, 32)) + 100).astype(np.uint16)
    frames[:, 10:13, 10:13] += 400  # one bright spot per frame
    if layout == "float32 read-only":
        frames = frames.astype(np.float32)
    view = {"reversed frames": frames[::-1], "mirrored rows": frames[:, ::-1]}.get(layout, frames)
    if "read-only" in layout:  # as a memory-mapped TIFF gives them
        view = view.copy()
        view.flags.writeable = False
    expected = predict(np.array(view), model, device="cpu").localizations

    from_numpy = torch.from_numpy

    def strict_from_numpy(array):  # torch warns on read-only arrays and refuses negative strides
        assert array.flags.writeable and min(array.strides) >= 0
        return from_numpy(array)

    monkeypatch.setattr(predict_module.torch, "from_numpy", strict_from_numpy)
    got = predict(view, model, device="cpu").localizations
    assert len(expected) > 0
    np.testing.assert_array_equal(got.x, expected.x)
    np.testing.assert_array_equal(got.frame, expected.frame)
