"""Maximum-likelihood refinement of the model's localizations, neighbours included.

The network finds the emitters and gives each a position, photons and background; this step
then fits every emitter to the pixels around it by Poisson maximum likelihood (the same
integrated-Gaussian model, EMCCD correction and Levenberg-Marquardt as ``classical.fit_spots``),
with the light of its detected neighbours in the model as a fixed term. Two rounds (a block
Jacobi iteration of the joint fit of all emitters) let neighbours settle together. Fits that fail,
move more than ``max_shift`` from the network's position or end with no photons keep the network's
values; so do emitters with a neighbour closer than ``min_separation`` (0 by default: on the
validation seeds, fitting every emitter with its neighbours in the model gave the best efficiency
and the flattest sub-pixel histogram at both densities; see training/RESULTS.md).

Why: a fit reaches the Cramer-Rao bound on isolated emitters and has no pixel-grid bias, while the
network's offsets are pulled toward pixel centres at low photon counts. The network supplies what a
fit cannot: detections in dense regions and the starting values that keep overlapping fits apart.
All work is vectorised over the emitters of a chunk (no loop per emitter or per frame).
"""

from __future__ import annotations

import numpy as np

from .camera import Camera
from .classical import gaussian_model

BOX = 7
ROUNDS = 2
N_ITER = 5  # Levenberg-Marquardt steps per round: from the network's start, 4 already converge
MAX_SHIFT = 0.5  # px
# Share of the network's uncertainty added in quadrature to a fit's: from SHARE_ALONE for an emitter
# alone in its box to SHARE_CROWDED where all the box's light is its neighbours' (see refine).
SHARE_ALONE, SHARE_CROWDED = 0.6, 3.0
MIN_SEPARATION = 0.0  # px: pairs closer than this keep the network's values (0: fit every emitter)


def _neighbour_pairs(frame, x, y, reach: float) -> np.ndarray:
    """(P, 2) ordered pairs (i, j), i != j, same frame, |dx| and |dy| under ``reach``."""
    if len(x) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    from scipy.spatial import cKDTree

    span = float(np.ptp(y)) + 4 * reach + 10.0  # frames far apart on the y axis
    pts = np.column_stack([x, y + frame * span])
    pairs = cKDTree(pts).query_pairs(reach * np.sqrt(2.0), output_type="ndarray")
    if len(pairs) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    return np.concatenate([pairs, pairs[:, ::-1]]).astype(np.int64)


def _neighbour_light(pairs, n_boxes, x, y, n, ox, oy, sigma, box) -> np.ndarray:
    """(n_boxes, box, box): expected photons of the neighbours on each box (pairs: box, emitter)."""
    out = np.zeros((n_boxes, box, box))
    if len(pairs) == 0:
        return out
    i, j = pairs[:, 0], pairs[:, 1]
    theta = np.stack([x[j] - ox[i], y[j] - oy[i], n[j], np.zeros(len(i)), np.full(len(i), sigma)], axis=1)
    light, _ = gaussian_model(theta, np.arange(box, dtype=np.float64), with_jacobian=False)
    np.add.at(out, i, light)
    return out


def _fit(spots, others, theta, scale, offset, n_iter):
    """LM fit of (x, y, photons, background) per box, sigma fixed, ``others`` a fixed addend.

    Returns theta (N, 5), the Fisher information (N, 4, 4) at the end, and a converged flag.
    """
    N, B, _ = spots.shape
    grid = np.arange(B, dtype=np.float64)
    counts = np.maximum(spots * scale + offset, 0.0).reshape(N, -1)
    lo = np.array([-1.0, -1.0, 1e-3, 1e-6])
    hi = np.array([B, B, np.inf, np.inf])
    eye = np.eye(4)

    def evaluate(th):
        mu, jac = gaussian_model(th, grid, with_jacobian=True)
        mu_c = ((mu + others) * scale + offset).reshape(N, -1)
        with np.errstate(all="ignore"):
            ll = (counts * np.log(mu_c) - mu_c).sum(axis=1)
        return mu_c, jac[:, :4].reshape(N, 4, -1) * scale, ll

    mu_c, j, ll = evaluate(theta)
    lam = np.full(N, 1e-3)
    for _ in range(n_iter):
        w = 1.0 / mu_c
        grad = np.einsum("npk,nk->np", j, counts * w - 1.0)
        fisher = np.einsum("npk,nqk->npq", j * w[:, None, :], j)
        diag = np.einsum("npp->np", fisher)
        damped = fisher + (lam[:, None] * diag)[:, :, None] * eye + 1e-12 * eye
        with np.errstate(all="ignore"):
            step = np.linalg.solve(damped, grad[:, :, None])[:, :, 0]
        trial = theta.copy()
        trial[:, :4] = np.clip(theta[:, :4] + step, lo, hi)
        with np.errstate(all="ignore"):
            mu_t, j_t, ll_t = evaluate(trial)
        better = (ll_t > ll) & np.isfinite(ll_t)
        theta[better], mu_c[better], j[better], ll[better] = (
            trial[better],
            mu_t[better],
            j_t[better],
            ll_t[better],
        )
        lam = np.clip(np.where(better, lam * 0.1, lam * 10.0), 1e-7, 1e7)
    fisher = np.einsum("npk,nqk->npq", j / mu_c[:, None, :], j)
    with np.errstate(all="ignore"):  # Poisson deviance per degree of freedom: ~1 for a good fit
        dev = 2 * np.where(counts > 0, counts * np.log(counts / mu_c), 0.0) - 2 * (counts - mu_c)
    reduced = dev.sum(axis=1) / (B * B - 4)
    return theta, fisher, np.isfinite(ll), reduced


def refine(
    photons_THW: np.ndarray,
    frame: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    photons: np.ndarray,
    background: np.ndarray,
    uncertainty: np.ndarray,
    camera: Camera,
    psf_sigma_px: float,
    *,
    box: int = BOX,
    rounds: int = ROUNDS,
    n_iter: int = N_ITER,
    max_shift: float = MAX_SHIFT,
    min_separation: float = MIN_SEPARATION,
) -> dict[str, np.ndarray]:
    """Refine localizations of ``photons_THW`` (incident photons; ``frame`` indexes its first axis).

    Positions and ``uncertainty`` (the network's calibrated 1-sigma) in pixels, pixel centre =
    integer. Returns x, y, photons, background, uncertainty and ``fitted`` (False where the
    network's values were kept). A fit's uncertainty is its Cramer-Rao bound, inflated by the
    fit's reduced deviance where that exceeds 1 (light the model does not explain), combined in
    quadrature with a share of the network's that grows with the neighbours' part of the box's
    light (``SHARE_ALONE`` to ``SHARE_CROWDED``): the bound alone is over-confident where neighbours
    crowd in or went undetected (measured on the validation seeds, see training/RESULTS.md).
    """
    frame = np.asarray(frame, dtype=np.int64)
    x0, y0 = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n0 = np.maximum(np.asarray(photons, np.float64), 1.0)
    b0 = np.maximum(np.asarray(background, np.float64), 1e-3)
    N = len(x0)
    _, H, W = photons_THW.shape
    u0 = np.asarray(uncertainty, np.float64)
    result = {"x": x0.copy(), "y": y0.copy(), "photons": n0.copy(), "background": b0.copy()}
    result["uncertainty"] = u0.copy()
    result["fitted"] = np.zeros(N, dtype=bool)
    if N == 0 or H < box or W < box:
        return result

    pairs = _neighbour_pairs(frame, x0, y0, reach=box)
    crowded = np.zeros(N, dtype=bool)
    if len(pairs):
        d = np.hypot(x0[pairs[:, 0]] - x0[pairs[:, 1]], y0[pairs[:, 0]] - y0[pairs[:, 1]])
        crowded[pairs[:, 0][d < min_separation]] = True
    fit = np.nonzero(~crowded)[0]  # the emitters fitted; the crowded ones only lend their light
    if len(fit) == 0:
        return result
    local = np.full(N, -1)
    local[fit] = np.arange(len(fit))
    pairs = pairs[local[pairs[:, 0]] >= 0]
    pairs_local = np.column_stack([local[pairs[:, 0]], pairs[:, 1]])  # box index, neighbour index

    r = box // 2
    ox = np.clip(np.round(x0[fit]).astype(np.int64) - r, 0, W - box)
    oy = np.clip(np.round(y0[fit]).astype(np.int64) - r, 0, H - box)
    ar = np.arange(box)
    spots = photons_THW[
        frame[fit][:, None, None], oy[:, None, None] + ar[None, :, None], ox[:, None, None] + ar
    ].astype(np.float64)
    scale = camera.qe / camera.excess_noise
    read_var = (camera.read_noise_e / (camera.em_gain * camera.qe)) ** 2
    offset = read_var * scale**2

    start = np.stack([x0[fit] - ox, y0[fit] - oy, n0[fit], b0[fit], np.full(len(fit), psf_sigma_px)], axis=1)
    theta = start.copy()
    fisher = np.zeros((len(fit), 4, 4))
    finite, reduced = np.zeros(len(fit), dtype=bool), np.ones(len(fit))
    x, y, n = x0.copy(), y0.copy(), n0.copy()
    with_neighbours = np.zeros(len(fit), dtype=bool)
    with_neighbours[pairs_local[:, 0]] = True
    active = np.ones(len(fit), dtype=bool)  # later rounds refit only boxes whose neighbours moved
    for _ in range(rounds):
        a = np.nonzero(active)[0]
        if len(a) == 0:
            break
        others_all = _neighbour_light(pairs_local, len(fit), x, y, n, ox, oy, psf_sigma_px, box)
        others = others_all[a]
        theta[a], fisher[a], finite[a], reduced[a] = _fit(spots[a], others, theta[a], scale, offset, n_iter)
        xf, yf = theta[:, 0] + ox, theta[:, 1] + oy
        ok = finite & np.isfinite(theta).all(axis=1) & (theta[:, 2] > 1.0)
        ok &= (np.abs(xf - x0[fit]) <= max_shift) & (np.abs(yf - y0[fit]) <= max_shift)
        x[fit], y[fit], n[fit] = (
            np.where(ok, xf, x0[fit]),
            np.where(ok, yf, y0[fit]),
            np.where(ok, theta[:, 2], n0[fit]),
        )
        theta[~ok] = start[~ok]
        active = with_neighbours

    with np.errstate(all="ignore"):
        cov = np.linalg.pinv(fisher)
    crlb = np.sqrt(np.clip((cov[:, 0, 0] + cov[:, 1, 1]) / 2, 0, None))
    ok &= np.isfinite(crlb) & (crlb > 0)
    done = fit[ok]
    result["x"][done], result["y"][done] = x[done], y[done]
    result["photons"][done], result["background"][done] = theta[ok, 2], theta[ok, 3]
    light = others_all.sum(axis=(1, 2))
    crowding = light / (light + np.maximum(theta[:, 2], 1.0))  # neighbours' share of the box's signal
    share = SHARE_ALONE + (SHARE_CROWDED - SHARE_ALONE) * crowding
    fit_sigma = np.sqrt(crlb**2 * np.maximum(reduced, 1.0) + (share * u0[fit]) ** 2)
    result["uncertainty"][done] = fit_sigma[ok]
    result["fitted"][done] = True
    return result
