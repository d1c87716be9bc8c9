"""A simulated bead z-stack: what ``calibrate --beads`` measures, with the PSF it was drawn with.

Beads are point sources (far below the resolution) at random sub-pixel positions on a grid with
room between them, each drawn with the pupil PSF (psf.py) at every focal plane of the scan, with a
uniform background and the camera's noise (``optics.apply_camera``: shot noise, EM gain, read noise,
offset; docs/CONVENTIONS.md, section 2).
"""

from __future__ import annotations

import numpy as np
import torch

from ..camera import Camera
from .optics import apply_camera
from .psf import psf_radius_px, pupil_tables, render_pupil


def simulate_beads(
    *,
    na: float = 1.4,
    wavelength_nm: float = 680.0,
    spherical_waves: float = 0.0,
    planes_nm: tuple[float, ...] = (0.0,),
    beads: int = 25,
    photons: float = 50_000.0,
    background: float = 100.0,
    frame_size: int = 128,
    camera: Camera | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, torch.Tensor]:
    """ADU (Z, H, W), one plane per defocus of ``planes_nm``, and the pixel tables (Z, S, S) they
    were drawn with."""
    camera = camera or Camera(em_gain=1.0, e_per_adu=1.0, read_noise_e=1.5)
    px = camera.pixel_size_nm
    generator = torch.Generator().manual_seed(seed)
    defocus = max(abs(z) for z in planes_nm)
    radius = psf_radius_px(na, wavelength_nm, defocus, px)
    z = torch.tensor([float(p) for p in planes_nm])
    k = len(z)
    tables, _ = pupil_tables(
        torch.full((k,), na),
        torch.full((k,), wavelength_nm),
        z,
        torch.full((k,), spherical_waves),
        px,
        radius,
    )
    side = int(np.ceil(np.sqrt(beads)))
    margin = radius + 4  # room for a measurement's patch, which may reach a little further
    spacing = (frame_size - 2 * margin) / max(side - 1, 1)
    grid = torch.arange(side, dtype=torch.float32) * spacing + margin
    gy, gx = torch.meshgrid(grid, grid, indexing="ij")
    jitter = torch.rand((2, side * side), generator=generator) - 0.5
    x, y = (gx.reshape(-1) + jitter[0])[:beads], (gy.reshape(-1) + jitter[1])[:beads]
    n = len(x)
    planes = len(planes_nm)
    index = torch.arange(planes).repeat_interleave(n)  # row r: plane r // n
    expected = render_pupil(
        x.repeat(planes),
        y.repeat(planes),
        torch.full((planes * n,), photons),
        index,
        tables,
        index,
        planes,
        frame_size,
        frame_size,
    )
    adu = apply_camera(expected + background, camera, generator)
    return adu.numpy(), tables
