"""classical.localize: exact recovery without noise, and its accuracy on a seeded simulation."""

import math

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.special import erf

from napari_var_emitter.camera import Camera
from napari_var_emitter.errors import InputError
from napari_var_emitter.localize.classical import fit_spots, localize
from napari_var_emitter.simulation import SimulationConfig, simulate_movie


def _render(shape, emitters, sigma, background):
    """Reference renderer (numpy, scipy erf): integrated Gaussians + flat background, photons."""
    H, W = shape
    img = np.full((H, W), float(background))
    gx, gy = np.arange(W), np.arange(H)
    s2 = math.sqrt(2) * sigma
    for x, y, n in emitters:
        ex = 0.5 * (erf((gx - x + 0.5) / s2) - erf((gx - x - 0.5) / s2))
        ey = 0.5 * (erf((gy - y + 0.5) / s2) - erf((gy - y - 0.5) / s2))
        img += n * np.outer(ey, ex)
    return img


def test_noise_free_exact_recovery():
    camera = Camera()
    emitters = [(10.3, 12.7, 3000.0), (30.0, 20.0, 1500.0), (21.55, 33.45, 5000.0), (0.2, 38.6, 2500.0)]
    expected = _render((40, 41), emitters, 1.3, 60.0)
    frames = camera.photons_to_adu(expected)[None]
    locs = localize(frames, camera, psf_sigma_px=1.2).sorted()
    assert len(locs) == len(emitters)
    order = np.lexsort(([e[0] for e in emitters], [e[1] for e in emitters]))
    truth = np.asarray(emitters)[order]
    np.testing.assert_allclose(locs.x, truth[:, 0], atol=2e-3)
    np.testing.assert_allclose(locs.y, truth[:, 1], atol=2e-3)
    np.testing.assert_allclose(locs.photons, truth[:, 2], rtol=2e-3)
    np.testing.assert_allclose(locs.sigma, 1.3, atol=2e-3)
    np.testing.assert_allclose(locs.background, 60.0, rtol=5e-3)
    assert np.all(locs.frame == 0) and np.all(locs.grid_factor == 0)
    assert np.all((locs.probability > 0) & (locs.probability <= 1))


def test_fit_spots_batch_matches_one_by_one():
    rng = np.random.default_rng(3)
    boxes, truths = [], []
    for _ in range(6):
        x, y = rng.uniform(2.5, 4.5, 2)
        boxes.append(_render((7, 7), [(x, y, 2000.0)], 1.1, 30.0))
        truths.append((x, y))
    spots = np.stack(boxes)
    theta, _ = fit_spots(spots, 1.2)
    for i in range(len(boxes)):
        single, _ = fit_spots(spots[i : i + 1], 1.2)
        np.testing.assert_allclose(single[0], theta[i], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(theta[:, :2], np.array(truths), atol=1e-3)


@pytest.fixture(scope="module")
def sparse_movie():
    config = SimulationConfig(density_per_um2=0.3, photons=(1000.0, 8000.0), background_photons=(50.0, 100.0))
    return simulate_movie(config, 60, seed=2024)


def _match(locs, truth, radius_px):
    """Per frame Hungarian matching within radius: indices (truth, pred)."""
    ti, pi = [], []
    for t in np.unique(truth.frame):
        tr, pr = np.nonzero(truth.frame == t)[0], np.nonzero(locs.frame == t)[0]
        if len(pr) == 0:
            continue
        d = np.hypot(truth.x[tr, None] - locs.x[None, pr], truth.y[tr, None] - locs.y[None, pr])
        r, c = linear_sum_assignment(np.where(d <= radius_px, d, 1e9))
        ok = d[r, c] <= radius_px
        ti.append(tr[r[ok]])
        pi.append(pr[c[ok]])
    return np.concatenate(ti), np.concatenate(pi)


def test_sparse_accuracy(sparse_movie):
    movie = sparse_movie
    camera = movie.config.camera
    px = camera.pixel_size_nm
    truth = movie.truth
    locs = localize(movie.frames.numpy(), camera, psf_sigma_px=120.0 / px)
    ti, pi = _match(locs, truth, 2.5)
    bright = truth.photons > 1000
    assert len(ti) / len(truth) > 0.8
    assert np.isin(np.nonzero(bright)[0], ti).mean() > 0.9  # recall of the bright ones
    assert len(pi) / len(locs) > 0.95  # precision

    # Isolated (no other emitter within 1 um in the frame), bright matched emitters.
    iso = np.array(
        [
            np.sum(
                (truth.frame == truth.frame[i]) & (np.hypot(truth.x - truth.x[i], truth.y - truth.y[i]) < 10)
            )
            == 1
            for i in ti
        ]
    )
    sel = iso & bright[ti]
    assert sel.sum() > 150
    t, p = ti[sel], pi[sel]
    dx, dy = (locs.x[p] - truth.x[t]) * px, (locs.y[p] - truth.y[t]) * px
    # docs/CONVENTIONS.md, section 4 bound per axis, detected photons (qe), F = 2 (EMCCD).
    s, n, b = truth.sigma[t] * px, camera.qe * truth.photons[t], camera.qe * truth.background[t]
    sa2 = s**2 + px**2 / 12
    var = 2.0 * sa2 / n * (16 / 9 + 8 * np.pi * sa2 * b / (n * px**2))
    ratio = math.sqrt(np.mean(dx**2 + dy**2) / np.mean(2 * var))
    assert ratio < 1.3, ratio
    assert abs(dx.mean()) < 2.0 and abs(dy.mean()) < 2.0, (dx.mean(), dy.mean())
    # The reported uncertainty is calibrated to within 30 %.
    rel = math.sqrt(np.mean(dx**2 + dy**2) / np.mean(2 * (locs.uncertainty[p] * px) ** 2))
    assert 0.7 < rel < 1.3, rel


def test_empty_and_progress():
    frames = np.full((3, 32, 32), 100.0, dtype=np.float32)
    calls = []
    locs = localize(frames, Camera(), progress=lambda done, total: calls.append((done, total)))
    assert len(locs) == 0
    assert calls[-1] == (3, 3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"box": 6}, "odd"),
        ({"box": 41}, "does not fit"),
        ({"threshold": 0}, "threshold"),
        ({"psf_sigma_px": float("nan")}, "psf_sigma_px"),
    ],
)
def test_bad_parameters(kwargs, message):
    with pytest.raises(InputError, match=message):
        localize(np.zeros((1, 32, 32)), Camera(), **kwargs)
