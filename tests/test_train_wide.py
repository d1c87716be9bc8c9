"""Training on the wider simulated family: TrainConfig's options, the JSON recipes, the batches they
draw (cameras converted exactly), and the base family's recipes drawing exactly the batches they did."""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from _tiny import tiny_train_config
from napari_var_emitter.errors import InputError, VarEmitterError
from napari_var_emitter.model import preset
from napari_var_emitter.simulation import SimulationConfig, simulate_batch
from napari_var_emitter.train import TrainConfig, _simulation, iter_train

TRAINING = Path(__file__).parents[1] / "training"
sys.path.insert(0, str(TRAINING))

from train_true_var import config_from_json  # noqa: E402

WIDE = {
    "config_default_wide.json": "config_default_lean.json",
    "config_default_wide_stage2.json": "config_default_lean_stage2.json",
    "config_window3_wide.json": "config_window3_lean_stage2.json",
    "config_window3_wide_stage2.json": "config_window3_lean_stage2.json",
}


def _recipe(name: str) -> TrainConfig:
    return config_from_json(json.loads((TRAINING / name).read_text()))


def test_default_options_draw_the_same_batches_as_before_the_wider_family():
    """Digest of six batches drawn by train._simulation before the wider family existed."""
    cfg, rng, generator = TrainConfig(), random.Random(2), torch.Generator().manual_seed(3)
    digest = hashlib.sha256()
    for _ in range(6):
        sim = _simulation(cfg, rng).to_dict()
        keys = ("density_per_um2", "background_variation", "structure", "photons", "psf_sigma_nm")
        drawn = {k: sim[k] for k in keys + ("photon_distribution",)}
        digest.update(json.dumps(drawn, sort_keys=True).encode())
        frames = simulate_batch(SimulationConfig.from_dict(sim), 2, generator=generator)
        digest.update(frames.frames.numpy().astype(np.uint16).tobytes())
    assert digest.hexdigest()[:16] == "43f1fd7f0c16e1fd"


@pytest.mark.parametrize("wide, lean", WIDE.items())
def test_wide_recipes_build_their_lean_network_and_draw_half_their_batches_wide(wide, lean):
    cfg, base = _recipe(wide), _recipe(lean)
    assert preset(cfg.preset, **cfg.model).to_dict() == preset(base.preset, **base.model).to_dict()
    assert cfg.batch_size == 16 and cfg.wide_fraction >= 0.5 and cfg.camera == base.camera
    assert (cfg.psf_sigma_nm, cfg.photons, cfg.density_per_um2) == (
        base.psf_sigma_nm,
        base.photons,
        base.density_per_um2,
    )
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    rng = random.Random(0)
    sims = [_simulation(cfg, rng) for _ in range(400)]
    base_family = [
        s
        for s in sims
        if s.psf_model == "gaussian"
        and s.camera == cfg.camera
        and s.photon_distribution == "uniform"
        and s.background_blobs == 0
    ]
    assert 0.3 < len(base_family) / len(sims) < 1 - cfg.wide_fraction + 0.1
    assert {s.psf_model for s in sims} == {"gaussian", "pupil"}
    assert {s.photon_distribution for s in sims} == {"uniform", "log-uniform", "exponential", "log-normal"}


def test_wide_cameras_are_in_their_ranges_and_convert_to_photons_exactly():
    cfg = TrainConfig(frame_size=32, wide_fraction=1.0, camera_types=("emccd", "scmos"), pupil_fraction=0.0)
    rng, generator = random.Random(1), torch.Generator().manual_seed(1)
    kinds = set()
    for _ in range(12):
        sim = _simulation(cfg, rng)
        cam = sim.camera
        if cam.em_gain > 1:
            kinds.add("emccd")
            assert 30.0 <= cam.em_gain <= 300.0
            assert cam.em_gain / cam.e_per_adu == pytest.approx(300.0 / 45.0)  # ADU per electron kept
        else:
            kinds.add("scmos")
            assert 1.0 <= cam.read_noise_e <= 3.0 and 0.25 <= cam.e_per_adu <= 2.0
            assert 0.0 <= sim.pixel_read_noise_spread <= 0.3 and 0.0 <= sim.pixel_offset_spread <= 2.0
        flat = sim.__class__.from_dict({**sim.to_dict(), "density_per_um2": 0.0, "background_variation": 0.0})
        batch = simulate_batch(flat, 8, generator=generator)
        photons = cam.adu_to_photons(batch.frames.double())  # what the network is given
        assert float(photons.mean()) == pytest.approx(float(batch.background.mean()), rel=0.02, abs=0.3)
    assert kinds == {"emccd", "scmos"}


def test_a_few_steps_on_the_wide_family_train_and_save(tmp_path):
    cfg = tiny_train_config(
        tmp_path,
        steps=2,
        wide_fraction=1.0,
        pupil_fraction=1.0,
        camera_types=("scmos",),
        photon_distributions=(("exponential", 100.0, 3000.0),),
        background_blobs=0.1,
    )
    events = list(iter_train(cfg))
    assert [e.step for e in events] == [1, 2] and all(np.isfinite(e.loss) for e in events)
    assert events[-1].checkpoint and Path(cfg.out).is_file()


@pytest.mark.parametrize(
    "changes",
    [
        {"wide_fraction": 1.5},
        {"pupil_fraction": -0.1},
        {"camera_types": ("ccd",)},
        {"photon_distributions": (("gamma", 100.0, 1000.0),)},
        {"photon_distributions": (("exponential", 1000.0, 100.0),)},
        {"photon_distributions": ("exponential",)},
        {"emccd_gain": (0.5, 10.0)},
        {"wide_fraction": 0.5, "na": (1.2, 1.6)},
        {"wide_fraction": 0.5, "spherical_waves": (-2.0, 0.0)},
    ],
)
def test_bad_wide_options_are_refused(changes):
    with pytest.raises(InputError):
        TrainConfig(**changes)


def test_json_takes_the_wide_keys_and_still_refuses_unknown_ones():
    cfg = config_from_json(
        {"training": {"wide_fraction": 0.5, "photon_distributions": [["log-normal", 300, 9000]]}}
    )
    assert cfg.wide_fraction == 0.5 and cfg.photon_distributions == (("log-normal", 300.0, 9000.0),)
    with pytest.raises(VarEmitterError, match="unknown training key"):
        config_from_json({"training": {"wide_fractoin": 0.5}})
