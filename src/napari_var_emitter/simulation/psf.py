"""Pupil PSF: scalar Fourier optics, supersampled and integrated over camera pixels (torch, batched).

The field in the image plane is the Fourier transform of the pupil function

    P(k) = A(k) exp(2 pi i W(k)),   k = (kx, ky) spatial frequency in cycles/nm,
    A(k) = 1 inside the circle |k| <= NA / lambda, 0 outside (the edge anti-aliased over one sample),
    W(k) = z * sqrt((n / lambda)^2 - |k|^2) + a * Z40(rho)   [waves],   rho = |k| lambda / NA,
    Z40(rho) = 6 rho^4 - 6 rho^2 + 1   (Zernike spherical aberration: 1 wave at the centre, RMS 1/sqrt(5)),

with n = ``N_IMMERSION`` (oil immersion), z the defocus [nm] (the emitter's distance from the focal
plane; its sign matters only with spherical aberration) and a the spherical aberration [waves]
(Strehl ratio ~0.6 at a = 0.25, ~0.15 at a = 0.5).
The intensity |E|^2 is normalised by Parseval's theorem, so it is the fraction of the emitter's
light per unit area. It is sampled on a fine grid (``OVERSAMPLE`` samples per camera pixel and axis;
the discrete Fourier transform of the pupil evaluated by matrix products at the patch's fine points
only, the values a zero-padded FFT would give there), then box-summed over each camera pixel.

A *pixel table* (K, 2J+1, 2J+1), J = OVERSAMPLE * (radius + 1), holds at index (J + jy, J + jx) the
fraction of the light that falls in a camera pixel whose centre is (jy, jx) / OVERSAMPLE pixels from
the emitter, renormalised so that a pixel-centred emitter's patch of (2 radius + 1)^2 pixels sums to
1 (the tails beyond the patch, tapered off, are folded into it: photons are preserved).
``render_pupil`` reads it at each emitter's sub-pixel offset (nearest 1/OVERSAMPLE pixel below, then
linear interpolation between two table samples per axis). Positions follow docs/CONVENTIONS.md,
section 1. Everything is float32 torch, batched over PSFs, on any device.
"""

from __future__ import annotations

import math

import torch

N_IMMERSION = 1.518  # refractive index of immersion oil (and of the sample, for the defocus term)
OVERSAMPLE = 8  # fine samples per camera pixel and axis (a power of 2)
PUPIL_SAMPLES = 64  # pupil samples across its diameter
TAPER_PX = 1.5  # the pixel table falls smoothly to 0 over this many pixels at the patch's edge


def psf_radius_px(
    na_low: float, wavelength_high_nm: float, defocus_max_nm: float, pixel_size_nm: float
) -> int:
    """Patch radius [pixels] for the widest PSF of a range: 1.2 lambda / NA (the second dark ring of
    the Airy pattern: ~90 % of an in-focus PSF's light) plus the geometric blur radius of the
    defocus, ``|z| * tan(asin(NA / n)) / 2`` (half the marginal ray's spread: the light is
    concentrated near the axis), drawn in full; beyond it the table's taper (``pixel_table``)."""
    airy = 1.2 * wavelength_high_nm / na_low
    sin = min(na_low / N_IMMERSION, 0.999)
    blur = 0.5 * abs(defocus_max_nm) * sin / math.sqrt(1.0 - sin * sin)
    return int(math.ceil((airy + blur) / pixel_size_nm + 0.5 + TAPER_PX))


def _fine_axis(radius: int, oversample: int, device) -> torch.Tensor:
    """(2M,) fine sample centres [pixels]: (m + 0.5) / oversample for m = -M .. M-1,
    M = oversample * (radius + 1.5)."""
    half = oversample * (radius + 1) + oversample // 2
    return (torch.arange(2 * half, device=device, dtype=torch.float32) - half + 0.5) / oversample


def fine_psf(
    na: torch.Tensor,
    wavelength_nm: torch.Tensor,
    defocus_nm: torch.Tensor,
    spherical_waves: torch.Tensor,
    pixel_size_nm: float,
    radius: int,
    oversample: int = OVERSAMPLE,
) -> torch.Tensor:
    """Fraction of the light in each fine cell: (K, 2M, 2M) for K PSFs given by (K,) parameters.

    Cell (i, j) is centred at (y, x) = (axis[i], axis[j]) pixels from the emitter (``_fine_axis``).
    The pupil is even in kx and in ky (its phase depends on |k| only), so the transform is a cosine
    transform of one quadrant, evaluated on one quadrant of the fine grid and mirrored.
    """
    device = na.device
    na, lam = na.float(), wavelength_nm.float()  # (K,)
    z, a = defocus_nm.float(), spherical_waves.float()
    k_max = na / lam  # (K,) pupil radius, cycles/nm
    dk = 2.0 * k_max / PUPIL_SAMPLES  # (K,)
    idx = torch.arange(PUPIL_SAMPLES // 2, device=device, dtype=torch.float32) + 0.5
    k = idx[None, :] * dk[:, None]  # (K, Nq) positive pupil sample frequencies per axis
    k2 = k[:, :, None] ** 2 + k[:, None, :] ** 2  # (K, Nq, Nq) one quadrant
    amplitude = ((k_max[:, None, None] - k2.sqrt()) / dk[:, None, None] + 0.5).clamp(0.0, 1.0)
    rho2 = k2 / k_max[:, None, None] ** 2
    zernike = 6.0 * rho2**2 - 6.0 * rho2 + 1.0
    kz = ((N_IMMERSION / lam[:, None, None]) ** 2 - k2).clamp_min(0.0).sqrt()  # (K, Nq, Nq)
    waves = z[:, None, None] * (kz - N_IMMERSION / lam[:, None, None]) + a[:, None, None] * zernike
    angle = 2.0 * math.pi * waves.remainder(1.0)
    real, imag = amplitude * torch.cos(angle), amplitude * torch.sin(angle)  # (K, Nq, Nq)

    axis = _fine_axis(radius, oversample, device)  # (2M,)
    half = axis[axis.numel() // 2 :] * pixel_size_nm  # (M,) the positive half, nm
    cos = torch.cos(
        2.0 * math.pi * (half[None, :, None] * k[:, None, :]).remainder(1.0)
    ).float()  # (K, M, Nq)
    field_re = cos @ real @ cos.transpose(1, 2)  # (K, M, M): E(y, x) / (4 dk^2), y, x >= 0
    field_im = cos @ imag @ cos.transpose(1, 2)
    quadrant = field_re**2 + field_im**2
    # Parseval: sum |P|^2 dk^2 over the whole pupil (4 quadrants) is the total light
    total = 4.0 * (amplitude**2).sum(dim=(1, 2)) * dk**2  # (K,)
    cell_nm2 = (pixel_size_nm / oversample) ** 2
    quadrant = quadrant * (16.0 * dk**4 / total * cell_nm2)[:, None, None]
    upper = torch.cat([quadrant.flip(2), quadrant], dim=2)  # (K, M, 2M)
    return torch.cat([upper.flip(1), upper], dim=1)  # (K, 2M, 2M)


def _box_sum(values: torch.Tensor, dim: int, width: int) -> torch.Tensor:
    """Sums of ``width`` (a power of 2) consecutive samples along ``dim``: length L -> L - width + 1,
    by pairwise doubling (log2(width) additions of shifted copies, no cancellation)."""
    step = 1
    while step < width:
        length = values.shape[dim] - step
        values = values.narrow(dim, 0, length) + values.narrow(dim, step, length)
        step *= 2
    return values


def pixel_table(fine: torch.Tensor, oversample: int = OVERSAMPLE) -> torch.Tensor:
    """Box sums of ``fine`` (K, 2M, 2M) over one camera pixel: (K, 2J+1, 2J+1), J = M - oversample / 2.

    Tapered to 0 at ``radius - 0.5`` pixels from the emitter (a raised cosine over TAPER_PX) so that
    the light drawn is the same, and centred on the emitter, at every sub-pixel position; then
    renormalised to sum 1 over a pixel-centred emitter's pixels (module docstring).
    """
    return taper_table(_box_sum(_box_sum(fine, 1, oversample), 2, oversample), oversample)


def taper_table(table: torch.Tensor, oversample: int = OVERSAMPLE) -> torch.Tensor:
    """A pixel table (K, 2J+1, 2J+1) tapered to 0 at ``J / oversample - 1.5`` pixels from the
    emitter (a raised cosine over TAPER_PX) and renormalised to sum 1 over a pixel-centred emitter's
    pixels (module docstring); J a multiple of ``oversample``."""
    centre = table.shape[-1] // 2  # J
    offset = (torch.arange(table.shape[-1], device=table.device, dtype=table.dtype) - centre) / oversample
    distance = torch.sqrt(offset[:, None] ** 2 + offset[None, :] ** 2)  # (2J+1, 2J+1) pixels
    edge = centre / oversample - 1.5  # radius - 0.5
    ramp = ((edge - distance) / TAPER_PX).clamp(0.0, 1.0)
    table = table * (0.5 - 0.5 * torch.cos(math.pi * ramp))
    centred = table[:, ::oversample, ::oversample].sum(dim=(1, 2))  # (K,) J is a multiple of oversample
    return table / centred[:, None, None]


def gaussian_sigma_px(fine: torch.Tensor, oversample: int = OVERSAMPLE) -> torch.Tensor:
    """Sigma [pixels] of the least-squares fit of ``A exp(-r^2 / (2 sigma^2))`` to each fine PSF (K,).

    The best sigma maximises <I, G>^2 / <G, G> (the amplitude solved in closed form); searched on a
    log grid, then refined twice around the best value. Fitted on every fourth fine sample (the
    model is sampled at the same points: no bias).
    """
    half = fine.shape[-1] // 2
    axis = (torch.arange(fine.shape[-1], device=fine.device, dtype=torch.float32) - half + 0.5) / oversample
    image, axis = fine[:, ::4, ::4].float(), axis[::4]  # (K, S/4, S/4)
    low = torch.full(image.shape[:1], 0.05, device=fine.device)
    high = torch.full_like(low, 20.0)
    for _ in range(3):
        steps = torch.linspace(0.0, 1.0, 33, device=fine.device)
        sigma = torch.exp(torch.log(low)[:, None] + steps[None, :] * torch.log(high / low)[:, None])  # (K, C)
        g = torch.exp(-0.5 * (axis[None, None, :] / sigma[:, :, None]) ** 2)  # (K, C, S)
        inner = torch.einsum("kcy,kyx,kcx->kc", g, image, g)
        norm = (g**2).sum(dim=2) ** 2  # (K, C)
        best = torch.argmax(inner**2 / norm, dim=1)  # (K,)
        rows = torch.arange(len(best), device=fine.device)
        low = sigma[rows, (best - 1).clamp_min(0)]
        high = sigma[rows, (best + 1).clamp_max(sigma.shape[1] - 1)]
        found = sigma[rows, best]
    return found


def pupil_tables(
    na: torch.Tensor,
    wavelength_nm: torch.Tensor,
    defocus_nm: torch.Tensor,
    spherical_waves: torch.Tensor,
    pixel_size_nm: float,
    radius: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel tables (K, 2J+1, 2J+1) and Gaussian-equivalent sigmas [pixels] (K,) of K pupil PSFs."""
    fine = fine_psf(na, wavelength_nm, defocus_nm, spherical_waves, pixel_size_nm, radius)
    return pixel_table(fine), gaussian_sigma_px(fine)


def gaussian_equivalent_sigma_nm(
    na: float,
    wavelength_nm: float,
    defocus_nm: float = 0.0,
    spherical_waves: float = 0.0,
    pixel_size_nm: float = 100.0,
) -> float:
    """Sigma [nm] of the Gaussian that best fits (least squares) this pupil PSF, before pixel
    integration: the PSF width to tell a Gaussian-model method (~0.21 lambda / NA in focus)."""
    radius = psf_radius_px(na, wavelength_nm, defocus_nm, pixel_size_nm)
    t = torch.tensor
    fine = fine_psf(t([na]), t([wavelength_nm]), t([defocus_nm]), t([spherical_waves]), pixel_size_nm, radius)
    return float(gaussian_sigma_px(fine)[0]) * pixel_size_nm


def render_pupil(
    x: torch.Tensor,
    y: torch.Tensor,
    photons: torch.Tensor,
    table_index: torch.Tensor,
    tables: torch.Tensor,
    frame_index: torch.Tensor,
    n_frames: int,
    height: int,
    width: int,
    emitter: torch.Tensor | None = None,
    oversample: int = OVERSAMPLE,
    chunk: int = 8192,
) -> torch.Tensor:
    """Expected photons (T, H, W) of emitters drawn with pixel tables (``pupil_tables``).

    x, y (pixels), table_index (which table): (M,) per emitter; photons, frame_index: (N,) per row,
    an emitter in a frame; ``emitter`` (N,), ascending, is each row's emitter (default: row i is
    emitter i). tables: (K, 2J+1, 2J+1). Each emitter's patch of (2 radius + 1)^2 pixels around its
    nearest pixel is read from its table once, then added, clipped to the frame, in each of its frames.
    """
    device = x.device
    emitter = torch.arange(x.numel(), device=device) if emitter is None else emitter
    size = tables.shape[-1]
    centre = size // 2  # J
    radius = centre // oversample - 1
    pad = 2 * radius + 1  # a canvas wide enough for every patch that reaches the frame
    canvas_h, canvas_w = height + 2 * pad, width + 2 * pad
    canvas = torch.zeros(n_frames * canvas_h * canvas_w, device=device, dtype=torch.float32)
    col0, row0 = torch.round(x.float()), torch.round(y.float())  # (M,) nearest pixel
    reach = (
        (col0 >= -radius - 1) & (col0 <= width + radius) & (row0 >= -radius - 1) & (row0 <= height + radius)
    )
    k = torch.arange(-radius, radius + 1, device=device)  # (P,) pixel offsets of the patch
    patch_table = (oversample * k)[:, None] * size + (oversample * k)[None, :]  # (P, P) table offsets
    patch_canvas = k[:, None] * canvas_w + k[None, :]  # (P, P) canvas offsets
    flat_tables = tables.reshape(-1)
    bounds = torch.arange(0, x.numel() + chunk, chunk, device=device).clamp_max(x.numel())
    row_bounds = torch.searchsorted(emitter, bounds).tolist()  # rows of each chunk of emitters
    for i, e0 in enumerate(bounds[:-1].tolist()):
        e1, rows = int(bounds[i + 1]), slice(row_bounds[i], row_bounds[i + 1])
        if e1 <= e0 or row_bounds[i + 1] <= row_bounds[i]:
            continue
        part = slice(e0, e1)
        # sub-pixel offset s = oversample * (x - col0), in [-oversample/2, oversample/2]: q = floor(s),
        # r = s - q; pixel k's centre lies (oversample * k - s) / oversample from the emitter, between
        # table samples j = oversample * k - q and j - 1 (weight r)
        sx, sy = oversample * (x[part].float() - col0[part]), oversample * (y[part].float() - row0[part])
        qx, qy = torch.floor(sx), torch.floor(sy)
        rx, ry = (sx - qx)[:, None, None], (sy - qy)[:, None, None]  # (m, 1, 1)
        first = table_index[part].long() * size * size + (centre - qy.long()) * size + centre - qx.long()
        at = first[:, None, None] + patch_table  # (m, P, P) flat index of sample j
        unit = (1 - ry) * (1 - rx) * flat_tables[at]  # (m, P, P) the emitter's light per photon
        unit += (1 - ry) * rx * flat_tables[at - 1]
        unit += ry * (1 - rx) * flat_tables[at - size]
        unit += ry * rx * flat_tables[at - size - 1]
        own = emitter[rows]  # (n,)
        keep = reach[own]
        own, n_ph, frame = own[keep], photons[rows][keep].float(), frame_index[rows][keep].long()
        values = unit[own - e0] * n_ph[:, None, None]  # (n, P, P)
        where = (frame * canvas_h + row0[own].long() + pad) * canvas_w + col0[own].long() + pad  # (n,)
        canvas.index_add_(0, (where[:, None, None] + patch_canvas).reshape(-1), values.reshape(-1))
    canvas = canvas.reshape(n_frames, canvas_h, canvas_w)
    return canvas[:, pad : pad + height, pad : pad + width].contiguous()
