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


# Six batches drawn by train._simulation with the default options (Python's random seeded 2, torch's
# generator seeded 3), as they were drawn before the wider family existed: per batch, emitters,
# the sum of their x + y + photons, and the sum of the frames (ADU).
DEFAULT_BATCHES = [
    (373, 1468754.0, 11098406),
    (38, 172177.4, 4953750),
    (307, 1225904.9, 12394180),
    (254, 1016884.8, 10055008),
    (170, 649957.0, 7226024),
    (428, 1683475.0, 13554838),
]


def test_default_options_draw_the_same_batches_as_before_the_wider_family():
    """The settings drawn are compared exactly (Python's random: the same on every machine); the
    frames and emitters within float rounding, which differs between CPUs' vector math (exp, erf,
    the filaments' trigonometry; torch's scalar kernels move a frame sum by 2e-5): a change in what
    is drawn moves these sums by about a percent (the noise of 8,192 pixels)."""
    cfg, rng, generator = TrainConfig(), random.Random(2), torch.Generator().manual_seed(3)
    digest = hashlib.sha256()
    for emitters, positions_photons, adu in DEFAULT_BATCHES:
        sim = _simulation(cfg, rng).to_dict()
        digest.update(json.dumps(sim, sort_keys=True).encode())
        batch = simulate_batch(SimulationConfig.from_dict(sim), 2, generator=generator)
        assert len(batch.emitters) == emitters
        assert float(batch.emitters[:, 2:5].double().sum()) == pytest.approx(positions_photons, rel=1e-6)
        assert float(batch.frames.double().sum()) == pytest.approx(adu, rel=1e-4)
    assert digest.hexdigest()[:16] == "db93f62c1a32bc90"


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


PUPIL_STAGES = {  # a quarter of the batches a pupil PSF, the rest as the stage before
    "config_window3_lean_stage3.json": "config_window3_lean_stage2.json",
    "config_default_lean_stage3_pupil.json": "config_default_lean_stage2.json",
}


@pytest.mark.parametrize("stage, before", PUPIL_STAGES.items())
def test_pupil_stages_change_only_the_psf_of_a_quarter_of_their_batches(stage, before):
    cfg, base = _recipe(stage), _recipe(before)
    assert preset(cfg.preset, **cfg.model).to_dict() == preset(base.preset, **base.model).to_dict()
    assert (cfg.camera, cfg.psf_sigma_nm, cfg.photons, cfg.density_per_um2, cfg.batch_size) == (
        base.camera,
        base.psf_sigma_nm,
        base.photons,
        base.density_per_um2,
        base.batch_size,
    )
    assert cfg.seed != base.seed and cfg.lr == 1e-3
    rng = random.Random(0)
    sims = [_simulation(cfg, rng) for _ in range(400)]
    pupil = [s for s in sims if s.psf_model == "pupil"]
    assert 0.18 < len(pupil) / len(sims) < 0.32  # wide_fraction 0.25, pupil_fraction 1
    assert {s.photon_distribution for s in sims} == {"uniform"} and {s.camera for s in sims} == {cfg.camera}
    assert all(1.3 <= s.na[0] <= 1.5 and -200 <= s.defocus_nm[0] <= 200 for s in pupil)


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
