"""Fourier ring correlation on simulated filaments (simulation.tables) and on known images."""

import json

import numpy as np
import pytest

from napari_var_emitter.analysis.drift import estimate_drift
from napari_var_emitter.analysis.frc import (
    FRC_THRESHOLD,
    frc,
    ring_correlation,
    split_halves,
    threshold_crossing,
)
from napari_var_emitter.errors import InputError
from napari_var_emitter.io.localizations import Localizations
from napari_var_emitter.simulation.tables import simulate_filaments

PX_NM = 100.0


@pytest.fixture(scope="module")
def precise():
    return frc(
        simulate_filaments(30_000, 5_000, noise_nm=10.0, drift=False, seed=1).locs, pixel_size_nm=PX_NM
    )


def test_resolution_of_filaments_with_10_nm_noise(precise):
    assert 15.0 < precise.resolution_nm < 120.0
    assert precise.threshold == pytest.approx(1 / 7) and precise.render_nm == 5.0
    # the curve is high at low frequencies and crosses 1/7 at the reported resolution
    assert precise.curve[0] > 0.8
    crossing = np.interp(1 / precise.resolution_nm, precise.frequencies, precise.curve)
    assert crossing == pytest.approx(FRC_THRESHOLD, abs=0.01)


def test_more_noise_gives_a_worse_resolution(precise):
    blurred = frc(
        simulate_filaments(30_000, 5_000, noise_nm=30.0, drift=False, seed=1).locs, pixel_size_nm=PX_NM
    )
    assert blurred.resolution_nm > 1.8 * precise.resolution_nm


def test_drift_correction_improves_the_resolution():
    sim = simulate_filaments(30_000, 5_000, noise_nm=10.0, seed=1)
    before = frc(sim.locs, pixel_size_nm=PX_NM).resolution_nm
    after = frc(
        estimate_drift(sim.locs, pixel_size_nm=PX_NM).apply(sim.locs), pixel_size_nm=PX_NM
    ).resolution_nm
    assert after < 0.7 * before


def test_unstructured_points_have_no_fine_resolution():
    rng = np.random.default_rng(0)
    n = 30_000
    uniform = Localizations(
        frame=np.sort(rng.integers(0, 5_000, n)), x=rng.uniform(0, 100, n), y=rng.uniform(0, 100, n)
    )
    resolution = frc(uniform, pixel_size_nm=PX_NM).resolution_nm
    assert np.isnan(resolution) or resolution > 300.0


def test_ring_correlation_of_known_images():
    rng = np.random.default_rng(0)
    image = rng.random((64, 64))
    np.testing.assert_allclose(ring_correlation(image, image), 1.0)
    np.testing.assert_allclose(ring_correlation(image, -image), -1.0)
    independent = ring_correlation(rng.normal(size=(256, 256)), rng.normal(size=(256, 256)))
    assert len(independent) == 128 and np.abs(independent[10:]).mean() < 0.05


def test_threshold_crossing_interpolates_between_rings():
    frequencies = np.array([0.01, 0.02, 0.03, 0.04])
    assert threshold_crossing(frequencies, np.array([0.9, 0.5, 0.1, 0.0]), 0.3) == pytest.approx(0.025)
    assert np.isnan(threshold_crossing(frequencies, np.array([0.9, 0.8, 0.7, 0.6]), 0.3))
    assert np.isnan(threshold_crossing(frequencies, np.array([0.1, 0.8, 0.7, 0.6]), 0.3))


def test_halves_are_whole_blocks_of_frames_chosen_by_the_seed():
    frame = np.repeat(np.arange(1_000), 3)
    first = split_halves(frame, 100, seed=0)
    assert first.sum() == len(frame) // 2
    by_block = first.reshape(10, -1)
    assert np.all(by_block.all(axis=1) | ~by_block.any(axis=1))  # no block split between halves
    assert np.array_equal(first, split_halves(frame, 100, seed=0))
    assert not np.array_equal(first, split_halves(frame, 100, seed=1))


def test_to_dict_is_json(precise):
    data = json.loads(json.dumps(precise.to_dict()))
    assert data["resolution_nm"] == pytest.approx(precise.resolution_nm)
    assert len(data["frequencies_per_nm"]) == len(data["frc"]) == len(precise.curve)


def test_too_few_localizations_or_frames_is_an_input_error():
    sim = simulate_filaments(150, 100, seed=2)
    with pytest.raises(InputError, match="too few for FRC"):
        frc(sim.locs, pixel_size_nm=PX_NM)
    one_frame = simulate_filaments(5_000, 1, seed=2)
    with pytest.raises(InputError, match="two independent halves"):
        frc(one_frame.locs, pixel_size_nm=PX_NM)
