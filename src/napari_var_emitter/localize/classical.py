"""Classical baseline: band-pass detection + per-spot Gaussian maximum-likelihood fit.

Picasso / ThunderSTORM style, vectorised over all spots of a chunk of frames:

1. ADU -> photons with the :class:`Camera` (docs/CONVENTIONS.md, section 2).
2. Band-pass (difference of Gaussians: a matched Gaussian of the PSF's width minus a wide one for
   the background); local maxima in a 3x3 (or wider) window above ``threshold`` times the robust
   noise (1.4826 * MAD) of the filtered frame.
3. A ``box x box`` stack ``(N, box, box)`` around the maxima, fitted all at once by Levenberg-Marquardt
   (Fisher scoring) on the Poisson likelihood of an integrated (erf) Gaussian plus a flat
   background, with parameters x, y, photons, background, sigma. The photon image is converted to
   detected electrons divided by the excess-noise factor F (2 for EMCCD: the standard trick that
   makes the amplified counts Poisson-like), with the read noise added as a Poisson offset
   (Huang et al. 2013), and the fitted photons and background are scaled back.
4. Uncertainty from the Mortensen formula of docs/CONVENTIONS.md, section 4 with the fitted values; fits that
   leave the box, have a sigma out of range or are not finite are discarded, as are duplicates.

numpy/scipy rather than torch: the work is many small array operations, which torch's intra-op
threads slow down badly on a loaded CPU; numpy runs them in the calling thread.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy import ndimage
from scipy.special import erf
from skimage.filters import difference_of_gaussians

from ..camera import Camera
from ..errors import InputError
from ..io.frames import as_frames
from ..io.localizations import Localizations
from .neighbours import dedupe_indices

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
        photons = np.asarray(camera.adu_to_photons(data[start : start + chunk]), dtype=np.float32)
        parts.append(_localize_chunk(photons, camera, sigma0, threshold, box, sigma_range, start))
        if progress is not None:
            progress(min(start + chunk, T), T)
    return Localizations.concatenate(parts)


# ---------------------------------------------------------------------------------------------------
# 1. detection


def _blur(img_THW: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of each frame (half-sample symmetric borders)."""
    return ndimage.gaussian_filter(img_THW, (0.0, sigma, sigma), mode="reflect", truncate=3.0)


def _robust_noise(values_TK: np.ndarray, nan: bool = False) -> np.ndarray:
    """1.4826 * median absolute deviation along the last axis (ignoring NaN if ``nan``)."""
    median = np.nanmedian if nan else np.median
    med = median(values_TK, axis=1, keepdims=True)
    return 1.4826 * median(np.abs(values_TK - med), axis=1)


def _bandpass(img_THW: np.ndarray, sigma0: float) -> np.ndarray:
    """Matched Gaussian minus a twice-as-wide one, per frame (the same borders as :func:`_blur`):
    keeps PSF-sized spots, removes the background."""
    low, high = (0.0, sigma0, sigma0), (0.0, 2.0 * sigma0, 2.0 * sigma0)
    return difference_of_gaussians(img_THW, low, high, mode="reflect", truncate=3.0)


def _model_noise(photons_THW: np.ndarray, sigma0: float, camera: Camera) -> np.ndarray:
    """(T,) std of the band-passed frame that the camera's noise model predicts for its background.

    The background is a low percentile of the frame blurred at the wide scale; the pixel variance
    (incident photons^2) is ``F * b / qe + read-noise variance``, times the filter's squared L2 norm.
    """
    r = int(math.ceil(8 * sigma0))
    delta = np.zeros((1, 2 * r + 1, 2 * r + 1), dtype=np.float64)
    delta[0, r, r] = 1.0
    norm = float(np.sqrt((_bandpass(delta, sigma0) ** 2).sum()))
    background = np.percentile(_blur(photons_THW, 2.0 * sigma0).reshape(len(photons_THW), -1), 10, axis=1)
    read_var = (camera.read_noise_e / (camera.em_gain * camera.qe)) ** 2
    return norm * np.sqrt(camera.excess_noise * np.maximum(background, 0.0) / camera.qe + read_var)


def _detect(photons_THW: np.ndarray, sigma0: float, threshold: float, camera: Camera):
    """Local maxima of the band-passed frames. Returns (t, y, x, snr) of the candidates.

    The noise is the robust (MAD) noise of the band-passed frame, recomputed without the pixels near
    spots. In crowded frames the MAD is mostly signal: where it exceeds 1.5 times the noise that the
    camera model predicts, the model's value is used instead (1.5: room for a camera model that is
    somewhat off, which the MAD then corrects in sparse frames).
    """
    T = photons_THW.shape[0]
    bandpass = _bandpass(photons_THW, sigma0)  # (T, H, W)
    noise = _robust_noise(bandpass.reshape(T, -1))  # (T,)
    m = max(1, int(math.ceil(3 * sigma0)))
    for _ in range(2):  # bright emitters inflate the MAD: mask them and estimate again
        near = ndimage.maximum_filter(bandpass > 3.0 * noise[:, None, None], size=(1, 2 * m + 1, 2 * m + 1))
        enough = (~near).reshape(T, -1).sum(axis=1) >= 0.2 * bandpass[0].size
        if not np.any(enough):
            break
        masked = np.where(near[enough], np.nan, bandpass[enough]).reshape(int(enough.sum()), -1)
        noise[enough] = _robust_noise(masked, nan=True)
    model = _model_noise(photons_THW, sigma0, camera)
    noise = np.maximum(np.where(noise > 1.5 * model, model, noise), 1e-6)
    r = max(1, int(round(sigma0)))
    local_max = ndimage.maximum_filter(bandpass, size=(1, 2 * r + 1, 2 * r + 1), mode="nearest")
    snr = bandpass / noise[:, None, None]
    t, y, x = np.nonzero((bandpass >= local_max) & (snr > threshold))
    return t, y, x, snr[t, y, x].astype(np.float64)


# ---------------------------------------------------------------------------------------------------
# 2. fitting

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)
_SQRTPI = math.sqrt(math.pi)


def gaussian_model(theta_N5: np.ndarray, grid_B: np.ndarray, with_jacobian: bool):
    """Integrated Gaussian + background on a (box, box) grid.

    theta = (x, y, photons, background, sigma) in box pixels (pixel centres at 0..box-1).
    Returns mu (N, box, box) and, if asked, d mu / d theta (N, 5, box, box).
    """
    x, y, n, b, s = theta_N5.T
    s_ = s[:, None]
    # Edges of each pixel relative to the centre, in units of sqrt(2) sigma.
    ax = (grid_B[None] - x[:, None] + 0.5) / (_SQRT2 * s_)  # (N, B) upper edge
    cx = (grid_B[None] - x[:, None] - 0.5) / (_SQRT2 * s_)  # (N, B) lower edge
    ay = (grid_B[None] - y[:, None] + 0.5) / (_SQRT2 * s_)
    cy = (grid_B[None] - y[:, None] - 0.5) / (_SQRT2 * s_)
    ex = 0.5 * (erf(ax) - erf(cx))  # (N, B) fraction of the PSF in each column
    ey = 0.5 * (erf(ay) - erf(cy))  # (N, B) ... in each row
    psf = ey[:, :, None] * ex[:, None, :]  # (N, B, B) rows = y, cols = x
    mu = b[:, None, None] + n[:, None, None] * psf
    if not with_jacobian:
        return mu, None
    gax, gcx, gay, gcy = (np.exp(-(v**2)) for v in (ax, cx, ay, cy))
    dex_dx = (gcx - gax) / (_SQRT2PI * s_)
    dey_dy = (gcy - gay) / (_SQRT2PI * s_)
    dex_ds = (cx * gcx - ax * gax) / (_SQRTPI * s_)
    dey_ds = (cy * gcy - ay * gay) / (_SQRTPI * s_)
    nn = n[:, None, None]
    jac = np.stack(
        [
            nn * ey[:, :, None] * dex_dx[:, None, :],
            nn * dey_dy[:, :, None] * ex[:, None, :],
            psf,
            np.ones_like(psf),
            nn * (dey_ds[:, :, None] * ex[:, None, :] + ey[:, :, None] * dex_ds[:, None, :]),
        ],
        axis=1,
    )
    return mu, jac


def _loglik(counts, mu_scaled):
    """Poisson log-likelihood (without the data-only term), summed over the box: (N,)."""
    return (counts * np.log(mu_scaled) - mu_scaled).sum(axis=(1, 2))


def fit_spots(
    spots_NBB,
    sigma0: float,
    *,
    scale: float = 1.0,
    offset: float = 0.0,
    n_iter: int = _N_ITER,
    fixed_sigma: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Poisson MLE fit of ``(N, box, box)`` photon boxes, all at once (Levenberg-Marquardt).

    The likelihood is that of ``counts = spots * scale + offset`` being Poisson with mean
    ``model * scale + offset`` (``scale = qe / F``; ``offset`` the read-noise variance in those units).
    Returns theta ``(N, 5)`` = (x, y, photons, background, sigma) in box pixels / photons, and the
    final log-likelihood ``(N,)``.
    """
    spots = np.asarray(spots_NBB, dtype=np.float64)
    N, B, _ = spots.shape
    grid = np.arange(B, dtype=np.float64)
    counts = np.maximum(spots * scale + offset, 0.0)

    # Start values: background from the box's border, photons from the sum above it, centroid.
    border = np.concatenate([spots[:, 0], spots[:, -1], spots[:, 1:-1, 0], spots[:, 1:-1, -1]], axis=1)
    b0 = np.maximum(np.median(border, axis=1), 1e-3)
    net = np.maximum(spots - b0[:, None, None], 0.0)
    n0 = np.maximum(net.sum(axis=(1, 2)), 1.0)
    c = (B - 1) / 2
    x0 = np.clip((net * grid[None, None, :]).sum(axis=(1, 2)) / n0, c - 1, c + 1)
    y0 = np.clip((net * grid[None, :, None]).sum(axis=(1, 2)) / n0, c - 1, c + 1)
    theta = np.stack([x0, y0, n0, b0, np.full_like(b0, sigma0)], axis=1)  # (N, 5)

    n_par = 4 if fixed_sigma else 5
    lo = np.array([-1.0, -1.0, 1e-3, 1e-6, 0.2 * sigma0])[:n_par]
    hi = np.array([B, B, np.inf, np.inf, 4.0 * sigma0])[:n_par]
    lam = np.full(N, 1e-3)
    mu, jac = gaussian_model(theta, grid, True)
    ll = _loglik(counts, mu * scale + offset)
    eye = np.eye(n_par)
    flat_counts = counts.reshape(N, -1)
    for _ in range(n_iter):
        j = jac[:, :n_par].reshape(N, n_par, -1) * scale  # (N, P, B*B)
        w = 1.0 / (mu * scale + offset).reshape(N, -1)  # (N, B*B)
        grad = np.einsum("npk,nk->np", j, flat_counts * w - 1.0)  # (N, P)
        fisher = np.einsum("npk,nqk->npq", j * w[:, None, :], j)  # (N, P, P)
        diag = np.einsum("npp->np", fisher)
        damped = fisher + (lam[:, None] * diag)[:, :, None] * eye + 1e-12 * eye
        with np.errstate(all="ignore"):
            step = np.linalg.solve(damped, grad[:, :, None])[:, :, 0]
        trial = theta.copy()
        trial[:, :n_par] = np.clip(theta[:, :n_par] + step, lo, hi)
        with np.errstate(all="ignore"):
            mu_t, jac_t = gaussian_model(trial, grid, True)
            ll_t = _loglik(counts, mu_t * scale + offset)
        better = (ll_t > ll) & np.isfinite(ll_t)
        theta[better] = trial[better]
        mu[better] = mu_t[better]
        jac[better] = jac_t[better]
        ll[better] = ll_t[better]
        lam = np.clip(np.where(better, lam * 0.1, lam * 10.0), 1e-7, 1e7)
    return theta, ll


def mortensen_sigma(sigma_px, photons, background, excess_noise: float, pixel: float = 1.0):
    """Lateral localization uncertainty (1 sigma) in the units of ``sigma`` (docs/CONVENTIONS.md,
    section 4)."""
    sa2 = sigma_px**2 + pixel**2 / 12.0
    var = (
        excess_noise * sa2 / photons * (16.0 / 9.0 + 8.0 * math.pi * sa2 * background / (photons * pixel**2))
    )
    return var**0.5


def _localize_chunk(photons_THW, camera, sigma0, threshold, box, sigma_range, frame_offset) -> Localizations:
    T, H, W = photons_THW.shape
    t, py, px, snr = _detect(photons_THW, sigma0, threshold, camera)
    if len(t) == 0:
        return Localizations()
    r = box // 2
    # The box is kept inside the frame: near the borders the spot is off-centre in its box.
    y0 = np.clip(py - r, 0, H - box)
    x0 = np.clip(px - r, 0, W - box)
    ar = np.arange(box)
    spots = photons_THW[t[:, None, None], y0[:, None, None] + ar[None, :, None], x0[:, None, None] + ar]

    F = camera.excess_noise
    scale = camera.qe / F  # incident photons -> detected electrons / F (Poisson-like counts)
    read_var = (camera.read_noise_e / (camera.em_gain * camera.qe)) ** 2  # in incident photons^2
    offset = read_var * scale**2
    theta, _ = fit_spots(spots, sigma0, scale=scale, offset=offset)
    x_b, y_b, n, b, s = theta.T

    # Keep fits whose centre stays within the box around the detected maximum and whose width is sane.
    ok = np.isfinite(theta).all(axis=1)
    ok &= (np.abs(x_b - (px - x0)) <= r + 0.5) & (np.abs(y_b - (py - y0)) <= r + 0.5)
    # Inside the frame (pixel i covers [i - 0.5, i + 0.5)): light from emitters beyond the edge is not theirs.
    xf, yf = x0 + x_b, y0 + y_b
    ok &= (xf >= -0.5) & (xf < W - 0.5) & (yf >= -0.5) & (yf < H - 0.5)
    ok &= (s >= sigma_range[0] * sigma0) & (s <= sigma_range[1] * sigma0)
    ok &= n > 1.0
    idx = np.nonzero(ok)[0]

    x, y, frame = xf[idx], yf[idx], t[idx] + frame_offset
    n, b, s, score = n[idx], b[idx], s[idx], snr[idx]
    keep = dedupe_indices(frame, x, y, n, min_dist=0.5 * sigma0)

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
