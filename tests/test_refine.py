"""Maximum-likelihood refinement of the network's localizations."""

import numpy as np
import torch

from napari_var_emitter.camera import Camera
from napari_var_emitter.localize.classical import gaussian_model
from napari_var_emitter.localize.refine import (
    CONFIRM_FLOOR,
    CONFIRM_Z,
    CONFIRM_Z_TWO_FRAMES,
    LOBE_RADII,
    LOBE_RATIO,
    SHARE_ALONE,
    confirmed,
    pending,
    refine,
    side_lobes,
)

SIGMA = 1.2
CAMERA = Camera(em_gain=1.0, qe=1.0, read_noise_e=0.0, e_per_adu=1.0, baseline=0.0)  # Poisson only


def _movie(xy_TN2, photons, background, size=32, seed=0):
    """Frames (T, size, size) of incident photons: integrated Gaussians + flat background, Poisson."""
    rng = np.random.default_rng(seed)
    T, N, _ = xy_TN2.shape
    grid = np.arange(size, dtype=np.float64)
    frames = np.full((T, size, size), float(background))
    for t in range(T):
        for x, y in xy_TN2[t]:
            theta = np.array([[x, y, photons, 0.0, SIGMA]])
            frames[t] += gaussian_model(theta, grid, with_jacobian=False)[0][0]
    return rng.poisson(frames).astype(np.float32)


def _run(frames, frame, x, y, photons=2000.0, background=20.0, uncertainty=0.3, **kwargs):
    n = len(x)
    return refine(
        frames,
        frame,
        x,
        y,
        np.full(n, photons),
        np.full(n, background),
        np.full(n, uncertainty),
        CAMERA,
        SIGMA,
        **kwargs,
    )


def test_fit_removes_a_pull_toward_pixel_centres():
    rng = np.random.default_rng(1)
    T = 200
    truth = rng.uniform(10, 22, size=(T, 1, 2))
    frames = _movie(truth, photons=3000.0, background=20.0)
    frame = np.arange(T)
    # the network's gridding: positions pulled halfway toward their pixel centres
    start = np.round(truth[:, 0]) + 0.5 * (truth[:, 0] - np.round(truth[:, 0]))
    out = _run(frames, frame, start[:, 0], start[:, 1], photons=2500.0)
    assert out["fitted"].all()
    err = np.stack([out["x"], out["y"]], 1) - truth[:, 0]
    # CRLB here is about 0.025 px; the start was off by up to 0.25 px
    assert np.sqrt((err**2).mean()) < 0.05
    assert np.abs(err.mean(0)).max() < 0.01
    # no residual pull: the error does not follow the sub-pixel position
    frac = truth[:, 0] - np.round(truth[:, 0])
    slope = np.polyfit(frac.ravel(), err.ravel(), 1)[0]
    assert abs(slope) < 0.1
    # the uncertainty combines the fit's CRLB (~0.025 px here) with a share of the network's
    assert np.all((out["uncertainty"] < 0.3) & (out["uncertainty"] > SHARE_ALONE * 0.3))
    alone = _run(frames, frame, start[:, 0], start[:, 1], photons=2500.0, uncertainty=1e-6)
    assert 0.015 < np.median(alone["uncertainty"]) < 0.04


def test_neighbours_light_is_in_the_model(monkeypatch):
    # two emitters 5 px apart: each fit must not be pulled toward the other
    from napari_var_emitter.localize import refine as refine_module

    T = 100
    truth = np.tile(np.array([[[13.0, 16.0], [18.0, 16.0]]]), (T, 1, 1))
    frames = _movie(truth, photons=3000.0, background=10.0, seed=2)
    frame = np.repeat(np.arange(T), 2)
    xy = truth.reshape(-1, 2) + np.array([0.2, -0.2])
    out = _run(frames, frame, xy[:, 0], xy[:, 1], photons=3000.0, background=10.0)
    assert out["fitted"].all()
    dx = (out["x"] - truth.reshape(-1, 2)[:, 0]).reshape(T, 2).mean(0)
    # a fit blind to its neighbour is pulled ~0.2 px toward it (measured); here both starts are off by
    # 0.2 px the same way, and the background's shape, measured from them, keeps a part of that
    assert np.abs(dx).max() < 0.06  # (measured: 0.045)
    monkeypatch.setattr(refine_module, "BACKGROUND_SMOOTH_PX", 0.0)  # a flat background: none of it
    out = _run(frames, frame, xy[:, 0], xy[:, 1], photons=3000.0, background=10.0)
    dx = (out["x"] - truth.reshape(-1, 2)[:, 0]).reshape(T, 2).mean(0)
    assert np.abs(dx).max() < 0.02


def test_crowded_emitters_and_failed_fits_keep_the_networks_values():
    truth = np.array([[[14.0, 16.0], [16.5, 16.0], [25.0, 8.0]]])
    frames = _movie(truth, photons=2000.0, background=10.0, seed=3)
    x = np.array([14.0, 16.5, 25.0])
    y = np.array([16.0, 16.0, 8.0])
    default = _run(frames, np.zeros(3, int), x, y, uncertainty=1.0)
    assert default["fitted"].all()  # by default every emitter is fitted
    # with a network uncertainty far above the fits' bounds, the result is ~ share x 1 px: the pair
    # shares its light and keeps a larger share than the lone emitter (SHARE_ALONE)
    assert default["uncertainty"][2] < SHARE_ALONE + 0.1
    assert default["uncertainty"][:2].min() > SHARE_ALONE + 0.2
    out = _run(frames, np.zeros(3, int), x, y, min_separation=4.0)
    assert out["fitted"].tolist() == [False, False, True]  # 2.5 px apart: crowded
    np.testing.assert_array_equal(out["x"][:2], x[:2])
    np.testing.assert_array_equal(out["uncertainty"][:2], [0.3, 0.3])
    # a detection with no light under it: the fit is refused or stays within half a pixel
    empty = _run(np.zeros((1, 32, 32), np.float32) + 10, np.zeros(1, int), np.array([5.0]), np.array([5.0]))
    assert abs(empty["x"][0] - 5.0) <= 0.5


def test_the_fit_confirms_a_dim_spot_but_not_noise_or_a_neighbours_tail():
    # frame 0: a dim emitter (400 photons) alone; frame 1: nothing; frame 2: a bright emitter and a
    # candidate 2 px beside it, in its light
    rng = np.random.default_rng(4)
    frames = _movie(np.array([[[10.0, 10.0]]]), photons=400.0, background=20.0, seed=4)
    empty = rng.poisson(np.full((1, 32, 32), 20.0)).astype(np.float32)
    bright = _movie(np.array([[[20.0, 20.0]]]), photons=20000.0, background=20.0, seed=5)
    frames = np.concatenate([frames, empty, bright])
    frame = np.array([0, 1, 2, 2])
    x, y = np.array([10.2, 16.0, 20.0, 22.0]), np.array([9.9, 16.0, 20.0, 20.0])
    photons = np.array([400.0, 400.0, 20000.0, 400.0])
    fit = refine(frames, frame, x, y, photons, np.full(4, 20.0), np.full(4, 0.3), CAMERA, SIGMA)
    probability = np.array([0.2, 0.2, 0.99, 0.2])
    assert fit["photons_sd"][0] > 0 and fit["crowding"][0] < 0.05  # fitted, alone
    assert confirmed(probability, fit, threshold=0.5).tolist() == [True, False, True, False]
    # above the threshold the network decides alone; below the floor nothing is kept
    assert confirmed(np.full(4, 0.6), fit, threshold=0.5).all()
    assert not confirmed(np.full(4, CONFIRM_FLOOR / 2), fit, threshold=0.5).any()


def test_pending_are_the_candidates_a_second_frame_could_confirm():
    z = [3.0, 5.0, 3.0, 3.0, 3.0, 3.0, 2.5]  # photons / their bound
    fit = {
        "fitted": np.array([True, True, True, False, True, True, True]),
        "photons": 50.0 * np.array(z),
        "photons_sd": np.full(7, 50.0),
        "crowding": np.array([0.1, 0.1, 0.9, 0.1, 0.1, 0.1, 0.1]),
    }
    probability = np.array([0.3, 0.3, 0.3, 0.3, 0.9, CONFIRM_FLOOR / 2, 0.3])
    # between the two bounds | confirmed alone | crowded | not fitted | sure | not a candidate | weak
    expected = [True, False, False, False, False, False, False]
    assert pending(probability, fit, threshold=0.5).tolist() == expected
    assert CONFIRM_Z_TWO_FRAMES < 3.0 < CONFIRM_Z and 2.5 < CONFIRM_Z_TWO_FRAMES
    assert not (pending(probability, fit, 0.5) & confirmed(probability, fit, 0.5)).any()


def test_side_lobes_are_faint_detections_a_ring_away_from_a_bright_one():
    sigma = 1.25
    ring = 0.5 * (LOBE_RADII[0] + LOBE_RADII[1]) * sigma  # between the radii
    bright = 6000.0
    faint = 0.5 * LOBE_RATIO * bright
    rows = [  # frame, x, y, photons; the bright emitter first in frames 0 and 1
        (0, 20.0, 20.0, bright),
        (0, 20.0 + ring, 20.0, faint),  # its ring: a side lobe
        (0, 20.0, 20.0 - ring, faint),  # the same ring on another side: a side lobe
        (0, 20.0 - ring, 20.0, 2 * LOBE_RATIO * bright),  # not faint enough: kept
        (0, 20.0, 20.0 + 0.8 * LOBE_RADII[0] * sigma, faint),  # inside the inner radius: kept
        (0, 20.0 + 1.1 * LOBE_RADII[1] * sigma, 20.0 + 1.0, faint),  # beyond the ring: kept
        (1, 20.0 + ring, 20.0, faint),  # the same lobe in frame 1, its emitter absent: kept
    ]
    frame, x, y, photons = (torch.tensor(c) for c in zip(*rows, strict=True))
    lobe = side_lobes(frame, x, y, photons, sigma)
    assert lobe.tolist() == [False, True, True, False, False, False, False]
    none = side_lobes(*(torch.zeros(0) for _ in range(4)), sigma)
    assert none.dtype == torch.bool and len(none) == 0


def test_no_detections_and_tiny_frames():
    out = _run(np.zeros((1, 32, 32), np.float32), np.zeros(0, int), np.zeros(0), np.zeros(0))
    assert all(len(v) == 0 for v in out.values())
    tiny = _run(np.ones((1, 4, 4), np.float32), np.zeros(1, int), np.array([1.0]), np.array([2.0]))
    assert not tiny["fitted"][0] and tiny["x"][0] == 1.0


def test_neighbour_pairs_are_all_pairs_of_one_frame_within_the_radius():
    from napari_var_emitter.localize.neighbours import neighbour_pairs

    rng = np.random.default_rng(4)
    n = 400
    frame = rng.integers(0, 5, n)
    x, y = rng.uniform(-0.5, 60, n), rng.uniform(-0.5, 40, n)
    x[:20], y[:20] = 7.0, 7.0  # a pile-up in one cell
    for radius in (0.5, 3.0, 9.9):
        got = neighbour_pairs(torch.tensor(frame), torch.tensor(x), torch.tensor(y), radius).numpy()
        d = np.hypot(x[:, None] - x[None], y[:, None] - y[None])
        want = np.argwhere((frame[:, None] == frame[None]) & (d <= radius) & ~np.eye(n, dtype=bool))
        assert sorted(map(tuple, got)) == sorted(map(tuple, want))


def _dedupe_reference(frame, x, y, score, min_dist):
    """The numpy/scipy duplicate removal the torch one replaced (k-d tree pairs, i < j)."""
    from scipy.spatial import cKDTree

    span = max(float(np.ptp(y)), 1.0) + 10 * min_dist + 10.0
    pairs = cKDTree(np.column_stack([x, y + frame * span])).query_pairs(min_dist, output_type="ndarray")
    keep = np.ones(len(frame), dtype=bool)
    keep[np.where(score[pairs[:, 0]] >= score[pairs[:, 1]], pairs[:, 1], pairs[:, 0])] = False
    return np.nonzero(keep)[0]


def test_dedupe_keeps_the_higher_score_as_the_classical_one():
    from napari_var_emitter.localize.neighbours import dedupe, dedupe_indices

    rng = np.random.default_rng(5)
    n = 300
    frame = rng.integers(0, 3, n)
    x, y = rng.uniform(0, 20, n), rng.uniform(0, 20, n)
    score = rng.uniform(0, 1, n)
    keep = dedupe(*(torch.tensor(v) for v in (frame, x, y, score)), 0.7).numpy()
    np.testing.assert_array_equal(np.nonzero(keep)[0], _dedupe_reference(frame, x, y, score, 0.7))
    np.testing.assert_array_equal(dedupe_indices(frame, x, y, score, 0.7), np.nonzero(keep)[0])


def test_torch_model_of_a_box_is_the_classical_one():
    from napari_var_emitter.localize.psf_models import gaussian_model as torch_model

    rng = np.random.default_rng(6)
    theta = np.column_stack(
        [
            rng.uniform(0, 6, 50),
            rng.uniform(0, 6, 50),
            rng.uniform(100, 5000, 50),
            rng.uniform(1, 100, 50),
            rng.uniform(0.8, 2, 50),
        ]
    )
    mu_np, jac_np = gaussian_model(theta, np.arange(7, dtype=np.float64), with_jacobian=True)
    mu, jac = torch_model(torch.tensor(theta), 7, with_jacobian=True)
    np.testing.assert_allclose(mu.numpy(), mu_np, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(jac.numpy(), jac_np[:, :4], rtol=1e-12, atol=1e-9)


def test_tensors_in_tensors_out_on_their_device_with_the_numpy_numbers():
    rng = np.random.default_rng(7)
    truth = rng.uniform(8, 24, size=(20, 2, 2))
    frames = _movie(truth, photons=2000.0, background=15.0, seed=8)
    frame = np.repeat(np.arange(20), 2)
    xy = truth.reshape(-1, 2) + 0.2
    as_numpy = _run(frames, frame, xy[:, 0], xy[:, 1], background=15.0)
    n = len(frame)
    as_torch = refine(
        torch.from_numpy(frames),
        torch.from_numpy(frame),
        torch.tensor(xy[:, 0], dtype=torch.float32),
        torch.tensor(xy[:, 1], dtype=torch.float32),
        torch.full((n,), 2000.0),
        torch.full((n,), 15.0),
        torch.full((n,), 0.3),
        CAMERA,
        SIGMA,
    )
    assert all(isinstance(v, torch.Tensor) and v.device.type == "cpu" for v in as_torch.values())
    assert as_torch["fitted"].all()
    for key, value in as_numpy.items():
        np.testing.assert_allclose(as_torch[key].numpy(), value, rtol=1e-6, atol=1e-6)


def test_a_structured_background_does_not_pull_the_fit_toward_it(monkeypatch):
    """An emitter on the flank of out-of-focus light: a flat-background fit moves it uphill; the fit
    with the background's shape taken from the frame (less the emitters, smoothed) does not."""
    from napari_var_emitter.localize import refine as refine_module

    rng = np.random.default_rng(4)
    T, size = 200, 32
    truth = 16.0 + rng.uniform(-0.5, 0.5, size=(T, 1, 2))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    blob = 30.0 * np.exp(-((xx - 19.0) ** 2 + (yy - 16.0) ** 2) / (2 * 4.0**2))  # 3 px to the right
    clean = _movie(truth, photons=1000.0, background=0.0, seed=5)  # the emitters, Poisson
    frames = (clean + rng.poisson(20.0 + blob, size=(T, size, size))).astype(np.float32)
    start = truth[:, 0] + rng.normal(0.0, 0.15, size=(T, 2))  # the network's positions
    bias = {}
    for smooth in (0.0, refine_module.BACKGROUND_SMOOTH_PX):
        monkeypatch.setattr(refine_module, "BACKGROUND_SMOOTH_PX", smooth)
        out = _run(frames, np.arange(T), start[:, 0], start[:, 1], photons=1000.0, background=30.0)
        fitted = out["fitted"]
        assert fitted.mean() > 0.9
        bias[smooth] = float(np.mean(out["x"][fitted] - truth[fitted, 0, 0]))
    flat, shaped = bias[0.0], bias[refine_module.BACKGROUND_SMOOTH_PX]
    assert flat > 0.15  # px toward the light (measured: 0.24)
    assert abs(shaped) < 0.4 * flat  # (measured: 0.07)
