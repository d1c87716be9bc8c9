"""Challenge metrics on hand-made cases with answers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_var_emitter.analysis.metrics import (
    MetricReport,
    crlb_nm,
    evaluate,
    isolated,
    match,
    subpixel_flatness,
    uncertainty_calibration,
)
from napari_var_emitter.errors import InputError
from napari_var_emitter.io.localizations import Localizations

PX = 100.0  # nm per pixel in these cases


def locs(frame, x, y, **columns) -> Localizations:
    n = len(frame)
    defaults = dict(photons=1000.0, background=10.0, bkgstd=math.sqrt(10.0), sigma=1.0)
    defaults.update(uncertainty=np.nan, probability=1.0, grid_factor=0.0)
    defaults.update(columns)
    return Localizations(
        frame=frame, x=x, y=y, **{k: np.array(np.broadcast_to(v, (n,))) for k, v in defaults.items()}
    )


def test_one_of_three_found_and_one_false_positive():
    truth = locs([0, 0, 0], [10.0, 20.0, 30.0], [10.0, 20.0, 30.0])
    # One prediction 30 nm right and 40 nm down of truth 0 (50 nm away), one far from everything.
    pred = locs([0, 0], [10.3, 40.0], [10.4, 40.0])
    r = evaluate(pred, truth, PX)
    assert (r.n_pred, r.n_truth, r.tp, r.fp, r.fn) == (2, 3, 1, 1, 2)
    assert r.jaccard == pytest.approx(25.0)  # 1 / (1 + 1 + 2)
    assert r.recall == pytest.approx(100 / 3) and r.precision == pytest.approx(50.0)
    assert r.rmse_nm == pytest.approx(50.0) and r.rmse_x_nm == pytest.approx(30.0)
    assert r.rmse_y_nm == pytest.approx(40.0)
    assert r.bias_x_nm == pytest.approx(30.0) and r.bias_y_nm == pytest.approx(40.0)
    assert r.efficiency == pytest.approx(100 - math.sqrt(75.0**2 + 50.0**2))  # 9.8612
    assert r.efficiency == pytest.approx(9.86121811)


def test_one_of_three_found_no_false_positive_gives_ji_33():
    truth = locs([0, 0, 0], [10.0, 20.0, 30.0], [10.0, 20.0, 30.0])
    r = evaluate(locs([0], [20.0], [21.0]), truth, PX)  # exactly 100 nm away
    assert r.jaccard == pytest.approx(100 / 3) and r.rmse_nm == pytest.approx(100.0)
    assert r.efficiency == pytest.approx(100 - math.sqrt((200 / 3) ** 2 + 100.0**2))


def test_tolerance_is_inclusive_and_per_frame():
    truth = locs([0, 1], [5.0, 5.0], [5.0, 5.0])
    pred = locs([0, 2], [7.5, 5.0], [5.0, 5.0])  # 250 nm away in frame 0; right place, wrong frame
    p, t = match(pred, truth, PX)
    assert p.tolist() == [0] and t.tolist() == [0]
    assert len(match(pred, truth, PX, tolerance_nm=249.0)[0]) == 0


def test_greedy_loses_a_pair_that_hungarian_keeps():
    # 1D, nm: truths at 0 and 400; P0 at 190 (190 from T0, 210 from T1), P1 at -200 (only T0 in reach).
    truth = locs([0, 0], [10.0, 14.0], [5.0, 5.0])
    pred = locs([0, 0], [11.9, 8.0], [5.0, 5.0])
    p, t = match(pred, truth, PX, method="hungarian")
    assert sorted(zip(p.tolist(), t.tolist(), strict=True)) == [(0, 1), (1, 0)]
    p, t = match(pred, truth, PX, method="greedy")
    assert list(zip(p.tolist(), t.tolist(), strict=True)) == [
        (0, 0)
    ]  # nearest first takes P0-T0, stranding P1
    assert evaluate(pred, truth, PX, method="greedy").jaccard == pytest.approx(100 / 3)
    assert evaluate(pred, truth, PX, method="hungarian").jaccard == pytest.approx(100.0)


def test_hungarian_minimises_total_distance_where_greedy_does_not():
    # nm: truths at 0 and 100, predictions at 60 and 160.
    truth = locs([3, 3], [0.0, 1.0], [0.0, 0.0])
    pred = locs([3, 3], [0.6, 1.6], [0.0, 0.0])
    p, t = match(pred, truth, PX)
    assert sorted(zip(p.tolist(), t.tolist(), strict=True)) == [(0, 0), (1, 1)]  # 60 + 60 nm
    p, t = match(pred, truth, PX, method="greedy")
    assert sorted(zip(p.tolist(), t.tolist(), strict=True)) == [(0, 1), (1, 0)]  # 40 first, then 160 nm


def test_perfect_prediction_and_empty_cases():
    truth = locs([0, 0, 4], [1.0, 9.0, 3.0], [2.0, 3.0, 4.0])
    r = evaluate(truth, truth, PX)
    assert (r.jaccard, r.rmse_nm, r.efficiency, r.bias_x_nm) == (100.0, 0.0, 100.0, 0.0)
    none = evaluate(locs([], [], []), truth, PX)
    assert (none.tp, none.fn, none.jaccard, none.recall) == (0, 3, 0.0, 0.0)
    assert math.isnan(none.rmse_nm) and math.isnan(none.precision) and math.isnan(none.efficiency)


def test_bad_method_and_tolerance_raise():
    truth = locs([0], [1.0], [1.0])
    with pytest.raises(InputError):
        match(truth, truth, PX, method="nearest")
    with pytest.raises(InputError):
        match(truth, truth, PX, tolerance_nm=0.0)


def test_crlb_against_hand_calculation():
    # N = 1000, b = 10, s = a = 100 nm, F = 2:
    # sa2 = 100^2 + 100^2 / 12 = 10833.33; 8 pi sa2 b / (N a^2) = 0.272271;
    # var = 2 * 10833.33 / 1000 * (1.777778 + 0.272271) = 44.41773; sqrt = 6.664663 nm.
    assert crlb_nm(1000.0, 10.0, 100.0, 100.0) == pytest.approx(6.664663, rel=1e-6)
    assert crlb_nm(1000.0, 10.0, 100.0, 100.0, excess_noise=1.0) == pytest.approx(6.664663 / math.sqrt(2))
    # No background: the bound is sqrt(F * sa2 / N * 16 / 9).
    assert crlb_nm(400.0, 0.0, 150.0, 100.0) == pytest.approx(
        math.sqrt(2 * (150**2 + 100**2 / 12) / 400 * 16 / 9)
    )
    # Without background: sqrt(2 * 10833.33 / 1000 * 16 / 9) = 6.2063 nm, halved at 4x the photons.
    np.testing.assert_allclose(
        crlb_nm(np.array([1000.0, 4000.0]), 0.0, 100.0, 100.0), [6.2063, 3.1032], rtol=1e-4
    )


def test_rmse_over_crlb_uses_isolated_bright_truths():
    bound = crlb_nm(1000.0, 10.0, 100.0, PX)  # per axis, nm
    # Truths 0-1 are 500 nm apart (not isolated at 1000 nm); truth 2 is dim; truth 3 is in another frame.
    truth = locs(
        [0, 0, 0, 1],
        [10.0, 15.0, 40.0, 10.0],
        [10.0, 10.0, 40.0, 10.0],
        photons=[1000.0, 1000.0, 50.0, 1000.0],
    )
    assert isolated(truth, PX, 1000.0).tolist() == [False, False, True, True]
    # Every prediction is off by exactly the bound along x and along y: lateral error sqrt(2) * bound.
    off = bound / PX
    pred = locs(truth.frame, truth.x + off, truth.y + off)
    r = evaluate(pred, truth, PX, crlb_min_photons=100.0)
    assert r.rmse_over_crlb == pytest.approx(1.0)
    # Make the excluded rows wildly wrong: the ratio must not change.
    pred.x[:3] += np.array([1.0, -1.0, 1.5])
    assert evaluate(pred, truth, PX, crlb_min_photons=100.0).rmse_over_crlb == pytest.approx(1.0)
    assert math.isnan(evaluate(pred, truth, PX, crlb_min_photons=5000.0).rmse_over_crlb)


def test_rmse_over_crlb_leaves_out_unseen_neighbours_and_cut_psfs():
    """A truth beside an emitter centred outside the frame is not isolated; nor is a truth whose PSF
    the frame's border cuts (the bound assumes the whole PSF): both would inflate the ratio."""
    bound = crlb_nm(1000.0, 10.0, 100.0, PX) / PX  # per axis, px
    truth = locs([0, 0, 0], [4.0, 30.0, 0.5], [30.0, 30.0, 50.0], photons=1000.0)  # sigma 1 px
    unseen = locs([0], [-1.2], [30.0])  # 520 nm from truth 0, centred outside the frame
    assert isolated(truth, PX, 1000.0).tolist() == [True, True, True]
    assert isolated(truth, PX, 1000.0, unseen).tolist() == [False, True, True]
    pred = locs(truth.frame, truth.x + bound, truth.y + bound)
    pred.x[[0, 2]] += 1.0  # the two excluded truths are 100 nm off
    full = evaluate(pred, truth, PX, crlb_min_photons=100.0)
    assert full.n_crlb == 3 and full.rmse_over_crlb > 5
    assert evaluate(pred, truth, PX, crlb_min_photons=100.0, unseen=unseen).n_crlb == 2  # 1 and 2
    assert evaluate(pred, truth, PX, crlb_min_photons=100.0, frame_shape=(64, 64)).n_crlb == 2  # 0, 1
    r = evaluate(pred, truth, PX, crlb_min_photons=100.0, unseen=unseen, frame_shape=(64, 64))
    assert r.n_crlb == 1 and r.rmse_over_crlb == pytest.approx(1.0)
    # 3 sigma from the border is inside: x = 2.5 px is exactly 3 px from the frame's edge at -0.5
    edge = locs([0], [2.5], [30.0], photons=1000.0)
    assert evaluate(edge, edge, PX, crlb_min_photons=100.0, frame_shape=(64, 64)).n_crlb == 1
    edge.x[:] = 2.4
    assert evaluate(edge, edge, PX, crlb_min_photons=100.0, frame_shape=(64, 64)).n_crlb == 0


def test_rmse_over_crlb_is_one_for_errors_drawn_at_the_bound():
    rng = np.random.default_rng(0)
    n = 4000
    truth = locs(
        np.arange(n), rng.uniform(5, 60, n), rng.uniform(5, 60, n), photons=rng.uniform(500, 5000, n)
    )
    bound_px = crlb_nm(truth.photons, truth.background, truth.sigma * PX, PX) / PX
    pred = locs(truth.frame, truth.x + bound_px * rng.normal(size=n), truth.y + bound_px * rng.normal(size=n))
    pred.uncertainty[:] = bound_px
    r = evaluate(pred, truth, PX)
    # The ratio uses the mean variance, so it is exactly calibrated only in expectation: within 5%.
    assert r.rmse_over_crlb == pytest.approx(1.0, abs=0.05)
    assert r.calibration == pytest.approx(1.0, abs=0.03)
    assert abs(r.bias_x_nm) < 0.5 and abs(r.bias_y_nm) < 0.5


def test_uncertainty_calibration_by_hand():
    truth = locs([0, 0], [10.0, 20.0], [10.0, 20.0])
    # Errors (x, y) in px: (0.1, 0.0) and (-0.2, 0.1); predicted uncertainty 0.1 px.
    pred = locs([0, 0], [10.1, 19.8], [10.0, 20.1], uncertainty=0.1)
    p, t = match(pred, truth, PX)
    # Normalised errors 1, 0, -2, 1: sqrt((1 + 0 + 4 + 1) / 4).
    assert uncertainty_calibration(pred, truth, p, t) == pytest.approx(math.sqrt(1.5))
    assert evaluate(pred, truth, PX).calibration == pytest.approx(math.sqrt(1.5))
    assert math.isnan(evaluate(locs([0, 0], [10.1, 19.8], [10.0, 20.1]), truth, PX).calibration)


def test_subpixel_flatness():
    # Positions spread evenly across the pixel: x + 0.5 fractional parts 0.05, 0.15, ..., 0.95.
    even = np.arange(10) * 0.1 - 0.45 + 7.0
    assert subpixel_flatness(locs(np.zeros(10), even, even)) == pytest.approx(1.0)
    # Gridding: everything at pixel centres leaves bins empty.
    assert subpixel_flatness(locs(np.zeros(3), [1.0, 2.0, 3.0], [4.0, 5.0, 6.0])) == math.inf
    # One bin with three times the others.
    x = np.concatenate([even, [7.0 - 0.45, 7.0 - 0.45]])
    assert subpixel_flatness(locs(np.zeros(12), x, x)) == pytest.approx(3.0)
    assert subpixel_flatness(locs(np.zeros(12), x, x), bins=1) == pytest.approx(1.0)


def test_report_helpers():
    truth = locs([0, 0], [10.0, 20.0], [10.0, 20.0])
    r = evaluate(locs([0], [10.2], [10.0]), truth, PX, method="greedy")
    d = r.as_dict()
    assert d["tp"] == 1 and d["method"] == "greedy" and d["rmse_nm"] == pytest.approx(20.0)
    assert len(MetricReport.header()) == len(r.row())
    assert MetricReport.header().split() == [
        "n_pred", "n_truth", "tp", "fp", "fn", "jaccard", "recall", "precision", "rmse_nm", "efficiency",
        "bias_x_nm", "bias_y_nm", "rmse_over_crlb", "n_crlb", "calibration",
    ]  # fmt: skip
