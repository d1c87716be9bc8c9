"""The simulator's wider family: pupil PSF movies, photon distributions, out-of-focus blobs, per-pixel
sCMOS noise; and the default family unchanged, bit for bit."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch

from napari_var_emitter.camera import Camera
from napari_var_emitter.errors import InputError
from napari_var_emitter.simulation import SimulationConfig, apply_camera, simulate_batch, simulate_movie
from napari_var_emitter.simulation.psf import gaussian_equivalent_sigma_nm
from napari_var_emitter.simulation.scene import BLOB_SIGMA_NM, brightness

SCMOS = Camera(pixel_size_nm=100.0, baseline=100.0, e_per_adu=0.5, em_gain=1.0, qe=0.9, read_noise_e=1.5)
IDEAL = Camera(pixel_size_nm=100.0, baseline=0.0, e_per_adu=1.0, em_gain=1.0, qe=1.0, read_noise_e=0.0)
PUPIL = dict(psf_model="pupil", na=(1.4, 1.4), wavelength_nm=(680.0, 680.0))


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


# Digests of movies and batches made before the pupil PSF, blobs, photon distributions and camera maps
# were added: default settings must keep every seeded movie as it was.
@pytest.mark.parametrize(
    "config, movie_digest, batch_digest",
    [
        (SimulationConfig(), "bb5e8ae791168bfd", "3edae93385b51459"),
        (
            SimulationConfig(
                frame_size=(32, 40),
                structure="filaments",
                background_variation=0.3,
                psf_sigma_jitter=0.05,
                photon_distribution="log-uniform",
                density_per_um2=1.0,
            ),
            "e604c11c85ce7936",
            "40cc8da56412e16e",
        ),
        (
            SimulationConfig(
                frame_size=(32, 32), camera=Camera(e_per_adu=2.0, em_gain=1.0, qe=0.8, read_noise_e=1.5)
            ),
            "1e0a90a0db3a0c99",
            "4df95c450042e286",
        ),
    ],
    ids=["default", "filaments", "scmos"],
)
def test_default_settings_give_the_same_movies_bit_for_bit(config, movie_digest, batch_digest):
    movie = simulate_movie(config, 5, seed=3)
    assert _digest(movie.frames.numpy().astype(np.uint16)) == movie_digest
    batch = simulate_batch(config, 3, window=3, generator=torch.Generator().manual_seed(4))
    assert _digest(batch.frames.numpy().astype(np.uint16)) == batch_digest


# ---------------------------------------------------------------------------------------------
# Photons


def test_exponential_photons_have_the_floor_and_the_mean_of_their_range():
    config = SimulationConfig(photons=(100.0, 3000.0), photon_distribution="exponential")
    values = brightness(config, 200_000, torch.Generator().manual_seed(0), "cpu").double()
    assert float(values.min()) >= 100.0
    assert float(values.mean()) == pytest.approx(3000.0, rel=0.01)
    assert float(values.std()) == pytest.approx(2900.0, rel=0.01)  # Exp: std = mean above the floor


def test_log_normal_photons_have_the_documented_median_spread_and_mean():
    lo, hi = 300.0, 10_000.0
    config = SimulationConfig(photons=(lo, hi), photon_distribution="log-normal")
    values = brightness(config, 200_000, torch.Generator().manual_seed(1), "cpu").double()
    sd = math.log(hi / lo) / (2 * 1.959964)
    assert float(values.median()) == pytest.approx(math.sqrt(lo * hi), rel=0.01)
    assert float(((values >= lo) & (values <= hi)).double().mean()) == pytest.approx(0.95, abs=0.005)
    assert float(values.mean()) == pytest.approx(math.sqrt(lo * hi) * math.exp(sd**2 / 2), rel=0.01)


def test_movie_truth_follows_the_photon_distribution():
    """Emitters on for much longer than the movie are fully on: the truth holds their brightness."""
    config = SimulationConfig(
        frame_size=(128, 128),
        density_per_um2=3.0,
        photons=(100.0, 2000.0),
        photon_distribution="exponential",
        mean_on_frames=1e4,
    )
    photons = simulate_movie(config, 1, seed=5).truth.photons
    assert len(photons) > 400 and photons.min() >= 100.0
    assert photons.mean() == pytest.approx(2000.0, rel=0.15)  # 3.5 standard errors


# ---------------------------------------------------------------------------------------------
# Pupil PSF movies


def test_pupil_movie_light_is_its_emitters_photons_and_its_sigma_the_gaussian_equivalent():
    config = SimulationConfig(density_per_um2=0.5, background_photons=(5.0, 5.0), camera=IDEAL, **PUPIL)
    movie = simulate_movie(config, 40, seed=2)
    signal = float((IDEAL.adu_to_photons(movie.frames.double()) - movie.background.double()).sum())
    # light leaking out of the frame and in from outside cancel on average (as for the Gaussian PSF)
    assert signal == pytest.approx(float(movie.truth.photons.sum()), rel=0.03)
    expected = gaussian_equivalent_sigma_nm(1.4, 680.0) / 100.0
    np.testing.assert_allclose(movie.truth.sigma, expected, rtol=1e-5)


def test_pupil_parameters_are_drawn_per_movie_and_depth_per_emitter():
    config = SimulationConfig(
        psf_model="pupil", na=(1.2, 1.5), wavelength_nm=(500.0, 700.0), defocus_nm=(-300.0, 300.0)
    )
    batch = simulate_batch(config, 8, generator=torch.Generator().manual_seed(3))
    sigma = batch.psf_sigma_px
    assert len(set(sigma.tolist())) == 8 and float(sigma.min()) > 0.5 and float(sigma.max()) < 2.5
    spread = SimulationConfig(density_per_um2=2.0, defocus_spread_nm=300.0, **PUPIL)
    truth = simulate_movie(spread, 4, seed=4).truth
    assert 3 <= len(np.unique(truth.sigma)) <= 5  # the depth planes, each its own width


# ---------------------------------------------------------------------------------------------
# Background


def test_background_blobs_add_the_expected_mean_light():
    config = SimulationConfig(
        frame_size=(32, 32), density_per_um2=0.0, background_photons=(40.0, 40.0), background_blobs=0.2
    )
    batch = simulate_batch(config, 300, generator=torch.Generator().manual_seed(6))
    extra = batch.background.double() - 40.0  # (B, 1, H, W)
    assert float(extra.min()) >= 0.0 and float(extra.amax(dim=(1, 2, 3)).max()) > 10.0
    # per pixel: blobs per pixel x mean peak (0.5 x level) x mean blob integral 2 pi sigma^2
    lo, hi = BLOB_SIGMA_NM[0] / 100.0, BLOB_SIGMA_NM[1] / 100.0
    mean_sigma2 = (hi**3 - lo**3) / (3 * (hi - lo))
    expected = 0.2 * 0.01 * 0.5 * 40.0 * 2 * math.pi * mean_sigma2
    assert float(extra.mean()) == pytest.approx(expected, rel=0.1)


# ---------------------------------------------------------------------------------------------
# sCMOS camera maps


def test_per_pixel_read_noise_and_offset_give_each_pixel_its_own_variance_and_mean():
    config = SimulationConfig(
        frame_size=(16, 16),
        density_per_um2=0.0,
        background_photons=(2.0, 2.0),
        camera=SCMOS,
        pixel_read_noise_spread=0.4,
        pixel_offset_spread=3.0,
    )
    movie = simulate_movie(config, 800, seed=9)
    read, offset = movie.read_noise_e_map.double(), movie.offset_adu_map.double()  # (H, W)
    assert float(torch.log(read / 1.5).std()) == pytest.approx(0.4, rel=0.15)
    assert float(offset.std()) == pytest.approx(3.0, rel=0.15)
    adu = movie.frames.double()  # (T, H, W)
    qe_b = 0.9 * 2.0  # electrons of background per pixel
    variance = (qe_b + read**2) / 0.5**2 + 1.0 / 12.0  # ADU^2 (docs/CONVENTIONS.md, section 2)
    ratio = adu.var(dim=0) / variance
    assert float(ratio.mean()) == pytest.approx(1.0, abs=0.02)
    assert float(ratio.std()) < 0.1  # each pixel its own: sampling error of 800 frames is 5 %
    error = (adu.mean(dim=0) - (100.0 + offset + qe_b / 0.5)) / torch.sqrt(variance / 800)
    assert float(error.abs().max()) < 4.5  # standard errors of the mean, over 256 pixels


def test_a_constant_read_noise_map_is_the_camera_itself():
    expected = torch.full((3, 8, 8), 20.0)
    plain = apply_camera(expected, SCMOS, torch.Generator().manual_seed(2))
    mapped = apply_camera(
        expected, SCMOS, torch.Generator().manual_seed(2), read_noise_e=torch.full((8, 8), 1.5)
    )
    assert torch.equal(plain, mapped)


# ---------------------------------------------------------------------------------------------
# Settings


def test_new_settings_round_trip_through_a_file(tmp_path):
    config = SimulationConfig(
        photon_distribution="log-normal",
        psf_model="pupil",
        na=(1.2, 1.5),
        wavelength_nm=(500.0, 700.0),
        defocus_nm=(-400.0, 400.0),
        defocus_spread_nm=100.0,
        spherical_waves=(-0.5, 0.5),
        background_blobs=0.05,
        background_blob_amplitude=2.0,
        camera=SCMOS,
        pixel_read_noise_spread=0.3,
        pixel_offset_spread=2.0,
    )
    config.save(tmp_path / "simulation.json")
    assert SimulationConfig.load(tmp_path / "simulation.json") == config
    assert SimulationConfig.from_dict(config.to_dict()) == config
    assert SimulationConfig.from_dict({"photons": [1.0, 2.0]}) == SimulationConfig(photons=(1.0, 2.0))


@pytest.mark.parametrize(
    "changes",
    [
        {"psf_model": "spline"},
        {"photon_distribution": "gamma"},
        {"na": (1.2, 1.6)},
        {"na": (1.4, 1.2)},
        {"wavelength_nm": (100.0, 700.0)},
        {"defocus_nm": (-3000.0, 0.0)},
        {"spherical_waves": (0.0, 1.5)},
        {"defocus_spread_nm": -1.0},
        {"background_blobs": -0.1},
        {"pixel_read_noise_spread": -0.1},
        {"pixel_offset_spread": math.inf},
        {"psf_model": "pupil", "na": (0.3, 0.3), "wavelength_nm": (2000.0, 2000.0)},  # patch too large
    ],
)
def test_bad_new_settings_raise_input_error(changes):
    with pytest.raises(InputError):
        SimulationConfig(**changes)
