"""The PSF models the maximum-likelihood refinement fits: an integrated Gaussian, or a measured PSF.

Each model is a callable ``model(theta, box, with_jacobian)``: theta (N, 5) = (x, y, photons,
background, sigma) in box pixels (pixel centres at 0..box-1); it returns the expected photons
mu (N, box, box) and, if asked, d mu / d (x, y, photons, background) (N, 4, box, box). torch, on
theta's device and in its dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..measured_psf import MeasuredPsf


def gaussian_model(theta_N5: torch.Tensor, box: int, with_jacobian: bool):
    """Integrated Gaussian + background on a (box, box) grid: ``classical.gaussian_model`` in torch.

    theta = (x, y, photons, background, sigma) in box pixels (pixel centres at 0..box-1).
    Returns mu (N, box, box) and, if asked, d mu / d (x, y, photons, background): (N, 4, box, box).
    """
    grid = torch.arange(box, dtype=theta_N5.dtype, device=theta_N5.device)[None]
    x, y, n, b, s = (theta_N5[:, k : k + 1] for k in range(5))
    r2s = math.sqrt(2.0) * s
    ax, cx = (grid - x + 0.5) / r2s, (grid - x - 0.5) / r2s  # (N, B) upper and lower pixel edges
    ay, cy = (grid - y + 0.5) / r2s, (grid - y - 0.5) / r2s
    ex = 0.5 * (torch.erf(ax) - torch.erf(cx))  # (N, B) fraction of the PSF in each column
    ey = 0.5 * (torch.erf(ay) - torch.erf(cy))  # (N, B) ... in each row
    psf = ey[:, :, None] * ex[:, None, :]  # (N, B, B) rows = y, cols = x
    mu = b[:, :, None] + n[:, :, None] * psf
    if not with_jacobian:
        return mu, None
    norm = math.sqrt(2 * math.pi) * s
    dex_dx = (torch.exp(-(cx**2)) - torch.exp(-(ax**2))) / norm
    dey_dy = (torch.exp(-(cy**2)) - torch.exp(-(ay**2))) / norm
    nn = n[:, :, None]
    jac = torch.stack(
        [
            nn * ey[:, :, None] * dex_dx[:, None, :],
            nn * dey_dy[:, :, None] * ex[:, None, :],
            psf,
            torch.ones_like(psf),
        ],
        dim=1,
    )
    return mu, jac


class TableModel:
    """A measured PSF (:class:`..measured_psf.MeasuredPsf`, a pixel table) + background; sigma unused.

    A pixel's fraction of the light is the table read at the offset of the pixel's centre from the
    emitter, interpolated bilinearly between its samples (1/8 pixel apart, ``grid_sample``); its
    derivatives are the table's central differences, interpolated the same way. Pixels beyond the
    table get no light.
    """

    def __init__(self, psf: MeasuredPsf, device: torch.device, dtype: torch.dtype) -> None:
        table = torch.as_tensor(psf.table, dtype=dtype, device=device)
        step = 1.0 / psf.oversample
        d_rows, d_cols = torch.gradient(table, spacing=step)  # per pixel of offset
        self.with_jacobian = torch.stack([table, d_cols, d_rows])[None]  # (1, 3, S, S)
        self.values = table[None, None]  # (1, 1, S, S)
        # offset [px] -> grid_sample's coordinate: -1 .. 1 across the table's first to last sample
        self.scale = 2.0 * psf.oversample / (table.shape[0] - 1)

    def _read(self, offset_v: torch.Tensor, offset_u: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
        """``tables`` at offsets (N, B) rows and (N, B) columns: (K, N, B, B), K tables."""
        N, B = offset_v.shape
        gv = (offset_v * self.scale)[:, :, None].expand(N, B, B)
        gu = (offset_u * self.scale)[:, None, :].expand(N, B, B)
        grid = torch.stack([gu, gv], dim=-1).reshape(1, N, B * B, 2)  # (x, y) order
        out = F.grid_sample(tables, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        return out[0].reshape(-1, N, B, B)

    def __call__(self, theta_N5: torch.Tensor, box: int, with_jacobian: bool):
        grid = torch.arange(box, dtype=theta_N5.dtype, device=theta_N5.device)
        x, y, n, b = (theta_N5[:, k] for k in range(4))
        v, u = grid[None, :] - y[:, None], grid[None, :] - x[:, None]  # (N, B) pixel centre - emitter
        nn = n[:, None, None]
        if not with_jacobian:
            psf = self._read(v, u, self.values)[0]
            return b[:, None, None] + nn * psf, None
        psf, d_u, d_v = self._read(v, u, self.with_jacobian)
        mu = b[:, None, None] + nn * psf
        jac = torch.stack([-nn * d_u, -nn * d_v, psf, torch.ones_like(psf)], dim=1)
        return mu, jac


def model_for(psf: MeasuredPsf | None, device: torch.device, dtype: torch.dtype):
    """The refinement's model: the measured PSF where one is given, else the integrated Gaussian."""
    return gaussian_model if psf is None else TableModel(psf, device, dtype)
