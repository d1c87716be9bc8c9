"""Maximum-likelihood refinement of the model's localizations, neighbours included.

The network finds the emitters and gives each a position, photons and background; this step
then fits every emitter to the pixels around it by Poisson maximum likelihood (the same
integrated-Gaussian model, EMCCD correction and Levenberg-Marquardt as ``classical.fit_spots``,
or a PSF measured from beads: :mod:`.psf_models`),
with the light of its detected neighbours in the model as a fixed term. Two rounds (a block
Jacobi iteration of the joint fit of all emitters) let neighbours settle together. The background
is a level fitted per box times a shape measured from the frame: the frame less every detection's
light, smoothed over a few pixels, measured again from the first round's fits for the second. Out-
of-focus light or uneven illumination that slopes across a box then no longer pulls the emitter
uphill. Fits that fail,
move more than ``max_shift`` from the network's position or end with no photons keep the network's
values; so do emitters with a neighbour closer than ``min_separation`` (0 by default: on the
validation seeds, fitting every emitter with its neighbours in the model gave the best efficiency
and the flattest sub-pixel histogram at both densities; see training/DESIGN-CHOICES.md).

Why: a fit reaches the Cramer-Rao bound on isolated emitters and has no pixel-grid bias, while the
network's offsets are pulled toward pixel centres at low photon counts. The network supplies what a
fit cannot: detections in dense regions and the starting values that keep overlapping fits apart.

torch, on the device of the frames it is given (the model's: post-processing never leaves the
GPU), in float64 (float32 where the device has no float64, Apple MPS). All work is vectorised over
the emitters of a chunk: no loop per emitter or per frame, neighbour search included
(:mod:`.neighbours`).
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from ..camera import Camera
from ..measured_psf import MeasuredPsf
from .neighbours import neighbour_pairs
from .psf_models import model_for

BOX = 7
ROUNDS = 2
# Levenberg-Marquardt steps per round: the network's start is close, so 3 converge. Validation
# seeds (benchmark.py --validation --frames 200): 3 and 2 steps gave E within 0.1 of 5 on every set,
# with the same RMSE/CRLB, calibration and grid bias, for a quarter less refinement time; one round
# of 4 steps lost 0.6-0.7 E on the dense sets (training/DESIGN-CHOICES.md)
N_ITER = 3
MAX_SHIFT = 0.5  # px
# Share of the network's uncertainty added in quadrature to a fit's: from SHARE_ALONE for an emitter
# alone in its box to SHARE_CROWDED where all the box's light is its neighbours' (see refine). Chosen
# on the validation seeds (benchmark.py's four sets, seeds 5,011-5,014, 500 frames) for the smallest
# worst-set deviation of the calibration ratio from 1, over both bundled models as predict runs them
# (the 3-frame one with pooling.py): (0.4, 8.0) gave 0.98 / 1.11 / 0.95 / 1.16 and 0.95 / 1.01 /
# 0.88 / 1.00 (3-frame, then one-frame; LD-high / LD-low / HD-high / HD-low); (0.5, 6.5), tied on the
# worst set, deviates more on average; (0.5, 4.0), best without pooling, gives the pooled 3-frame
# model 1.25 on HD-low.
SHARE_ALONE, SHARE_CROWDED = 0.4, 8.0
# The background in a box is a level the fit finds times a shape measured from the frame: the frame
# less every detection's light, blurred with a Gaussian of BACKGROUND_SMOOTH_PX pixels
# (``_smooth_background``), measured at the network's values for the first round and at the first
# round's fits for the second, which then fits every box (0: a flat background, the second round only
# for boxes with neighbours). Chosen on the validation seeds (benchmark.py's eight synthetic sets, 200
# frames, 1.0 / 1.5 / 2.0 px); see training/DESIGN-CHOICES.md, "The background's shape in the fit".
BACKGROUND_SMOOTH_PX = 1.5
MIN_SEPARATION = 0.0  # px: pairs closer than this keep the network's values (0: fit every emitter)
# Fit confirmation (see ``confirmed``): candidates from CONFIRM_FLOOR up to the detection threshold
# are kept when the fit finds their photons at CONFIRM_Z times their Cramer-Rao bound or more, with
# less than CONFIRM_CROWDING of their box's light from neighbours. Chosen on the validation seeds
# (benchmark.py --validation, 200 frames) on a broad plateau of the four sets' mean efficiency;
# see training/DESIGN-CHOICES.md.
CONFIRM_FLOOR = 0.1
CONFIRM_Z = 4.0
CONFIRM_CROWDING = 0.7
# In a movie, a candidate whose fit reaches CONFIRM_Z / sqrt(2) is kept when the same spot is found in
# an adjacent frame (see ``pending``): two such fits of equal photons reach CONFIRM_Z together.
CONFIRM_Z_TWO_FRAMES = CONFIRM_Z / math.sqrt(2)
# Side lobes (see ``side_lobes``): a detection with under LOBE_RATIO of the photons of a detection
# LOBE_RADII PSF widths away is that neighbour's ring or halo. Chosen on the validation seeds
# (benchmark.py --validation, every synthetic set), for the bundled models: it gains on the pupil
# sets and costs the others nothing beyond noise; see training/DESIGN-CHOICES.md.
LOBE_RATIO = 0.05
LOBE_RADII = (1.2, 4.8)
OUTPUTS = ("x", "y", "photons", "background", "uncertainty", "photons_sd", "crowding", "fitted")


# --------------------------------------------------------------------------------------------------
# 1. the model of a box and its fit


def _neighbour_light(pairs, n_boxes, x, y, n, ox, oy, sigma, box, model) -> torch.Tensor:
    """(n_boxes, box, box): expected photons of the neighbours on each box (pairs: box, emitter)."""
    out = torch.zeros((n_boxes, box, box), dtype=x.dtype, device=x.device)
    if len(pairs) == 0:
        return out
    i, j = pairs[:, 0], pairs[:, 1]
    zeros = torch.zeros_like(n[j])
    theta = torch.stack([x[j] - ox[i], y[j] - oy[i], n[j], zeros, zeros + sigma], dim=1)
    light, _ = model(theta, box, with_jacobian=False)
    return out.index_add_(0, i, light)


def _fit(spots, others, theta, scale, offset, n_iter, model):
    """LM fit of (x, y, photons, background) per box with the PSF ``model`` (:mod:`.psf_models`),
    sigma fixed, ``others`` a fixed addend.

    Returns theta (N, 5), the Fisher information (N, 4, 4) at the end, a finite flag and the
    reduced Poisson deviance (~1 for a good fit).
    """
    N, B, _ = spots.shape
    counts = (spots * scale + offset).clamp_min(0.0).reshape(N, -1)
    lo = torch.tensor([-1.0, -1.0, 1e-3, 1e-6], dtype=theta.dtype, device=theta.device)
    hi = torch.tensor([B, B, math.inf, math.inf], dtype=theta.dtype, device=theta.device)
    eye = torch.eye(4, dtype=theta.dtype, device=theta.device)

    def evaluate(th):
        mu, jac = model(th, B, with_jacobian=True)
        mu_c = ((mu + others).clamp_min(1e-6) * scale + offset).reshape(N, -1)
        ll = (counts * torch.log(mu_c) - mu_c).sum(dim=1)
        return mu_c, jac.reshape(N, 4, -1) * scale, ll

    mu_c, j, ll = evaluate(theta)
    lam = torch.full((N,), 1e-3, dtype=theta.dtype, device=theta.device)
    for _ in range(n_iter):
        w = 1.0 / mu_c
        grad = torch.einsum("npk,nk->np", j, counts * w - 1.0)
        fisher = torch.einsum("npk,nqk->npq", j * w[:, None, :], j)
        diag = torch.diagonal(fisher, dim1=1, dim2=2)
        damped = fisher + (lam[:, None] * diag)[:, :, None] * eye + 1e-12 * eye
        step = torch.linalg.solve_ex(damped, grad[:, :, None])[0][:, :, 0]
        trial = theta.clone()
        trial[:, :4] = torch.minimum(torch.maximum(theta[:, :4] + step, lo), hi)
        mu_t, j_t, ll_t = evaluate(trial)
        better = (ll_t > ll) & torch.isfinite(ll_t)
        theta = torch.where(better[:, None], trial, theta)
        mu_c = torch.where(better[:, None], mu_t, mu_c)
        j = torch.where(better[:, None, None], j_t, j)
        ll = torch.where(better, ll_t, ll)
        lam = torch.where(better, lam * 0.1, lam * 10.0).clamp(1e-7, 1e7)
    fisher = torch.einsum("npk,nqk->npq", j / mu_c[:, None, :], j)
    dev = 2 * torch.where(counts > 0, counts * torch.log(counts / mu_c), 0.0) - 2 * (counts - mu_c)
    reduced = dev.sum(dim=1) / (B * B - 4)
    return theta, fisher, torch.isfinite(ll), reduced


def _box_origins(x, y, box: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-left pixel of each emitter's (box, box) box: centred on its pixel, kept in the frame."""
    r = box // 2
    ox = (torch.round(x).long() - r).clamp(0, width - box)
    oy = (torch.round(y).long() - r).clamp(0, height - box)
    return ox, oy


def _smooth_background(frames, frame, x, y, n, sigma, box, model, smooth_px) -> torch.Tensor:
    """(T, H, W), float32: the background with its structure on the scale of a few pixels, without
    the emitters' peaks: the frames' photons less every detection's light (its PSF model on a box
    around it, at the positions and photons given), blurred with a Gaussian of ``smooth_px``."""
    T, H, W = frames.shape
    ox, oy = _box_origins(x, y, box, H, W)
    zeros = torch.zeros_like(x)
    light, _ = model(torch.stack([x - ox, y - oy, n, zeros, zeros + sigma], dim=1), box, with_jacobian=False)
    ar = torch.arange(box, device=x.device)
    index = (frame[:, None, None] * H + oy[:, None, None] + ar[None, :, None]) * W + ox[:, None, None] + ar
    rendered = torch.zeros(T * H * W, dtype=torch.float32, device=x.device)
    rendered.index_add_(0, index.flatten(), light.flatten().float())
    residual = frames.float() - rendered.view(T, H, W)
    return _gaussian_blur(residual, smooth_px)


def _gaussian_blur(images, smooth_px: float) -> torch.Tensor:
    """(T, H, W) blurred along both axes with a Gaussian of ``smooth_px``, edges replicated: a sum
    of shifted copies per axis, linear in the pixels (a one-channel convolution on one CPU thread is
    several times slower; a blur matrix grows with the frame's side)."""
    half = math.ceil(3 * smooth_px)
    taps = [math.exp(-0.5 * (k / smooth_px) ** 2) for k in range(-half, half + 1)]
    taps = [w / sum(taps) for w in taps]
    _, H, W = images.shape
    padded = torch.nn.functional.pad(images[:, None], (half, half, half, half), mode="replicate")[:, 0]
    rows = sum(w * padded[:, :, k : k + W] for k, w in enumerate(taps))
    return sum(w * rows[:, k : k + H, :] for k, w in enumerate(taps))


# --------------------------------------------------------------------------------------------------
# 2. refine


def _float_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device):
    """On the CPU, run in the calling thread only: the fit is many small operations, which torch's
    intra-op threads slow down 10-50x on a loaded CPU (measured here: 64 frames, 666 emitters, 2
    threads beside a training run: 0.3-1.4 s; 1 thread: 21 ms, as fast as numpy)."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def refine(
    photons_THW,
    frame,
    x,
    y,
    photons,
    background,
    uncertainty,
    camera: Camera,
    psf_sigma_px: float,
    *,
    box: int = BOX,
    rounds: int = ROUNDS,
    n_iter: int = N_ITER,
    max_shift: float = MAX_SHIFT,
    min_separation: float = MIN_SEPARATION,
    psf: MeasuredPsf | None = None,
) -> dict:
    """Refine localizations of ``photons_THW`` (incident photons; ``frame`` indexes its first axis).

    Positions and ``uncertainty`` (the network's calibrated 1-sigma) in pixels, pixel centre =
    integer. ``psf``, a PSF measured from beads, replaces the Gaussian of width ``psf_sigma_px``
    in the model (:mod:`.psf_models`). Returns x, y, photons, background, uncertainty,
    ``photons_sd`` (the fit's Cramer-Rao bound of the photons), ``crowding`` (the neighbours' share
    of the light in the box; both NaN where not fitted) and ``fitted`` (False where the network's
    values were kept): torch tensors on the frames' device if ``photons_THW`` is a tensor, numpy
    arrays otherwise.

    A fit's uncertainty is its Cramer-Rao bound, inflated by the fit's reduced deviance where that
    exceeds 1 (light the model does not explain), combined in quadrature with a share of the
    network's that grows with the neighbours' part of the box's light (``SHARE_ALONE`` to
    ``SHARE_CROWDED``): the bound alone is over-confident where neighbours crowd in or went
    undetected (measured on the validation seeds, see training/DESIGN-CHOICES.md).
    """
    as_numpy = not isinstance(photons_THW, torch.Tensor)
    frames = torch.as_tensor(np.asarray(photons_THW) if as_numpy else photons_THW)
    device = frames.device
    dtype = _float_dtype(device)

    def tensor(v, dt=dtype):
        return torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v).to(device, dt)

    frame = tensor(frame, torch.int64)
    x0, y0 = tensor(x), tensor(y)
    n0, b0 = tensor(photons).clamp_min(1.0), tensor(background).clamp_min(1e-3)
    u0 = tensor(uncertainty)
    with _one_cpu_thread(device):
        result = _refine(
            frames,
            frame,
            x0,
            y0,
            n0,
            b0,
            u0,
            camera,
            psf_sigma_px,
            box,
            rounds,
            n_iter,
            max_shift,
            min_separation,
            model_for(psf, device, dtype),
        )
    if as_numpy:
        return {k: v.cpu().numpy() for k, v in result.items()}
    return result


def _refine(
    frames, frame, x0, y0, n0, b0, u0, camera, sigma, box, rounds, n_iter, max_shift, min_separation, model
):
    N = len(x0)
    _, H, W = frames.shape
    result = {"x": x0.clone(), "y": y0.clone(), "photons": n0.clone(), "background": b0.clone()}
    result["uncertainty"] = u0.clone()
    result["position_sd"] = torch.full_like(x0, math.nan)  # the fit's own part of the uncertainty
    result["photons_sd"] = torch.full_like(x0, math.nan)  # the fit's Cramer-Rao bound of the photons
    result["crowding"] = torch.full_like(x0, math.nan)  # the neighbours' share of the light in the box
    result["fitted"] = torch.zeros(N, dtype=torch.bool, device=x0.device)
    if N == 0 or H < box or W < box:
        return result

    pairs = neighbour_pairs(frame, x0, y0, radius=box * math.sqrt(2.0))  # covers the box
    crowded = torch.zeros(N, dtype=torch.bool, device=x0.device)
    if len(pairs) and min_separation > 0:
        d = torch.hypot(x0[pairs[:, 0]] - x0[pairs[:, 1]], y0[pairs[:, 0]] - y0[pairs[:, 1]])
        crowded[pairs[:, 0][d < min_separation]] = True
    fit = torch.nonzero(~crowded)[:, 0]  # the emitters fitted; the crowded ones only lend their light
    if len(fit) == 0:
        return result
    local = torch.full((N,), -1, dtype=torch.int64, device=x0.device)
    local[fit] = torch.arange(len(fit), device=x0.device)
    pairs = pairs[local[pairs[:, 0]] >= 0]
    pairs_local = torch.stack([local[pairs[:, 0]], pairs[:, 1]], dim=1)  # box index, neighbour index

    ox, oy = _box_origins(x0[fit], y0[fit], box, H, W)
    ar = torch.arange(box, device=x0.device)
    box_pixels = (frame[fit][:, None, None], oy[:, None, None] + ar[None, :, None], ox[:, None, None] + ar)
    spots = frames[box_pixels].to(x0.dtype)

    def background_shape(x, y, n):  # the background's shape in each box (zero mean)
        if BACKGROUND_SMOOTH_PX <= 0:
            return torch.zeros_like(spots)
        shape = _smooth_background(frames, frame, x, y, n, sigma, box, model, BACKGROUND_SMOOTH_PX)
        shape = shape[box_pixels].to(x0.dtype)
        return shape - shape.mean(dim=(1, 2), keepdim=True)

    tilt = background_shape(x0, y0, n0)
    scale = camera.qe / camera.excess_noise
    read_var = (camera.read_noise_e / (camera.em_gain * camera.qe)) ** 2
    offset = read_var * scale**2
    ox, oy = ox.to(x0.dtype), oy.to(x0.dtype)

    start = torch.stack([x0[fit] - ox, y0[fit] - oy, n0[fit], b0[fit], torch.full_like(ox, sigma)], dim=1)
    theta = start.clone()
    M = len(fit)
    fisher = torch.zeros((M, 4, 4), dtype=x0.dtype, device=x0.device)
    finite = torch.zeros(M, dtype=torch.bool, device=x0.device)
    reduced = torch.ones(M, dtype=x0.dtype, device=x0.device)
    x, y, n = x0.clone(), y0.clone(), n0.clone()
    with_neighbours = torch.zeros(M, dtype=torch.bool, device=x0.device)
    with_neighbours[pairs_local[:, 0]] = True
    active = torch.ones(M, dtype=torch.bool, device=x0.device)  # later rounds: boxes with neighbours
    ok = torch.zeros(M, dtype=torch.bool, device=x0.device)
    for round_ in range(rounds):
        a = torch.nonzero(active)[:, 0]
        if len(a) == 0:
            break
        others_all = _neighbour_light(pairs_local, M, x, y, n, ox, oy, sigma, box, model)
        theta[a], fisher[a], finite[a], reduced[a] = _fit(
            spots[a], others_all[a] + tilt[a], theta[a], scale, offset, n_iter, model
        )
        xf, yf = theta[:, 0] + ox, theta[:, 1] + oy
        good = finite & torch.isfinite(theta).all(dim=1) & (theta[:, 2] > 1.0)
        good &= ((xf - x0[fit]).abs() <= max_shift) & ((yf - y0[fit]).abs() <= max_shift)
        # only the boxes fitted in this round are judged again: a fit refused in an earlier round
        # (its theta reset to the network's start) and not fitted in this one stays refused
        ok = torch.where(active, good, ok)
        x[fit] = torch.where(ok, xf, x0[fit])
        y[fit] = torch.where(ok, yf, y0[fit])
        n[fit] = torch.where(ok, theta[:, 2], n0[fit])
        theta = torch.where(ok[:, None], theta, start)
        active = with_neighbours
        if round_ == 0 and BACKGROUND_SMOOTH_PX > 0:  # the shape again, from this round's fits
            tilt = background_shape(x, y, n)
            active = torch.ones_like(active)

    fisher = torch.where(torch.isfinite(fisher).all(dim=2).all(dim=1)[:, None, None], fisher, 0.0)
    cov = torch.linalg.pinv(fisher)
    crlb = ((cov[:, 0, 0] + cov[:, 1, 1]) / 2).clamp_min(0).sqrt()
    ok &= torch.isfinite(crlb) & (crlb > 0)
    done = fit[ok]
    result["x"][done], result["y"][done] = x[done], y[done]
    result["photons"][done], result["background"][done] = theta[ok, 2], theta[ok, 3]
    light = others_all.sum(dim=(1, 2))
    crowding = light / (light + theta[:, 2].clamp_min(1.0))  # neighbours' share of the box's signal
    share = SHARE_ALONE + (SHARE_CROWDED - SHARE_ALONE) * crowding
    position_sd = crlb * reduced.clamp_min(1.0).sqrt()
    fit_sigma = torch.sqrt(position_sd**2 + (share * u0[fit]) ** 2)
    result["uncertainty"][done] = fit_sigma[ok]
    result["position_sd"][done] = position_sd[ok]
    result["photons_sd"][done] = cov[ok, 2, 2].clamp_min(0).sqrt()
    result["crowding"][done] = crowding[ok]
    result["fitted"][done] = True
    return result


def confirmed(probability, fit: dict, threshold: float):
    """Which detections to keep: the network is sure (``probability >= threshold``), or it found
    a candidate (``>= CONFIRM_FLOOR``) that the fit confirms: a spot of at least ``CONFIRM_Z``
    times its photons' Cramer-Rao bound, whose box is mostly its own light.

    Why: at a few hundred photons the network's probability is low even where a spot is plain to
    a likelihood test, and raising the threshold costs dim emitters; the fit, with the neighbours'
    light in its model, tells a dim spot from noise or from a neighbour's tail (validation seeds:
    mean efficiency 61.2 -> 62.2, every set higher; training/DESIGN-CHOICES.md).
    """
    fitted = fit["fitted"]
    strong = fit["photons"] >= CONFIRM_Z * fit["photons_sd"]  # NaN (not fitted) compares False
    alone = fit["crowding"] < CONFIRM_CROWDING
    return (probability >= threshold) | ((probability >= CONFIRM_FLOOR) & fitted & strong & alone)


def pending(probability, fit: dict, threshold: float):
    """Candidates that only a second frame can confirm: below the threshold, fitted and mostly their
    own light (as :func:`confirmed` asks), with photons from ``CONFIRM_Z_TWO_FRAMES`` up to
    ``CONFIRM_Z`` times their Cramer-Rao bound. In a movie they are kept where the same spot is
    found in frame t - 1 or t + 1 (:mod:`.pooling`).

    Why: an emitter stays on for a few frames, noise does not repeat at one spot; two frames' fits
    of a spot at this strength are as strong as one at ``CONFIRM_Z``. Each frame must show the spot
    itself: where the 3-frame model echoes an emitter that was on only in the adjacent frame, the
    echo's own fit is faint, and that emitter's photons do not confirm it.
    """
    candidate = (probability >= CONFIRM_FLOOR) & (probability < threshold) & fit["fitted"]
    z = fit["photons"] / fit["photons_sd"]
    two_frames = (z >= CONFIRM_Z_TWO_FRAMES) & (z < CONFIRM_Z)
    return candidate & two_frames & (fit["crowding"] < CONFIRM_CROWDING)


def side_lobes(frame, x, y, photons, psf_sigma_px: float):
    """Which detections are a brighter neighbour's side lobe or halo: a detection ``LOBE_RADII`` PSF
    widths away (from the centre) has more than ``1 / LOBE_RATIO`` times their fitted photons.

    Why: a real PSF is not a Gaussian. An Airy pattern's first ring (about 4 Gaussian widths out)
    holds 7 % of the light and the Gaussian fit leaves a halo, so around a bright emitter the
    network finds spots of a few percent of its photons, often with a high probability (of the
    false positives on the pupil-PSF validation movie, two in three). True emitters that dim beside
    a bright one are rare and barely measurable; a relative test, not a higher threshold, keeps
    every dim emitter elsewhere.
    """
    lobe = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    inner, outer = (r * psf_sigma_px for r in LOBE_RADII)
    pairs = neighbour_pairs(frame, x, y, radius=outer)
    i, j = pairs[:, 0], pairs[:, 1]
    far_enough = torch.hypot(x[i] - x[j], y[i] - y[j]) > inner
    dimmer = photons[i] < LOBE_RATIO * photons[j]
    lobe[i[far_enough & dimmer]] = True
    return lobe
