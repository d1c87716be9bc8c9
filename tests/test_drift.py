"""Drift estimation (RCC and fiducials), its correction and its CSV trace, on simulated filaments
with a known drift (napari_var_emitter.simulation.tables)."""

import numpy as np
import pytest

from napari_var_emitter.analysis.drift import Drift, estimate_drift, estimate_drift_fiducials, solve_rcc
from napari_var_emitter.errors import CsvFormatError, InputError
from napari_var_emitter.io.localizations import Localizations
from napari_var_emitter.simulation.tables import simulate_filaments

PX_NM = 100.0


def residual_rms_nm(corrected: Localizations, sim) -> float:
    """RMS over rows of the drift left in ``corrected``, its constant offset removed (arbitrary)."""
    left_x = corrected.x - (sim.locs.x - sim.drift_x_px[sim.locs.frame])
    left_y = corrected.y - (sim.locs.y - sim.drift_y_px[sim.locs.frame])
    return float(np.sqrt(np.var(left_x) + np.var(left_y))) * PX_NM


@pytest.fixture(scope="module")
def drifting():
    return simulate_filaments(30_000, 5_000, noise_nm=10.0, seed=1)


@pytest.fixture(scope="module")
def rcc(drifting):
    return estimate_drift(drifting.locs, pixel_size_nm=PX_NM)


def test_rcc_removes_the_drift_to_under_10_nm(drifting, rcc):
    locs = drifting.locs
    assert residual_rms_nm(locs, drifting) > 40.0  # before: the drift is there to remove
    corrected = rcc.apply(locs)
    assert residual_rms_nm(corrected, drifting) < 10.0
    assert rcc.method == "rcc" and len(rcc.segment_frames) == 15  # 30,000 / 2,000 localizations
    assert rcc.pairs_used == rcc.pairs_total == 15 * 14 // 2
    assert np.array_equal(rcc.frames, np.arange(5_000))
    assert rcc.dx[0] == 0.0 and rcc.dy[0] == 0.0  # the origin is the start of the movie


def test_apply_keeps_every_row_in_order_and_every_other_column(drifting, rcc):
    locs = drifting.locs
    corrected = rcc.apply(locs)
    assert len(corrected) == len(locs)
    np.testing.assert_array_equal(corrected.frame, locs.frame)
    for name in ("photons", "background", "bkgstd", "sigma", "uncertainty", "probability", "grid_factor"):
        np.testing.assert_array_equal(getattr(corrected, name), getattr(locs, name))
    np.testing.assert_allclose(corrected.x, locs.x - rcc.dx[locs.frame])
    np.testing.assert_allclose(corrected.y, locs.y - rcc.dy[locs.frame])
    assert corrected.photons is not locs.photons  # a copy: the input table is left as it was


def test_apply_holds_the_end_values_past_the_trace():
    drift = Drift(dx=np.array([0.0, 1.0, 2.0]), dy=np.array([0.0, -1.0, -2.0]), method="test")
    locs = Localizations(frame=[0, 2, 7, 1], x=[10.0, 10.0, 10.0, 10.0], y=[5.0, 5.0, 5.0, 5.0])
    corrected = drift.apply(locs)
    np.testing.assert_array_equal(corrected.x, [10.0, 8.0, 8.0, 9.0])
    np.testing.assert_array_equal(corrected.y, [5.0, 7.0, 7.0, 6.0])


def test_zero_drift_is_estimated_as_zero():
    still = simulate_filaments(20_000, 3_000, noise_nm=10.0, drift=False, seed=2)
    drift = estimate_drift(still.locs, pixel_size_nm=PX_NM)
    assert len(drift.segment_frames) == 10
    assert np.max(np.abs(drift.dx)) * PX_NM < 5.0 and np.max(np.abs(drift.dy)) * PX_NM < 5.0


def test_a_segment_without_the_structure_is_rejected_not_followed():
    sim = simulate_filaments(30_000, 5_000, noise_nm=10.0, seed=3)
    locs = sim.locs
    rng = np.random.default_rng(5)
    scrambled = (locs.frame >= 2_000) & (locs.frame < 2_333)  # the 7th of 15 segments
    locs.x[scrambled] = rng.uniform(0, 100, scrambled.sum())
    locs.y[scrambled] = rng.uniform(0, 100, scrambled.sum())
    drift = estimate_drift(locs, pixel_size_nm=PX_NM)
    assert drift.pairs_used < drift.pairs_total
    assert np.isnan(drift.segment_dx[6]) and np.isfinite(np.delete(drift.segment_dx, 6)).all()
    kept = ~scrambled
    left = (drift.dx - sim.drift_x_px)[locs.frame[kept]], (drift.dy - sim.drift_y_px)[locs.frame[kept]]
    assert np.sqrt(np.var(left[0]) + np.var(left[1])) * PX_NM < 10.0


def test_solve_rcc_rejects_inconsistent_pairs():
    truth = np.array([[0.0, 0.0], [10.0, -5.0], [25.0, -5.0], [30.0, 10.0], [50.0, 20.0]])
    pairs = np.array([(a, b) for a in range(5) for b in range(a + 1, 5)])
    d_nm = truth[pairs[:, 1]] - truth[pairs[:, 0]] + np.random.default_rng(0).normal(0, 1.0, (len(pairs), 2))
    d_nm[3] += [200.0, -150.0]  # pair (0, 4): a wrong correlation peak
    positions, used = solve_rcc(pairs, d_nm, 5, max_residual_nm=10.0)
    assert not used[3] and used.sum() == len(pairs) - 1
    np.testing.assert_allclose(positions, truth, atol=3.0)


def test_too_few_localizations_is_an_input_error():
    small = simulate_filaments(3_000, 1_000, seed=4)
    with pytest.raises(InputError, match="too few to measure drift"):
        estimate_drift(small.locs, pixel_size_nm=PX_NM)
    with pytest.raises(InputError, match="no localization"):
        estimate_drift(Localizations(), pixel_size_nm=PX_NM)


def test_too_few_frames_is_an_input_error():
    sim = simulate_filaments(8_000, 2, seed=4)
    with pytest.raises(InputError, match="too few to split"):
        estimate_drift(sim.locs, pixel_size_nm=PX_NM)
    with pytest.raises(InputError, match="at least 3"):
        estimate_drift(simulate_filaments(8_000, 100, seed=4).locs, pixel_size_nm=PX_NM, segments=2)


def test_an_empty_segment_is_an_input_error():
    sim = simulate_filaments(10_000, 1_000, seed=4)
    locs = sim.locs.subset((sim.locs.frame < 300) | (sim.locs.frame >= 700))
    with pytest.raises(InputError, match="time segment 3 of 5"):
        estimate_drift(locs, pixel_size_nm=PX_NM, segments=5, min_locs_per_segment=1000)


def test_fiducials_follow_the_drift():
    sim = simulate_filaments(15_000, 3_000, noise_nm=10.0, n_fiducials=3, seed=6)
    drift = estimate_drift_fiducials(sim.locs, pixel_size_nm=PX_NM)
    assert drift.method == "fiducials" and drift.n_fiducials == 3
    assert residual_rms_nm(drift.apply(sim.locs), sim) < 5.0


def test_no_fiducial_is_an_input_error():
    sim = simulate_filaments(15_000, 3_000, noise_nm=10.0, seed=6)
    with pytest.raises(InputError, match="no fiducial found"):
        estimate_drift_fiducials(sim.locs, pixel_size_nm=PX_NM)


def test_the_drift_trace_csv_round_trips(rcc, tmp_path):
    path = rcc.to_csv(tmp_path / "drift.csv", pixel_size_nm=PX_NM)
    lines = path.read_text().splitlines()
    assert lines[0] == "frame,dx [nm],dy [nm]" and len(lines) == 5_001
    frame, dx_nm, _ = lines[-1].split(",")
    assert int(frame) == 5_000 and float(dx_nm) == pytest.approx(rcc.dx[-1] * PX_NM)
    back = Drift.read_csv(path, pixel_size_nm=PX_NM)
    np.testing.assert_allclose(back.dx, rcc.dx, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(back.dy, rcc.dy, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(back.frames, rcc.frames)


def test_a_file_that_is_not_a_drift_trace_is_refused(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("frame,x [nm]\n1,2\n")
    with pytest.raises(CsvFormatError, match="not a drift trace"):
        Drift.read_csv(path, pixel_size_nm=PX_NM)
    path.write_text("frame,dx [nm],dy [nm]\n1,0,0\n3,1,1\n")
    with pytest.raises(CsvFormatError, match="in order"):
        Drift.read_csv(path, pixel_size_nm=PX_NM)
