"""The scene of a simulated movie: PSFs and backgrounds per movie (smooth variation, out-of-focus
blobs), emitter positions (uniform, or along filaments) and their brightness."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .psf import pupil_tables

# Filament model: a few persistent random walks per movie, sampled every half pixel.
_FILAMENTS_PER_MOVIE = 4
_FILAMENT_STEP_PX = 0.5
_FILAMENT_PERSISTENCE_PX = (15.0, 60.0)  # persistence length, uniform per filament
_FILAMENT_JITTER_NM = 15.0  # emitter offset from the filament axis (label size), per axis
MARGIN_SIGMAS = 3.0  # emitters are spawned this many PSF sigmas beyond the frame edge
DEPTH_PLANES = 5  # pupil PSF with defocus_spread_nm: emitters on planes evenly spaced over +-spread
BLOB_SIGMA_NM = (300.0, 1000.0)  # background blobs: Gaussian width, uniform per blob


# --------------------------------------------------------------------------------------------------
# 3. Scene: PSF widths, backgrounds, emitter positions and blinking


def uniform(low: float, high: float, shape, generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, device=device)


def smooth_field(batch: int, height: int, width: int, generator, device) -> torch.Tensor:
    """(B, H, W) smooth random field with values in [-1, 1] (max |value| = 1 per movie)."""
    coarse = torch.rand((batch, 1, 4, 4), generator=generator, device=device) * 2 - 1  # (B, 1, 4, 4)
    fine = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)[:, 0]  # (B, H, W)
    fine = fine - fine.mean(dim=(1, 2), keepdim=True)
    return fine / fine.abs().amax(dim=(1, 2), keepdim=True).clamp_min(1e-6)


def pupil_psfs(config, batch: int, generator, device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One pupil PSF per movie, its parameters uniform over the config's ranges; with
    ``defocus_spread_nm`` one per depth plane (Z = DEPTH_PLANES, else 1), movie-major.

    Returns pixel tables (B*Z, S, S) (psf.py), their Gaussian-equivalent sigmas [pixels] (B*Z,) and Z.
    A measured PSF (``psf_model="measured"``) is every movie's, at one plane.
    """
    if config.psf_model == "measured":
        psf = config.measured_psf()
        table = torch.as_tensor(psf.table, dtype=torch.float32, device=device)
        return table[None].expand(batch, -1, -1), torch.full((batch,), psf.sigma_px, device=device), 1
    na = uniform(*config.na, (batch,), generator, device)  # (B,)
    wavelength = uniform(*config.wavelength_nm, (batch,), generator, device)
    defocus = uniform(*config.defocus_nm, (batch,), generator, device)
    spherical = uniform(*config.spherical_waves, (batch,), generator, device)
    planes = DEPTH_PLANES if config.defocus_spread_nm > 0 else 1
    offsets = torch.linspace(-config.defocus_spread_nm, config.defocus_spread_nm, planes, device=device)
    depth = (defocus[:, None] + offsets[None, :]).reshape(-1)  # (B*Z,)
    tables, sigma = pupil_tables(
        na.repeat_interleave(planes),
        wavelength.repeat_interleave(planes),
        depth,
        spherical.repeat_interleave(planes),
        config.pixel_size_nm,
        config.psf_radius_px,
    )
    return tables, sigma, planes


def blob_field(config, level: torch.Tensor, batch: int, height: int, width: int, generator, device):
    """(B, H, W) static out-of-focus light: Gaussian blobs (width BLOB_SIGMA_NM) centred over the frame
    and a margin, ``background_blobs`` per um^2 (Poisson per movie), each of peak uniform in
    [0, background_blob_amplitude] x the movie's background ``level`` (B,)."""
    px = config.pixel_size_nm
    margin = 2.0 * BLOB_SIGMA_NM[1] / px
    area_um2 = (height + 2 * margin) * (width + 2 * margin) * (px / 1000.0) ** 2
    mean = torch.full((batch,), config.background_blobs * area_um2, device=device)
    counts = torch.poisson(mean, generator=generator).long()  # (B,)
    k = max(int(counts.max()), 1)
    present = torch.arange(k, device=device)[None, :] < counts[:, None]  # (B, K)
    cx = uniform(-0.5 - margin, width - 0.5 + margin, (batch, k), generator, device)  # (B, K)
    cy = uniform(-0.5 - margin, height - 0.5 + margin, (batch, k), generator, device)
    sigma = uniform(*BLOB_SIGMA_NM, (batch, k), generator, device) / px
    peak = uniform(0.0, config.background_blob_amplitude, (batch, k), generator, device)
    peak = peak * level[:, None] * present  # (B, K)
    cols = torch.arange(width, device=device, dtype=torch.float32)
    rows = torch.arange(height, device=device, dtype=torch.float32)
    gx = torch.exp(-0.5 * ((cols[None, None, :] - cx[..., None]) / sigma[..., None]) ** 2)  # (B, K, W)
    gy = torch.exp(-0.5 * ((rows[None, None, :] - cy[..., None]) / sigma[..., None]) ** 2)  # (B, K, H)
    return torch.einsum("bk,bky,bkx->byx", peak, gy, gx)


def brightness(config, m: int, generator, device) -> torch.Tensor:
    """(M,) photons per fully-on frame of M emitters (``photon_distribution`` over ``photons``)."""
    lo, hi = config.photons
    if config.photon_distribution == "log-uniform":  # as many dim emitters as bright ones
        return torch.exp(uniform(math.log(lo), math.log(hi), (m,), generator, device))
    if config.photon_distribution == "exponential":  # floor lo, mean hi
        return lo - (hi - lo) * torch.log1p(-torch.rand((m,), generator=generator, device=device))
    if config.photon_distribution == "log-normal":  # median sqrt(lo hi), 95 % within [lo, hi]
        mu, sd = 0.5 * (math.log(lo) + math.log(hi)), (math.log(hi) - math.log(lo)) / (2 * 1.959964)
        return torch.exp(mu + sd * torch.randn((m,), generator=generator, device=device))
    return uniform(lo, hi, (m,), generator, device)


def filament_points(batch, height, width, margin, generator, device):
    """Points every half pixel along a few persistent random walks per movie.

    Returns (x, y) each (B, F*K), a mask (B, F*K) of the points inside the padded field, and (B,)
    the ratio of filament length inside the padded field to that inside the frame.
    """
    n_fil = _FILAMENTS_PER_MOVIE
    n_steps = int(math.ceil(2 * (height + width) / _FILAMENT_STEP_PX))  # K: long enough to cross the field
    half = n_steps // 2
    # Each walk passes through a random point of the frame, heading in a random direction.
    x0 = uniform(-0.5, width - 0.5, (batch, n_fil, 1), generator, device)  # (B, F, 1)
    y0 = uniform(-0.5, height - 0.5, (batch, n_fil, 1), generator, device)
    theta0 = uniform(0.0, 2 * math.pi, (batch, n_fil, 1), generator, device)
    persistence = uniform(*_FILAMENT_PERSISTENCE_PX, (batch, n_fil, 1), generator, device)
    turn = torch.randn((batch, n_fil, n_steps), generator=generator, device=device)
    turn = turn * torch.sqrt(_FILAMENT_STEP_PX / persistence)  # (B, F, K) angle change per step
    theta = theta0 + torch.cumsum(turn, dim=2) - torch.cumsum(turn, dim=2)[:, :, half : half + 1]
    dx = _FILAMENT_STEP_PX * torch.cos(theta)  # (B, F, K)
    dy = _FILAMENT_STEP_PX * torch.sin(theta)
    # Positions relative to the anchor step `half`, so the walk extends both ways from (x0, y0).
    px = x0 + torch.cumsum(dx, dim=2) - torch.cumsum(dx, dim=2)[:, :, half : half + 1]
    py = y0 + torch.cumsum(dy, dim=2) - torch.cumsum(dy, dim=2)[:, :, half : half + 1]
    px, py = px.reshape(batch, -1), py.reshape(batch, -1)  # (B, F*K)
    inside = (
        (px >= -0.5 - margin)
        & (px < width - 0.5 + margin)
        & (py >= -0.5 - margin)
        & (py < height - 0.5 + margin)
    )
    in_frame = (px >= -0.5) & (px < width - 0.5) & (py >= -0.5) & (py < height - 0.5)
    padded_ratio = inside.sum(dim=1).float() / in_frame.sum(dim=1).clamp_min(1).float()  # (B,)
    return px, py, inside, padded_ratio


def positions(config, movie, batch, margin, filaments, generator, device):
    """Positions (x, y), each (M,), for emitters of movies ``movie`` (M,), over the padded field.

    ``filaments`` is ``_filament_points``' output for the "filaments" structure, else None.
    """
    height, width = config.frame_size
    m = movie.numel()
    if filaments is None:
        x = uniform(-0.5 - margin, width - 0.5 + margin, (m,), generator, device)
        y = uniform(-0.5 - margin, height - 0.5 + margin, (m,), generator, device)
        return x, y
    px, py, inside, _ = filaments  # (B, F*K) each
    if m == 0:
        return px.new_zeros(0), py.new_zeros(0)
    counts = torch.bincount(movie, minlength=batch)  # (B,)
    weights = inside.float()
    weights[weights.sum(dim=1) == 0] = 1.0  # a movie whose filaments all left the field (never in practice)
    draws = torch.multinomial(weights, int(counts.max()), replacement=True, generator=generator)  # (B, max)
    # The i-th emitter of movie b takes draw i of that movie.
    order = torch.argsort(movie, stable=True)
    rank = torch.empty_like(movie)
    rank[order] = torch.arange(m, device=device) - torch.repeat_interleave(
        torch.cumsum(counts, 0) - counts, counts
    )
    point = draws[movie, rank]  # (M,) index along the walks
    x, y = px[movie, point], py[movie, point]
    # Spread uniformly along the half-pixel step, then off the axis by the label size.
    along = uniform(-0.5, 0.5, (m,), generator, device) * _FILAMENT_STEP_PX
    angle = uniform(0.0, 2 * math.pi, (m,), generator, device)  # walks are smooth: any direction is fine
    jitter = _FILAMENT_JITTER_NM / config.pixel_size_nm
    x = x + along * torch.cos(angle) + jitter * torch.randn((m,), generator=generator, device=device)
    y = y + along * torch.sin(angle) + jitter * torch.randn((m,), generator=generator, device=device)
    return x, y
