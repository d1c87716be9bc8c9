"""Image formation: the expected photons of Gaussian emitters integrated over pixels, and the
camera that turns them into ADU (docs/CONVENTIONS.md, camera model)."""

from __future__ import annotations

import math

import torch

from ..camera import Camera

# --------------------------------------------------------------------------------------------------
# 1. Rendering: expected photons of Gaussian emitters, integrated over pixels


def _pixel_fractions(
    centre: torch.Tensor, first: torch.Tensor, size: int, sigma: torch.Tensor
) -> torch.Tensor:
    """Fraction of a 1D Gaussian falling in each of ``size`` pixels starting at pixel ``first``.

    centre, first, sigma: (N,). Pixel ``k`` covers ``[k - 0.5, k + 0.5)``. Returns (N, size).
    """
    offsets = torch.arange(size + 1, device=centre.device, dtype=centre.dtype)  # (size + 1,)
    edges = first[:, None] - 0.5 + offsets[None, :]  # (N, size + 1) pixel edges
    cdf = torch.erf((edges - centre[:, None]) / (math.sqrt(2.0) * sigma[:, None]))  # (N, size + 1)
    return 0.5 * (cdf[:, 1:] - cdf[:, :-1])


def render_expected(
    x: torch.Tensor,
    y: torch.Tensor,
    photons: torch.Tensor,
    sigma: torch.Tensor,
    frame_index: torch.Tensor,
    n_frames: int,
    height: int,
    width: int,
    chunk: int = 65536,
) -> torch.Tensor:
    """Expected photons (T, H, W) of Gaussian emitters, each integrated exactly over every pixel.

    x, y, photons, sigma (pixels), frame_index: (N,). Each emitter is drawn on a square patch of
    radius ``ceil(4 * max(sigma)) + 1`` around its nearest pixel, clipped to the frame; overlapping
    patches add up, and emitters centred outside the frame still light the pixels they reach.
    """
    device = x.device
    dtype = torch.float32
    image = torch.zeros(n_frames * height * width, device=device, dtype=dtype)  # (T*H*W,)
    if x.numel() == 0:
        return image.reshape(n_frames, height, width)
    radius = int(math.ceil(4.0 * float(sigma.max()))) + 1
    size = 2 * radius + 1
    patch = torch.arange(size, device=device)  # (P,) offsets from the patch's first row / column
    for start in range(0, x.numel(), chunk):
        part = slice(start, start + chunk)
        xc, yc = x[part].to(dtype), y[part].to(dtype)  # (n,)
        s, n_ph = sigma[part].to(dtype), photons[part].to(dtype)
        t = frame_index[part].long()
        col0 = torch.round(xc).long() - radius  # (n,) first column of the patch
        row0 = torch.round(yc).long() - radius
        fx = _pixel_fractions(xc, col0.to(dtype), size, s)  # (n, P)
        fy = _pixel_fractions(yc, row0.to(dtype), size, s)  # (n, P)
        values = n_ph[:, None, None] * fy[:, :, None] * fx[:, None, :]  # (n, P, P)
        cols = col0[:, None] + patch[None, :]  # (n, P)
        rows = row0[:, None] + patch[None, :]  # (n, P)
        inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
        flat = (t[:, None, None] * height + rows[:, :, None]) * width + cols[:, None, :]  # (n, P, P)
        image.index_add_(0, flat[inside], values[inside])
    return image.reshape(n_frames, height, width)


# --------------------------------------------------------------------------------------------------
# 2. Camera


def _gamma_integer_shape(shape: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Gamma(shape, scale=1) samples for shape >= 1 (Marsaglia & Tsang 2000), vectorised.

    Uses only public torch samplers, so one generator makes it reproducible on any device.
    """
    d = shape - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.empty_like(shape)
    todo = torch.arange(shape.numel(), device=shape.device)
    d_flat, c_flat, out_flat = d.reshape(-1), c.reshape(-1), out.view(-1)
    while todo.numel() > 0:  # about 2% are rejected per round
        dd, cc = d_flat[todo], c_flat[todo]
        z = torch.randn(todo.shape, generator=generator, device=shape.device, dtype=shape.dtype)
        u = torch.rand(todo.shape, generator=generator, device=shape.device, dtype=shape.dtype)
        v = (1.0 + cc * z) ** 3
        ok = (v > 0) & (torch.log(u) < 0.5 * z * z + dd - dd * v + dd * torch.log(v.clamp_min(1e-30)))
        out_flat[todo[ok]] = (dd * v)[ok]
        todo = todo[~ok]
    return out


def camera_maps(config, batch: int, generator, device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Per-pixel sCMOS maps, one per movie, each (B, H, W) or None where the config has none.

    Read noise [e-]: ``camera.read_noise_e * exp(pixel_read_noise_spread * N(0, 1))``, a log-normal
    map of median ``read_noise_e`` (a pixel's noise variance is its value squared); offset [ADU]:
    ``N(0, pixel_offset_spread^2)``, added to the camera's baseline.
    """
    height, width = config.frame_size
    read_noise = offset = None
    if config.pixel_read_noise_spread > 0:
        z = torch.randn((batch, height, width), generator=generator, device=device)
        read_noise = config.camera.read_noise_e * torch.exp(config.pixel_read_noise_spread * z)
    if config.pixel_offset_spread > 0:
        z = torch.randn((batch, height, width), generator=generator, device=device)
        offset = config.pixel_offset_spread * z
    return read_noise, offset


def apply_camera(
    expected_photons: torch.Tensor,
    camera: Camera,
    generator: torch.Generator | None = None,
    read_noise_e: torch.Tensor | None = None,
    offset_adu: torch.Tensor | None = None,
) -> torch.Tensor:
    """Noisy ADU frames (float32, whole numbers in [0, 65535]) from expected photons (background included).

    As docs/CONVENTIONS.md, section 2: Poisson(qe * photons) electrons; Gamma(electrons, em_gain) EM
    amplification when em_gain > 1; + Normal(0, read_noise_e); / e_per_adu + baseline; rounded and
    clipped to uint16. ``read_noise_e`` (per-pixel read noise [e-]) replaces the camera's single
    value and ``offset_adu`` is added to the baseline, per pixel: maps that broadcast against the
    frames (``camera_maps``).
    """
    rate = (camera.qe * expected_photons.float()).clamp_min(0.0)
    electrons = torch.poisson(rate, generator=generator)
    if camera.em_gain > 1:
        lit = electrons > 0
        amplified = torch.zeros_like(electrons)
        amplified[lit] = _gamma_integer_shape(electrons[lit], generator) * camera.em_gain
        electrons = amplified
    read_noise = camera.read_noise_e if read_noise_e is None else read_noise_e
    if read_noise_e is not None or camera.read_noise_e > 0:
        noise = torch.randn(
            electrons.shape, generator=generator, device=electrons.device, dtype=electrons.dtype
        )
        electrons = electrons + read_noise * noise
    adu = electrons / camera.e_per_adu + camera.baseline
    if offset_adu is not None:
        adu = adu + offset_adu
    return torch.round(adu).clamp_(0.0, 65535.0)
