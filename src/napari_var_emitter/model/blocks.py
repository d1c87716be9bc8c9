"""The network's building blocks: the encoder and the level readers, VAR's AdaLN self-attention
block, its convolutional counterpart for large levels, and the heads with their decoded outputs.

Shapes in names: B batch, C channels, L tokens, h x w a level's grid.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .ops import ACTIVATION, GELU, channel_norm

NUM_OUTPUTS = 8  # logit, dx, dy, photons, sigma_x, sigma_y, photon_sigma, background
PHOTON_NORM = 1000.0  # photons predicted in units of PHOTON_NORM


# --------------------------------------------------------------------------- 1. encoder
class Encoder(nn.Module):
    """Full-resolution residual conv stack: (B, window, H, W) photons -> (B, C, H, W)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c = cfg.encoder_channels
        self.photon_scale = cfg.photon_scale
        self.stem = nn.Conv2d(2 * cfg.frame_window, c, 3, padding=1)
        self.blocks = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1) for _ in range(cfg.encoder_blocks))
        self.act = ACTIVATION[cfg.activation]

    def forward(self, photons_BWHW: torch.Tensor) -> torch.Tensor:
        x = photons_BWHW / self.photon_scale
        x = torch.cat([x, torch.log1p(x.clamp_min(0.0))], dim=1)
        h = self.act(self.stem(x))
        for conv in self.blocks:
            h = h + self.act(conv(h))
        return h


class LevelReader(nn.Module):
    """Reads the full-resolution encoder features onto one level's grid, losing nothing."""

    def __init__(self, in_ch: int, out_ch: int, stride: float):
        super().__init__()
        self.stride = stride
        if stride >= 1:
            s = int(stride)
            self.proj = nn.Conv2d(in_ch * s * s, out_ch, 1)
        else:
            s = int(round(1 / stride))
            self.proj = nn.ConvTranspose2d(in_ch, out_ch, s, stride=s)

    def forward(self, enc_BChw: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:  # pixel-unshuffle + 1x1 conv, done as one s x s conv of stride s
            s = int(self.stride)
            w = self.proj.weight.view(self.proj.out_channels, -1, s, s)
            return F.conv2d(enc_BChw, w, self.proj.bias, stride=s)
        return self.proj(enc_BChw)


# --------------------------------------------------------------------------- 3. blocks
class SelfAttention(nn.Module):
    """Multi-head attention with L2-normalised q, k and a learned temperature (as VAR)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.scale_mul = nn.Parameter(
            torch.full((1, num_heads, 1, 1), math.log(4 * math.sqrt(self.head_dim)))
        )

    def forward(
        self, x_BLC: torch.Tensor, attn_bias: torch.Tensor | None, kv_cache: list | None
    ) -> torch.Tensor:
        B, L, C = x_BLC.shape
        qkv = self.qkv(x_BLC).view(B, L, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, nh, L, hd)
        q = F.normalize(q, dim=-1) * self.scale_mul.clamp(max=math.log(100)).exp()
        k = F.normalize(k, dim=-1)
        if kv_cache is not None:  # inference: earlier levels' keys and values
            if kv_cache:
                k, v = torch.cat([kv_cache[0], k], dim=2), torch.cat([kv_cache[1], v], dim=2)
            kv_cache[:] = [k, v]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, scale=1.0)  # (B, nh, L, hd)
        return self.proj(out.transpose(1, 2).reshape(B, L, C))


class AdaLNSelfAttn(nn.Module):
    """VAR's block: LayerNorm without affine, modulated and gated by the level condition."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.ln = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(dim, num_heads)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x_BLC, cond_BLC, attn_bias=None, kv_cache=None):
        """cond_BLC: the level condition, (B or 1, L or 1, C): broadcast over frames and tokens, so
        one level's condition is one row, not a copy per token (the modulations are per level)."""
        gamma1, gamma2, scale1, scale2, shift1, shift2 = self.ada_lin(cond_BLC).chunk(6, dim=-1)
        x_BLC = x_BLC + self.attn(self.ln(x_BLC) * (1 + scale1) + shift1, attn_bias, kv_cache) * gamma1
        return x_BLC + self.mlp(self.ln(x_BLC) * (1 + scale2) + shift2) * gamma2


class AdaLNConvBlock(nn.Module):
    """The local counterpart of AdaLNSelfAttn for large levels: 3x3 conv mixing, same AdaLN."""

    def __init__(self, dim: int, cond_dim: int, mlp_ratio: float = 2.0, activation: str = "gelu"):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.act = ACTIVATION[activation]
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)
        self.mlp = nn.Sequential(
            nn.Conv2d(dim, hidden, 1),
            GELU(approximate="tanh") if activation == "gelu" else nn.ReLU(),
            nn.Conv2d(hidden, dim, 1),
        )
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 6 * dim))

    @staticmethod
    def _modulated_norm(h_BChw, scale, shift):
        """channel_norm(h) * (1 + scale) + shift; scale, shift: (C,) shared by the batch (fused
        into the norm as its affine) or (B, C) per frame."""
        if scale.ndim == 1:
            return channel_norm(h_BChw, scale, shift)
        return torch.addcmul(shift[:, :, None, None], channel_norm(h_BChw), 1 + scale[:, :, None, None])

    def forward(self, h_BChw, cond_BD):
        mods = self.ada_lin(cond_BD)  # cond_BD may be (1, D): one level for all frames
        if mods.shape[0] == 1:
            mods = mods[0]
        gamma1, gamma2, scale1, scale2, shift1, shift2 = mods.chunk(6, dim=-1)
        gate1, gate2 = (g.reshape(-1, g.shape[-1], 1, 1) for g in (gamma1, gamma2))  # (1 or B, C, 1, 1)
        m = self._modulated_norm(h_BChw, scale1, shift1)
        h_BChw = torch.addcmul(h_BChw, self.act(self.conv(m)), gate1)
        m = self._modulated_norm(h_BChw, scale2, shift2)
        return torch.addcmul(h_BChw, self.mlp(m), gate2)

    def forward_cells(self, h_NC, cells_N, grid_Bhw, cond_1D) -> torch.Tensor:
        """The block on N cells of a (B, h, w) grid only: rows h_NC (C channels) at the flat
        indices ``cells_N`` of that grid, one condition for all frames. The same numbers as
        ``forward`` (to rounding) at cells whose 3x3 neighbours are all among the rows; elsewhere
        the convolution sees zeros for the missing neighbours."""
        gamma1, gamma2, scale1, scale2, shift1, shift2 = self.ada_lin(cond_1D)[0].chunk(6)
        B, h, w = grid_Bhw
        C = h_NC.shape[1]
        m = F.layer_norm(h_NC, (C,), 1 + scale1, shift1, eps=1e-6)
        grid = h_NC.new_zeros(B * h * w, C)  # (B, h, w, C) memory: a channels-last map
        grid[cells_N] = m
        y = self.conv(grid.view(B, h, w, C).permute(0, 3, 1, 2))
        y = y.permute(0, 2, 3, 1).reshape(B * h * w, C)[cells_N]
        h_NC = torch.addcmul(h_NC, self.act(y), gamma1)
        m = F.layer_norm(h_NC, (C,), 1 + scale2, shift2, eps=1e-6)
        up, act, down = self.mlp
        m = F.linear(m, up.weight.flatten(1), up.bias)
        m = F.linear(act(m), down.weight.flatten(1), down.bias)
        return torch.addcmul(h_NC, m, gamma2)


class Head(nn.Module):
    """A level's prediction head: per cell, NUM_OUTPUTS raw channels."""

    def __init__(self, dim: int, stride: float):
        super().__init__()
        self.out = nn.Conv2d(dim, NUM_OUTPUTS, 1)
        nn.init.zeros_(self.out.weight)
        prior = min(0.01 * stride**2, 0.5)  # emitters are sparse: ~0.01 per pixel at the start
        with torch.no_grad():
            self.out.bias.zero_()
            self.out.bias[0] = math.log(prior / (1 - prior))

    def forward(self, h_BChw):
        return self.out(h_BChw)


def decode_outputs(raw_BOhw: torch.Tensor, photon_scale: float) -> dict[str, torch.Tensor]:
    """Raw head channels -> named, constrained maps (units: cells of the level, photons)."""
    raw = raw_BOhw.float().contiguous()  # channels-last slices would be strided: ~10x slower on a CPU
    return {
        "logits": raw[:, 0],  # (B, h, w)
        "offset": torch.tanh(raw[:, 1:3]),  # (B, 2 [x, y], h, w), cells, in (-1, 1)
        "photons": F.softplus(raw[:, 3]) * PHOTON_NORM,
        "sigma": F.softplus(raw[:, 4:6]) + 1e-3,  # (B, 2, h, w) 1-sigma position uncertainty, cells
        "photon_sigma": F.softplus(raw[:, 6]) * PHOTON_NORM + 1.0,
        "background": F.softplus(raw[:, 7]) * photon_scale,  # photons per input pixel
    }
