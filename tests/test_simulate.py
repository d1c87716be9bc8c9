"""The simulator against theory: PSF integrals, camera noise, blinking, density, files."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import tifffile
import torch
from scipy.special import ndtr

from napari_var_emitter.camera import Camera
from napari_var_emitter.errors import InputError
from napari_var_emitter.io.localizations import Localizations, read_csv, to_csv
from napari_var_emitter.simulation import (
    SimulationConfig,
    apply_camera,
    render_expected,
    simulate_batch,
    simulate_movie,
    write_movie,
)

SCMOS = Camera(pixel_size_nm=100.0, baseline=100.0, e_per_adu=2.0, em_gain=1.0, qe=0.8, read_noise_e=1.5)
EMCCD = Camera()  # challenge 2016: gain 300, 45 e-/ADU, qe 0.9, read noise 74.4 e-


def _render_one(x, y, photons=1000.0, sigma=1.3, height=32, width=32):
    t = torch.tensor
    return render_expected(t([x]), t([y]), t([photons]), t([sigma]), t([0]), 1, height, width)[
        0
    ].double()  # (H, W)


def _centroid(image):
    rows, cols = np.indices(image.shape)
    total = image.sum()
    return (image * cols).sum() / total, (image * rows).sum() / total


# ---------------------------------------------------------------------------------------------
# Rendering


def test_render_sum_of_centred_emitter_is_its_photons():
    image = _render_one(15.3, 16.7, photons=2500.0)
    assert float(image.sum()) == pytest.approx(2500.0, rel=1e-5)


@pytest.mark.parametrize(
    "x, y, inside_fraction",
    [
        (-0.5, 15.0, 0.5),  # on the left edge: half
        (-0.5, -0.5, 0.25),  # on the corner: a quarter
        (31.5, 10.0, 0.5),  # on the right edge (pixel 31 covers [30.5, 31.5))
        (-1.5, 12.0, 1.0 - ndtr(1.0 / 1.3)),  # centred outside: its tail still lights the frame
        (34.0, 12.0, 1.0 - ndtr(2.5 / 1.3)),
    ],
)
def test_render_border_emitter_loses_the_right_fraction(x, y, inside_fraction):
    image = _render_one(x, y, photons=1000.0, sigma=1.3)
    assert float(image.sum()) == pytest.approx(1000.0 * inside_fraction, rel=1e-4)


def test_render_pixel_integral_matches_error_functions():
    x, y, s = 10.3, 12.8, 1.1
    image = _render_one(x, y, photons=1.0, sigma=s)
    fx = ndtr((11.5 - x) / s) - ndtr((10.5 - x) / s)  # pixel column 11 covers [10.5, 11.5)
    fy = ndtr((12.5 - y) / s) - ndtr((11.5 - y) / s)  # pixel row 12
    assert float(image[12, 11]) == pytest.approx(fx * fy, rel=1e-5)


def test_render_overlapping_emitters_add_up_exactly():
    t = torch.tensor
    both = render_expected(
        t([10.2, 11.0]), t([9.7, 10.1]), t([800.0, 1300.0]), t([1.0, 1.6]), t([0, 0]), 1, 24, 24
    )[0]
    one = _render_one(10.2, 9.7, 800.0, 1.0, 24, 24)
    two = _render_one(11.0, 10.1, 1300.0, 1.6, 24, 24)
    assert torch.allclose(both.double(), one + two, atol=1e-3)


@pytest.mark.parametrize("x, y", [(12.0, 14.0), (12.37, 14.81), (11.5, 13.5), (12.05, 14.49), (11.73, 14.02)])
def test_noise_free_centroid_is_the_truth_position(x, y, tmp_path):
    image = _render_one(x, y, photons=5000.0, sigma=1.2, height=28, width=26)
    cx, cy = _centroid(image.numpy())
    assert abs(cx - x) < 0.01 and abs(cy - y) < 0.01
    # ... and the CSV carries it in nm from the top-left image corner (docs/CONVENTIONS.md, section 1).
    px = 160.0
    one = Localizations(
        frame=[0],
        x=[x],
        y=[y],
        photons=[5000.0],
        background=0.0,
        bkgstd=0.0,
        sigma=1.2,
        uncertainty=np.nan,
        probability=1.0,
        grid_factor=0.0,
    )
    to_csv(one, tmp_path / "one.csv", px)
    with open(tmp_path / "one.csv", newline="") as handle:
        row = next(csv.DictReader(handle))
    assert float(row["x [nm]"]) == pytest.approx((cx + 0.5) * px, abs=0.01 * px)
    assert float(row["y [nm]"]) == pytest.approx((cy + 0.5) * px, abs=0.01 * px)
    assert int(row["frame"]) == 1


# ---------------------------------------------------------------------------------------------
# Camera


@pytest.mark.parametrize("camera", [EMCCD, SCMOS], ids=["emccd", "scmos"])
def test_flat_background_mean_and_variance_match_camera_theory(camera):
    config = SimulationConfig(density_per_um2=0.0, background_photons=(50.0, 50.0), camera=camera)
    batch = simulate_batch(config, 4, window=2, generator=torch.Generator().manual_seed(1))
    assert batch.emitters.shape == (0, 6)
    assert torch.all(batch.background == 50.0)
    adu = batch.frames.double()  # 8 frames of 64 x 64 pixels
    b, g, qe = 50.0, camera.em_gain, camera.qe
    excess = 2.0 if g > 1 else 1.0
    var_electrons = qe * b * g**2 * excess + camera.read_noise_e**2
    var_adu = var_electrons / camera.e_per_adu**2 + 1.0 / 12.0  # + rounding to whole ADU
    mean_adu = camera.baseline + qe * b * g / camera.e_per_adu
    assert float(adu.mean()) == pytest.approx(mean_adu, rel=0.01)
    assert float(adu.var()) == pytest.approx(var_adu, rel=0.05)


def test_camera_output_is_whole_uint16_adu():
    expected = torch.tensor([0.0, 1.0, 1e7, 50.0])
    adu = apply_camera(expected, EMCCD, torch.Generator().manual_seed(0))
    assert adu.dtype == torch.float32
    assert torch.all(adu == torch.round(adu))
    assert float(adu.min()) >= 0 and float(adu.max()) == 65535.0  # 1e7 photons saturate


@pytest.mark.parametrize("camera", [EMCCD, SCMOS], ids=["emccd", "scmos"])
def test_total_signal_matches_truth_photons_plus_background(camera):
    config = SimulationConfig(background_photons=(30.0, 30.0), camera=camera, mean_on_frames=2.0)
    movie = simulate_movie(config, 60, seed=3)
    photons = camera.adu_to_photons(movie.frames.double())
    signal = float(photons.sum() - movie.background.double().sum())
    truth = float(movie.truth.photons.sum())
    # Light leaking out of the frame and in from outside cancel on average; noise is ~0.3%.
    assert signal == pytest.approx(truth, rel=0.03)


def test_movie_outside_holds_the_emitters_that_light_the_frame_from_beyond_it():
    """The light of the frame = truth + outside emitters (noise-free camera); outside rows lie
    outside the frame, in the frames of the movie."""
    camera = Camera(pixel_size_nm=100.0, baseline=0.0, e_per_adu=1.0, em_gain=1.0, qe=1.0, read_noise_e=0.0)
    config = SimulationConfig(frame_size=(24, 24), density_per_um2=3.0, photons=(5e4, 5e4), camera=camera)
    movie = simulate_movie(config, 4, seed=11)
    out, truth = movie.outside, movie.truth
    assert len(out) > 0
    inside = (out.x >= -0.5) & (out.x < 23.5) & (out.y >= -0.5) & (out.y < 23.5)
    assert not inside.any() and set(out.frame) <= {0, 1, 2, 3}

    def light(t):
        f = torch.tensor
        return render_expected(
            f(t.x), f(t.y), f(t.photons), f(t.sigma), f(t.frame), 4, 24, 24
        ).double()  # (T, H, W)

    signal = camera.adu_to_photons(movie.frames.double()) - movie.background.double()
    both = light(truth) + light(out)
    assert float((signal - both).abs().mean()) < 0.1 * float(both.abs().mean())  # shot noise only
    assert float((signal - light(truth)).sum()) == pytest.approx(float(light(out).sum()), rel=0.05)


def test_movie_positions_match_the_light_end_to_end(tmp_path):
    camera = Camera(pixel_size_nm=110.0, baseline=100.0, e_per_adu=1.0, em_gain=1.0, qe=1.0, read_noise_e=1.0)
    config = SimulationConfig(
        density_per_um2=0.05, photons=(2e5, 2e5), background_photons=(5.0, 5.0), camera=camera
    )
    movie = simulate_movie(config, 12, seed=7)
    write_movie(movie, tmp_path)
    truth = read_csv(tmp_path / "truth.csv", camera.pixel_size_nm)  # back from nm, 1-based frames
    photons = camera.adu_to_photons(movie.frames.double()).numpy() - 5.0
    checked = 0
    for i in range(len(truth)):
        x, y, t = truth.x[i], truth.y[i], truth.frame[i]
        same_frame = truth.subset(truth.frame == t)
        others = np.hypot(same_frame.x - x, same_frame.y - y)
        if (
            truth.photons[i] < 1e5
            or np.sort(others)[1:2].min(initial=99) < 14
            or not (10 < x < 53 and 10 < y < 53)
        ):
            continue
        r, c = int(round(y)), int(round(x))
        window = photons[t, r - 5 : r + 6, c - 5 : c + 6]
        cx, cy = _centroid(window)
        assert abs(c - 5 + cx - x) < 0.03 and abs(r - 5 + cy - y) < 0.03
        checked += 1
    assert checked >= 3


# ---------------------------------------------------------------------------------------------
# Blinking and density


def test_blinking_emitters_persist_across_consecutive_frames():
    config = SimulationConfig(mean_on_frames=4.0, photons=(1000.0, 2000.0))
    batch = simulate_batch(config, 16, window=6, generator=torch.Generator().manual_seed(2))
    rows = batch.emitters.numpy()
    key = {(int(b), int(t), float(x), float(y)) for b, t, x, y, _, _ in rows}
    followed = [(int(b), int(t) + 1, float(x), float(y)) in key for b, t, x, y, _, _ in rows if t < 5]
    # With a mean on-time of 4 frames, most ON emitters are still ON in the next frame.
    assert np.mean(followed) > 0.6
    # Photons: never above a full frame's worth; partly-on frames get a fraction of it.
    assert rows[:, 4].max() <= 2000.0 + 1e-3
    assert np.mean(rows[:, 4] < 1000.0) > 0.05
    # The same emitter keeps its brightness in its fully-on middle frames.
    for b, t, x, y, p, _ in rows[:200]:
        if (int(b), int(t) - 1, float(x), float(y)) in key and (
            int(b),
            int(t) + 1,
            float(x),
            float(y),
        ) in key:
            assert 1000.0 - 1e-3 <= p <= 2000.0 + 1e-3


def test_short_on_times_rarely_persist():
    config = SimulationConfig(mean_on_frames=0.2)
    rows = simulate_batch(config, 16, window=4, generator=torch.Generator().manual_seed(4)).emitters.numpy()
    key = {(int(b), int(t), float(x), float(y)) for b, t, x, y, _, _ in rows}
    followed = [(int(b), int(t) + 1, float(x), float(y)) in key for b, t, x, y, _, _ in rows if t < 3]
    assert np.mean(followed) < 0.3


@pytest.mark.parametrize("structure", ["uniform", "filaments"])
def test_density_gives_the_requested_mean_count_inside_the_frame(structure):
    config = SimulationConfig(density_per_um2=0.3, structure=structure, psf_sigma_nm=(100.0, 150.0))
    assert config.emitters_per_frame == pytest.approx(12.288)
    batch = simulate_batch(config, 100, window=2, generator=torch.Generator().manual_seed(5))
    rows = batch.emitters
    assert batch.frames.shape == (100, 2, 64, 64) and batch.background.shape == (100, 2, 64, 64)
    counts = torch.bincount((rows[:, 0] * 2 + rows[:, 1]).long(), minlength=200).double()
    # Poisson counts: the std of the mean is about 0.3 here.
    assert float(counts.mean()) == pytest.approx(12.288, abs=1.0)
    x, y = rows[:, 2], rows[:, 3]
    assert (
        float(x.min()) >= -0.5 and float(x.max()) < 63.5 and float(y.min()) >= -0.5 and float(y.max()) < 63.5
    )
    assert torch.all((batch.psf_sigma_px >= 1.0) & (batch.psf_sigma_px <= 1.5))


def test_same_seed_same_movie_and_different_seed_differs():
    config = SimulationConfig(frame_size=(32, 40), structure="filaments", background_variation=0.3)
    a, b, c = (
        simulate_movie(config, 3, seed=11),
        simulate_movie(config, 3, seed=11),
        simulate_movie(config, 3, 12),
    )
    assert a.frames.shape == (3, 32, 40)
    assert torch.equal(a.frames, b.frames) and np.array_equal(a.truth.x, b.truth.x)
    assert not torch.equal(a.frames, c.frames)


# ---------------------------------------------------------------------------------------------
# Files and validation


def test_write_movie_round_trips(tmp_path):
    config = SimulationConfig(frame_size=(20, 24), density_per_um2=1.0, camera=Camera(pixel_size_nm=160.0))
    movie = simulate_movie(config, 5, seed=0)
    out = write_movie(movie, tmp_path / "new" / "dir")
    frames = tifffile.imread(out / "frames.tif")
    assert frames.dtype == np.uint16 and frames.shape == (5, 20, 24)
    assert np.array_equal(frames, movie.frames.numpy().astype(np.uint16))
    back = read_csv(out / "truth.csv", 160.0)
    assert len(back) == len(movie.truth) > 0
    np.testing.assert_array_equal(back.frame, movie.truth.frame)
    np.testing.assert_allclose(back.x, movie.truth.x, atol=1e-9)
    np.testing.assert_allclose(back.y, movie.truth.y, atol=1e-9)
    np.testing.assert_allclose(back.photons, movie.truth.photons)
    np.testing.assert_allclose(back.sigma, movie.truth.sigma, rtol=1e-9)
    np.testing.assert_allclose(back.bkgstd, np.sqrt(back.background))
    assert Camera.load(out / "camera.json") == config.camera
    assert SimulationConfig.load(out / "simulation.json") == config


@pytest.mark.parametrize(
    "changes",
    [
        {"frame_size": (0, 64)},
        {"frame_size": (64,)},
        {"density_per_um2": -1.0},
        {"density_per_um2": math.nan},
        {"photons": (5000.0, 1000.0)},
        {"psf_sigma_nm": (0.0, 100.0)},
        {"background_photons": (-1.0, 10.0)},
        {"background_variation": 1.5},
        {"psf_sigma_jitter": -0.1},
        {"structure": "spirals"},
        {"mean_on_frames": 0.0},
        {"camera": "emccd"},
    ],
)
def test_bad_config_raises_input_error(changes):
    with pytest.raises(InputError):
        SimulationConfig(**changes)


def test_log_uniform_photons_give_as_many_dim_emitters_as_bright_ones():
    def photons(distribution):
        config = SimulationConfig(
            density_per_um2=3.0, photons=(100.0, 10000.0), photon_distribution=distribution
        )
        return simulate_movie(config, 20, seed=3).truth.photons

    uniform, log_uniform = photons("uniform"), photons("log-uniform")
    assert log_uniform.max() <= 10000.0 and uniform.max() <= 10000.0
    # fully-on brightness: log-uniform has half its emitters under sqrt(100 * 10000) = 1000 photons,
    # uniform 9 %; partly-on frames scale both down alike
    assert np.mean(log_uniform < 1000.0) > 2.5 * np.mean(uniform < 1000.0)
    with pytest.raises(InputError, match="photon_distribution"):
        SimulationConfig(photon_distribution="normal")
