"""Classical baseline: band-pass detection + per-spot Gaussian maximum-likelihood fit.

Picasso / ThunderSTORM style, vectorised over all spots of a chunk of frames:

1. ADU -> photons with the :class:`Camera` (CONVENTIONS section 2).
2. Band-pass (difference of Gaussians: a matched Gaussian of the PSF's width minus a wide one for
   the background); local maxima in a 3x3 (or wider) window above ``threshold`` times the robust
   noise (1.4826 * MAD) of the filtered frame.
3. A ``box x box`` stack ``(N, box, box)`` around the maxima, fitted all at once by Levenberg-Marquardt
   (Fisher scoring) on the Poisson likelihood of an integrated (erf) Gaussian plus a flat
   background, with parameters x, y, photons, background, sigma. The photon image is converted to
   detected electrons divided by the excess-noise factor F (2 for EMCCD: the standard trick that
   makes the amplified counts Poisson-like), with the read noise added as a Poisson offset
   (Huang et al. 2013), and the fitted photons and background are scaled back.
4. Uncertainty from the Mortensen formula of CONVENTIONS section 4 with the fitted values; fits that
   leave the box, have a sigma out of range or are not finite are discarded, as are duplicates.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from .camera import Camera
from .errors import InputError
from .io import as_frames
from .localizations import Localizations

DEFAULT_PSF_SIGMA_PX = 1.2  # start value and filter width when the PSF width is not given
DEFAULT_THRESHOLD = 4.0  # in units of the filtered frame's robust noise
_CHUNK_PIXELS = 2**21  # frames per chunk = this / (H * W): bounds the memory of the filters
_N_ITER = 30

ProgressFn = Callable[[int, int], None]


def localize(
    frames,
    camera: Camera | None = None,
    *,
    psf_sigma_px: float | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    box: int = 7,
    sigma_range: tuple[float, float] = (0.4, 2.5),
    progress: ProgressFn | None = None,
) -> Localizations:
    """Detect and fit emitters in ``frames`` (ADU, ``(T, Y, X)`` or ``(Y, X)``).

    ``psf_sigma_px`` is the PSF's Gaussian width in pixels: the detection filter's width and the fit's
    start value (the fit frees it); ``None`` uses 1.2 px. ``threshold`` is in units of the filtered
    frame's robust noise. ``sigma_range`` bounds the fitted sigma, as multiples of the start value.
    ``progress(frames_done, frames_total)`` is called after each chunk of frames.

    Returns :class:`Localizations` in pixels (napari convention), 0-based frames, ``grid_factor`` 0,
    ``probability`` a monotone detection score in (0.5, 1).
    """
    camera = camera if camera is not None else Camera()
    data = as_frames(frames)
    sigma0 = DEFAULT_PSF_SIGMA_PX if psf_sigma_px is None else float(psf_sigma_px)
    if not (math.isfinite(sigma0) and 0.2 <= sigma0 <= 20):
        raise InputError(f"psf_sigma_px must be between 0.2 and 20 pixels, got {psf_sigma_px}")
    if not (math.isfinite(threshold) and threshold > 0):
        raise InputError(f"threshold must be > 0, got {threshold}")
    box = int(box)
    if box < 3 or box % 2 == 0:
        raise InputError(f"box must be an odd number of pixels >= 3, got {box}")
    T, H, W = data.shape
    if box > min(H, W):
        raise InputError(f"box of {box} px does not fit in frames of {H}x{W} px")

    chunk = max(1, _CHUNK_PIXELS // (H * W))
    parts = []
    for start in range(0, T, chunk):
        photons = torch.from_numpy(np.ascontiguousarray(camera.adu_to_photons(data[start : start + chunk])))
        parts.append(_localize_chunk(photons, camera, sigma0, threshold, box, sigma_range, start))
        if progress is not None:
            progress(min(start + chunk, T), T)
    return Localizations.concatenate(parts)


# ---------------------------------------------------------------------------------------------------
# 1. detection


def _gauss_kernel(sigma: float) -> torch.Tensor:
    r = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _blur(img_T1HW: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflected borders."""
    k = _gauss_kernel(sigma)
    r = len(k) // 2
    out = img_T1HW
    for dim in (2, 3):
        pad = (0, 0, r, r) if dim == 2 else (r, r, 0, 0)
        mode = "reflect" if min(out.shape[2:]) > r else "replicate"
        out = torch.nn.functional.pad(out, pad, mode=mode)
        weight = k.view(1, 1, -1, 1) if dim == 2 else k.view(1, 1, 1, -1)
        out = torch.nn.functional.conv2d(out, weight)
    return out


def _robust_noise(values_TK: torch.Tensor, nan: bool = False) -> torch.Tensor:
    """1.4826 * median absolute deviation along the last axis (ignoring NaN if ``nan``)."""
    median = torch.nanmedian if nan else torch.median
    med = median(values_TK, dim=1, keepdim=True).values
    return 1.4826 * median((values_TK - med).abs(), dim=1).values


def _detect(photons_THW: torch.Tensor, sigma0: float, threshold: float):
    """Local maxima of the band-passed frames. Returns (t, y, x, snr) of the candidates."""
    img = photons_THW[:, None]  # (T, 1, H, W)
    bandpass = (_blur(img, sigma0) - _blur(img, 2.0 * sigma0))[:, 0]  # (T, H, W)
    noise = _robust_noise(bandpass.flatten(1))  # (T,)
    # Second pass without the spots: bright emitters inflate the MAD of crowded frames.
    spots = bandpass > 3.0 * noise[:, None, None]
    m = max(1, int(math.ceil(3 * sigma0)))
    near = torch.nn.functional.max_pool2d(spots[:, None].float(), 2 * m + 1, stride=1, padding=m)[:, 0] > 0
    masked = bandpass.masked_fill(near, float("nan")).flatten(1)
    enough = (~near).flatten(1).sum(dim=1) >= 0.2 * bandpass[0].numel()
    noise = torch.where(enough, _robust_noise(masked, nan=True), noise).clamp_min(1e-6)
    r = max(1, int(round(sigma0)))
    local_max = torch.nn.functional.max_pool2d(bandpass[:, None], 2 * r + 1, stride=1, padding=r)[:, 0]
    snr = bandpass / noise[:, None, None]
    peaks = (bandpass >= local_max) & (snr > threshold)
    t, y, x = torch.nonzero(peaks, as_tuple=True)
    return t, y, x, snr[t, y, x]


# ---------------------------------------------------------------------------------------------------
# 2. fitting

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)
_SQRTPI = math.sqrt(math.pi)


def _model(theta_N5: torch.Tensor, grid_B: torch.Tensor, with_jacobian: bool):
    """Integrated Gaussian + background on a (box, box) grid.

    theta = (x, y, photons, background, sigma) in box pixels (pixel centres at 0..box-1).
    Returns mu (N, box, box) and, if asked, d mu / d theta (N, 5, box, box).
    """
    x, y, n, b, s = theta_N5.unbind(1)
    s_ = s[:, None]
    # Edges of each pixel relative to the centre, in units of sqrt(2) sigma.
    ax = (grid_B[None] - x[:, None] + 0.5) / (_SQRT2 * s_)  # (N, B) upper edge
    cx = (grid_B[None] - x[:, None] - 0.5) / (_SQRT2 * s_)  # (N, B) lower edge
    ay = (grid_B[None] - y[:, None] + 0.5) / (_SQRT2 * s_)
    cy = (grid_B[None] - y[:, None] - 0.5) / (_SQRT2 * s_)
    ex = 0.5 * (torch.erf(ax) - torch.erf(cx))  # (N, B) fraction of the PSF in each column
    ey = 0.5 * (torch.erf(ay) - torch.erf(cy))  # (N, B) ... in each row
    psf = ey[:, :, None] * ex[:, None, :]  # (N, B, B) rows = y, cols = x
    mu = b[:, None, None] + n[:, None, None] * psf
    if not with_jacobian:
        return mu, None
    gax, gcx, gay, gcy = (torch.exp(-(v**2)) for v in (ax, cx, ay, cy))
    dex_dx = (gcx - gax) / (_SQRT2PI * s_)
    dey_dy = (gcy - gay) / (_SQRT2PI * s_)
    dex_ds = (cx * gcx - ax * gax) / (_SQRTPI * s_)
    dey_ds = (cy * gcy - ay * gay) / (_SQRTPI * s_)
    nn = n[:, None, None]
    jac = torch.stack(
        [
            nn * ey[:, :, None] * dex_dx[:, None, :],
            nn * dey_dy[:, :, None] * ex[:, None, :],
            psf,
            torch.ones_like(psf),
            nn * (dey_ds[:, :, None] * ex[:, None, :] + ey[:, :, None] * dex_ds[:, None, :]),
        ],
        dim=1,
    )
    return mu, jac


def _loglik(counts, mu_scaled):
    """Poisson log-likelihood (without the data-only term), summed over the box: (N,)."""
    return (counts * torch.log(mu_scaled) - mu_scaled).sum(dim=(1, 2))


def fit_spots(
    spots_NBB: torch.Tensor,
    sigma0: float,
    *,
    scale: float = 1.0,
    offset: float = 0.0,
    n_iter: int = _N_ITER,
    fixed_sigma: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Poisson MLE fit of ``(N, box, box)`` photon boxes, all at once (Levenberg-Marquardt).

    The likelihood is that of ``counts = spots * scale + offset`` being Poisson with mean
    ``model * scale + offset`` (``scale = qe / F``; ``offset`` the read-noise variance in those units).
    Returns theta ``(N, 5)`` = (x, y, photons, background, sigma) in box pixels / photons, and the
    final log-likelihood ``(N,)``.
    """
    spots = spots_NBB.to(torch.float64)
    N, B, _ = spots.shape
    grid = torch.arange(B, dtype=torch.float64)
    counts = (spots * scale + offset).clamp_min(0.0)

    # Start values: background from the box's border, photons from the sum above it, centroid.
    border = torch.cat([spots[:, 0], spots[:, -1], spots[:, 1:-1, 0], spots[:, 1:-1, -1]], dim=1)
    b0 = border.median(dim=1).values.clamp_min(1e-3)
    net = (spots - b0[:, None, None]).clamp_min(0)
    n0 = net.sum(dim=(1, 2)).clamp_min(1.0)
    c = (B - 1) / 2
    x0 = ((net * grid[None, None, :]).sum(dim=(1, 2)) / n0).clamp(c - 1, c + 1)
    y0 = ((net * grid[None, :, None]).sum(dim=(1, 2)) / n0).clamp(c - 1, c + 1)
    theta = torch.stack([x0, y0, n0, b0, torch.full_like(b0, sigma0)], dim=1)

    lo = torch.tensor([-1.0, -1.0, 1e-3, 1e-6, 0.2 * sigma0], dtype=torch.float64)
    hi = torch.tensor([B, B, math.inf, math.inf, 4.0 * sigma0], dtype=torch.float64)
    n_par = 4 if fixed_sigma else 5
    lam = torch.full((N,), 1e-3, dtype=torch.float64)
    mu, jac = _model(theta, grid, True)
    ll = _loglik(counts, mu * scale + offset)
    eye = torch.eye(n_par, dtype=torch.float64)
    for _ in range(n_iter):
        mus = mu * scale + offset
        j = jac[:, :n_par].flatten(2) * scale  # (N, P, B*B)
        w = (1.0 / mus).flatten(1)  # (N, B*B)
        grad = torch.einsum("npk,nk->np", j, (counts.flatten(1) * w - 1.0))
        fisher = torch.einsum("npk,nk,nqk->npq", j, w, j)
        diag = torch.diagonal(fisher, dim1=1, dim2=2)
        damped = fisher + lam[:, None, None] * torch.diag_embed(diag) + 1e-12 * eye
        step = torch.linalg.solve(damped, grad.unsqueeze(-1)).squeeze(-1)
        trial = theta.clone()
        trial[:, :n_par] = torch.maximum(torch.minimum(theta[:, :n_par] + step, hi[:n_par]), lo[:n_par])
        mu_t, jac_t = _model(trial, grid, True)
        ll_t = _loglik(counts, mu_t * scale + offset)
        better = ll_t > ll
        better &= torch.isfinite(ll_t)
        theta = torch.where(better[:, None], trial, theta)
        mu = torch.where(better[:, None, None], mu_t, mu)
        jac = torch.where(better[:, None, None, None], jac_t, jac)
        ll = torch.where(better, ll_t, ll)
        lam = torch.where(better, lam * 0.1, lam * 10.0).clamp(1e-7, 1e7)
    return theta, ll


def mortensen_sigma(sigma_px, photons, background, excess_noise: float, pixel: float = 1.0):
    """CONVENTIONS section 4: lateral localization uncertainty (1 sigma) in the units of ``sigma``."""
    sa2 = sigma_px**2 + pixel**2 / 12.0
    var = excess_noise * sa2 / photons * (16.0 / 9.0 + 8.0 * math.pi * sa2 * background / (photons * pixel**2))
    return var**0.5


def _localize_chunk(photons_THW, camera, sigma0, threshold, box, sigma_range, frame_offset) -> Localizations:
    T, H, W = photons_THW.shape
    t, py, px, snr = _detect(photons_THW, sigma0, threshold)
    if len(t) == 0:
        return Localizations()
    r = box // 2
    # The box is kept inside the frame: near the borders the spot is off-centre in its box.
    y0 = (py - r).clamp(0, H - box)
    x0 = (px - r).clamp(0, W - box)
    ar = torch.arange(box)
    spots = photons_THW[t[:, None, None], y0[:, None, None] + ar[None, :, None], x0[:, None, None] + ar[None, None, :]]

    F = camera.excess_noise
    scale = camera.qe / F  # incident photons -> detected electrons / F (Poisson-like counts)
    read_var = (camera.read_noise_e / (camera.em_gain * camera.qe)) ** 2  # in incident photons^2
    offset = read_var * scale**2
    theta, _ = fit_spots(spots, sigma0, scale=scale, offset=offset)
    x_b, y_b, n, b, s = theta.unbind(1)

    # Keep fits whose centre stays within the box around the detected maximum and whose width is sane.
    cx = (px - x0).to(torch.float64)
    cy = (py - y0).to(torch.float64)
    ok = torch.isfinite(theta).all(dim=1)
    ok &= ((x_b - cx).abs() <= r + 0.5) & ((y_b - cy).abs() <= r + 0.5)
    # Inside the frame (pixel i covers [i - 0.5, i + 0.5)): light from emitters beyond the edge is not theirs.
    xf, yf = x0 + x_b, y0 + y_b
    ok &= (xf >= -0.5) & (xf < W - 0.5) & (yf >= -0.5) & (yf < H - 0.5)
    ok &= (s >= sigma_range[0] * sigma0) & (s <= sigma_range[1] * sigma0)
    ok &= n > 1.0
    idx = torch.nonzero(ok).squeeze(1)

    x = xf[idx].numpy()
    y = yf[idx].numpy()
    frame = (t[idx] + frame_offset).numpy()
    n, b, s = n[idx].numpy(), b[idx].numpy(), s[idx].numpy()
    score = snr[idx].to(torch.float64).numpy()
    keep = _dedupe(frame, x, y, n, min_dist=0.5 * sigma0)

    qe = camera.qe
    # Mortensen with detected photons (qe * incident): the Poisson statistic the camera sees.
    unc = mortensen_sigma(s, qe * n, qe * b, F)
    bkgstd = np.sqrt(F * np.maximum(qe * b, 0) + read_var * qe**2) / qe
    locs = Localizations(
        frame=frame,
        x=x,
        y=y,
        photons=n,
        background=b,
        bkgstd=bkgstd,
        sigma=s,
        uncertainty=unc,
        probability=score / (score + threshold),
        grid_factor=0.0,
    )
    return locs.subset(keep)


def _dedupe(frame, x, y, photons, min_dist: float) -> np.ndarray:
    """Indices to keep: of two fits in one frame closer than ``min_dist`` px, the brighter one."""
    if len(frame) < 2:
        return np.arange(len(frame))
    from scipy.spatial import cKDTree

    span = max(float(np.ptp(y)), 1.0) + 10 * min_dist + 10.0
    pts = np.column_stack([x, y + frame * span])
    pairs = cKDTree(pts).query_pairs(min_dist, output_type="ndarray")
    if len(pairs) == 0:
        return np.arange(len(frame))
    drop = np.where(photons[pairs[:, 0]] >= photons[pairs[:, 1]], pairs[:, 1], pairs[:, 0])
    keep = np.ones(len(frame), dtype=bool)
    keep[drop] = False
    return np.nonzero(keep)[0]
