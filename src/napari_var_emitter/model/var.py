"""The True VAR Emitter Predictor: next-scale prediction of emitter maps.

Reading guide (shapes: B batch, C channels, L tokens, h x w a level's grid):

1. ``Encoder`` keeps the input resolution; every level reads it losslessly (pixel-unshuffle for
   coarse levels, a learned 2x up-projection for super-resolution levels).
2. ``EmitterVectorQuantizer`` turns each level's predicted emitter probability into tokens
   (``vocab_size`` levels), embeds them, and accumulates them in ``f_hat`` through the Phi
   residual convs; ``get_next_autoregressive_input`` area-downsamples ``f_hat`` to the next
   level's grid, exactly as VAR does.
3. The first ``attn_levels`` levels are token maps processed together by ``AdaLNSelfAttn``
   blocks with block-causal attention (a KV cache at inference); the large levels use
   ``AdaLNConvBlock``s (3x3 convolutions: local, linear cost) conditioned on the level in the
   same AdaLN way, with the previous level's hidden state as context.
4. Every level has its own head; its first output channel is the emitter probability logit, the
   others give what a localization needs (sub-cell offsets, photons, uncertainties, background).

Outputs of level k depend only on the image and on the tokens of levels < k: that is the
next-scale structure, and ``tests/test_model.py`` checks it bit for bit.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .config import ModelConfig


def on_channels_last_view(fn, h: torch.Tensor) -> torch.Tensor:
    """``fn(h)`` for a pointwise ``fn``, run on the (B, h, w, C) view when ``h`` is channels-last.

    The same numbers (to float rounding), in the same layout: torch's CPU GELU is ~3x slower on a
    channels-last (B, C, h, w) tensor than on the contiguous view of the same memory (measured:
    bf16, 16 x 64 x 64 x 64: 2.7 against 0.9 ms).
    """
    if h.ndim == 4 and not h.is_contiguous() and h.is_contiguous(memory_format=torch.channels_last):
        return fn(h.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    return fn(h)


ACTIVATION = {
    "gelu": functools.partial(on_channels_last_view, F.gelu),
    "relu": functools.partial(on_channels_last_view, F.relu),
}


class GELU(nn.GELU):
    """``nn.GELU`` through :func:`on_channels_last_view`."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return on_channels_last_view(super().forward, h)


NUM_OUTPUTS = 8  # logit, dx, dy, photons, sigma_x, sigma_y, photon_sigma, background
PHOTON_NORM = 1000.0  # photons predicted in units of PHOTON_NORM
# Sparse last level (inference, ``sparse_gate``): cells left out get this logit (probability 1e-13),
# and a batch where more than this fraction of cells would be computed runs the level densely.
EMPTY_LOGIT = -30.0
SPARSE_MAX_FRACTION = 0.5
# The gate of inference (runtime.InferenceRunner): on the validation movies, no candidate of the
# dense finest level (integrated probability >= 0.1) lay outside the cells it opens at 0.01 or
# 0.03; at 0.1 a few did (training/RESULTS.md).
SPARSE_GATE = 0.01
# Local attention (inference, frames larger than the training frames): context of each window
# beyond its core, in tokens of the coarsest level (8 px for the default preset).
ATTENTION_MARGIN = 1


def channel_norm(
    h_BChw: torch.Tensor, scale_C: torch.Tensor | None = None, shift_C: torch.Tensor | None = None, eps=1e-6
) -> torch.Tensor:
    """LayerNorm over channels, per pixel (independent of the rest of the frame), then
    ``* (1 + scale_C) + shift_C`` if given (an AdaLN modulation shared by the whole batch).

    One fused kernel on the channels-last view (free when the tensor is channels-last): the
    modulation rides along as the norm's affine weight and bias instead of another pass.
    """
    h_BhwC = h_BChw.permute(0, 2, 3, 1)
    weight = None if scale_C is None else 1 + scale_C
    return F.layer_norm(h_BhwC, h_BhwC.shape[-1:], weight, shift_C, eps=eps).permute(0, 3, 1, 2)


@functools.lru_cache(maxsize=64)
def _bicubic_matrix(n_in: int, n_out: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(n_out, n_in): 1-D bicubic resampling (align_corners=False) as a matrix.

    Made outside inference mode: the cached matrix also serves training, which saves it for backward.
    """
    with torch.inference_mode(False), torch.no_grad():
        eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, 1, n_in, 1)
        m = F.interpolate(eye, size=(n_out, 1), mode="bicubic", align_corners=False)[:, 0, :, 0]
        return m.T.contiguous().to(device=device, dtype=dtype)


def resize_bicubic(h_BChw: torch.Tensor, size) -> torch.Tensor:
    """``F.interpolate(h, size, mode="bicubic")``, the same numbers (to float rounding), computed
    as two small matrix products (bicubic is separable): ~10x faster on a CPU, in h's own dtype."""
    H, W = size
    h, w = h_BChw.shape[-2:]
    with torch.autocast(h_BChw.device.type, enabled=False):
        rows = _bicubic_matrix(h, H, h_BChw.device, h_BChw.dtype)  # (H, h)
        cols = _bicubic_matrix(w, W, h_BChw.device, h_BChw.dtype)  # (W, w)
        return torch.matmul(torch.matmul(rows, h_BChw), cols.T)


def dilate(mask_Bhw: torch.Tensor, r: int) -> torch.Tensor:
    """A bool (B, h, w) map grown by ``r`` cells in every direction (a (2r+1) x (2r+1) square):
    ``max_pool2d``'s answer, ~10x faster on a CPU."""
    for dim in (1, 2):
        out, n = mask_Bhw.clone(), mask_Bhw.shape[dim]
        for d in range(1, min(r, n - 1) + 1):
            out.narrow(dim, d, n - d).logical_or_(mask_Bhw.narrow(dim, 0, n - d))
            out.narrow(dim, 0, n - d).logical_or_(mask_Bhw.narrow(dim, d, n - d))
        mask_Bhw = out
    return mask_Bhw


def area_downsample(h_BChw: torch.Tensor, size) -> torch.Tensor:
    """``F.interpolate(h, size, mode="area")``; whole factors as a plain average pool (faster)."""
    (H, W), (h, w) = h_BChw.shape[-2:], size
    if (H, W) == (h, w):
        return h_BChw
    if H % h == 0 and W % w == 0:
        return F.avg_pool2d(h_BChw, (H // h, W // w))
    return F.interpolate(h_BChw, size=size, mode="area")


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


# --------------------------------------------------------------------------- 2. token chain
class Phi(nn.Conv2d):
    """VAR's residual 3x3 conv applied to each level's upsampled embedding."""

    def __init__(self, dim: int, resi_ratio: float = 0.5):
        super().__init__(dim, dim, 3, padding=1)
        self.resi_ratio = resi_ratio

    def forward(self, h_BChw: torch.Tensor) -> torch.Tensor:
        """``h * (1 - r) + conv(h) * r``, computed as one convolution whose kernel has the identity
        folded into its centre (the same numbers to rounding, and no element-wise passes)."""
        r = self.resi_ratio
        identity = torch.eye(self.in_channels, dtype=self.weight.dtype, device=self.weight.device)
        weight = self.weight * r
        weight = weight + F.pad((identity * (1 - r))[:, :, None, None], (1, 1, 1, 1))
        return self._conv_forward(h_BChw, weight, self.bias * r)


class EmitterVectorQuantizer(nn.Module):
    """Tokens of emitter probability, their embedding, and VAR's residual accumulation."""

    def __init__(self, vocab_size: int, token_dim: int, strides: tuple[float, ...], num_phi: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.strides = strides
        self.embedding = nn.Embedding(vocab_size, token_dim)
        self.quant_resi = nn.ModuleList(Phi(token_dim) for _ in range(num_phi))
        # like VAR's PhiPartiallyShared: level si of SN uses the Phi nearest to si / (SN - 1)
        self.register_buffer("phi_ticks", torch.linspace(1 / (2 * num_phi), 1 - 1 / (2 * num_phi), num_phi))

    def probability_to_tokens(self, prob: torch.Tensor) -> torch.Tensor:
        return torch.round(prob.clamp(0, 1) * (self.vocab_size - 1)).long()

    def embed(self, tokens_Bhw: torch.Tensor) -> torch.Tensor:
        return self.embedding(tokens_Bhw).permute(0, 3, 1, 2)  # (B, Ct, h, w)

    def phi(self, si: int, SN: int) -> Phi:
        at = si / max(SN - 1, 1)
        n = len(self.quant_resi)
        ticks = [(2 * k + 1) / (2 * n) for k in range(n)]  # = phi_ticks, in Python (no sync)
        return self.quant_resi[min(range(n), key=lambda k: abs(ticks[k] - at))]

    def get_next_autoregressive_input(self, si: int, SN: int, f_hat: torch.Tensor, h_BChw: torch.Tensor):
        """Add level si's embedding to f_hat; return (f_hat, input of level si+1 or f_hat at the end).

        f_hat lives on the grid of the chain's last level SN-1 (VAR's ``max_HW``).
        """
        HW = f_hat.shape[-2:]
        h = h_BChw if h_BChw.shape[-2:] == HW else resize_bicubic(h_BChw, HW)
        f_hat = f_hat + self.phi(si, SN)(h)
        if si == SN - 1:
            return f_hat, f_hat
        ratio = self.strides[SN - 1] / self.strides[si + 1]
        next_hw = (round(HW[0] * ratio), round(HW[1] * ratio))
        return f_hat, area_downsample(f_hat, next_hw)


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


@dataclass(frozen=True)
class Windows:
    """Overlapping attention windows of one level's (h, w) token grid. Cores of ``core`` tokens
    cover the grid (the last one shifted back to end at the edge), each inside a window of
    ``margin`` more tokens on every side (shifted inward at the grid's edges, so that all windows
    have one size, as tiling.py does with frames). Window (ky, kx) covers grid rows ``rows[ky]``
    and columns ``cols[kx]``; grid row r is owned by window ``owner_y[r]``, where it is row
    ``at_y[r]`` (the same for columns)."""

    grid: tuple[int, int]
    rows: torch.Tensor  # (ny, window height)
    cols: torch.Tensor  # (nx, window width)
    owner_y: torch.Tensor  # (h,)
    at_y: torch.Tensor  # (h,)
    owner_x: torch.Tensor  # (w,)
    at_x: torch.Tensor  # (w,)

    @classmethod
    def plan(cls, grid, core: int, margin: int, device) -> "Windows":
        """Needs ``core + 2 * margin`` <= h, w."""

        def axis(n):
            count = -(-n // core)
            cores = (torch.arange(count, device=device) * core).clamp(max=n - core)
            first = (cores - margin).clamp(0, n - (core + 2 * margin))
            owner = (torch.arange(n, device=device) // core).clamp(max=count - 1)
            window = first[:, None] + torch.arange(core + 2 * margin, device=device)
            return window, owner, torch.arange(n, device=device) - first[owner]

        (rows, owner_y, at_y), (cols, owner_x, at_x) = axis(grid[0]), axis(grid[1])
        return cls(tuple(grid), rows, cols, owner_y, at_y, owner_x, at_x)

    def split(self, tok_BLC: torch.Tensor) -> torch.Tensor:
        """(B, h*w, C) tokens -> (B * ny * nx, window tokens, C)."""
        (h, w), B, C = self.grid, tok_BLC.shape[0], tok_BLC.shape[-1]
        grid = tok_BLC.view(B, h, w, C)
        win = grid[:, self.rows[:, None, :, None], self.cols[None, :, None, :]]  # (B, ny, nx, wh, ww, C)
        return win.reshape(-1, self.rows.shape[1] * self.cols.shape[1], C)

    def join(self, tok_NLC: torch.Tensor, B: int) -> torch.Tensor:
        """Every token back from the window that owns it: (B, h*w, C)."""
        (h, w), C = self.grid, tok_NLC.shape[-1]
        win = tok_NLC.view(B, len(self.rows), len(self.cols), self.rows.shape[1], self.cols.shape[1], C)
        y, x = (self.owner_y, self.at_y), (self.owner_x, self.at_x)
        return win[:, y[0][:, None], x[0][None, :], y[1][:, None], x[1][None, :]].reshape(B, h * w, C)


def _bucketed(cells_N: torch.Tensor) -> torch.Tensor:
    """``cells_N`` padded with copies of its last cell to one of a few lengths (4 per octave, at
    most 25 % more). A cell computed twice gives the same row twice (written back identically);
    the row counts of a movie's batches then take few distinct values, so oneDNN's cache of
    kernels per shape and the allocator stop growing (unpadded: RSS 0.5 -> 1.7 GB over 10,000
    frames of 64 x 64)."""
    n = len(cells_N)
    if n == 0:
        return cells_N
    step = 1 << max(0, n.bit_length() - 3)
    return torch.cat([cells_N, cells_N[-1:].expand(-(-n // step) * step - n)])


def _rows(module: nn.Module, src_BChw: torch.Tensor, cells_N: torch.Tensor, grid) -> torch.Tensor:
    """``module(src)`` at the flat cells ``cells_N`` of its (B, h, w) output grid, as (N, C) rows:
    computed on those cells alone for 1x1 convolutions and 2x2 stride-2 transposed ones (each
    output cell reads one input cell), else densely and then picked."""
    B, C, hs, ws = src_BChw.shape
    src = src_BChw.permute(0, 2, 3, 1).reshape(B * hs * ws, C)  # a view for channels-last maps
    if isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and (hs, ws) == tuple(grid):
        return F.linear(src[cells_N], module.weight.flatten(1), module.bias)
    if (
        isinstance(module, nn.ConvTranspose2d)
        and module.kernel_size == module.stride == (2, 2)
        and (2 * hs, 2 * ws) == tuple(grid)
    ):
        h, w = grid
        b, rest = cells_N // (h * w), cells_N % (h * w)
        y, x = rest // w, rest % w
        parent = (b * hs + y // 2) * ws + x // 2
        C_out = module.out_channels
        weight = module.weight.permute(2, 3, 1, 0).reshape(4 * C_out, -1)  # one 1x1 map per parity
        out = F.linear(src[parent], weight, module.bias.repeat(4)).view(-1, 4, C_out)  # every parity
        return out[torch.arange(len(cells_N), device=out.device), (y % 2) * 2 + x % 2]
    out = module(src_BChw)
    return out.permute(0, 2, 3, 1).reshape(-1, out.shape[1])[cells_N]


# --------------------------------------------------------------------------- 4. the model
class TrueVAREmitterPredictor(nn.Module):
    """Next-scale emitter predictor. ``model(x)`` runs the progressive levels on its own
    predictions; ``model(x, teacher_tokens=...)`` is teacher forcing (training);
    ``autoregressive_inference(x, target_resolution)`` continues the chain to finer grids.
    """

    def __init__(self, config: ModelConfig | None = None, **overrides):
        super().__init__()
        if config is None:
            config = ModelConfig(**overrides)
        elif overrides:
            config = ModelConfig.from_dict({**config.to_dict(), **overrides})
        self.config = cfg = config
        strides, C, Cc = cfg.strides, cfg.embed_dim, cfg.conv_dim
        self.num_levels = len(strides)

        # 1. encoder and per-level readers of it
        self.encoder = Encoder(cfg)
        self.readers = nn.ModuleList(
            LevelReader(cfg.encoder_channels, C if i < cfg.attn_levels else Cc, s)
            for i, s in enumerate(strides)
        )
        # 2. token chain: quantizer, word embedding, start token
        self.quantizer = EmitterVectorQuantizer(cfg.vocab_size, cfg.token_dim, strides, cfg.num_phi)
        self.word_embed = nn.ModuleList(
            nn.Conv2d(cfg.token_dim, C if i < cfg.attn_levels else Cc, 1) for i in range(self.num_levels)
        )
        # 3. attention levels: position embedding per level, level (condition) embeddings, blocks
        self.pos_embeds = nn.ParameterList(
            nn.Parameter(torch.randn(1, C, pn, pn) * 0.02) for pn in cfg.patch_nums[: cfg.attn_levels]
        )
        self.lvl_embed = nn.Embedding(self.num_levels, C)
        self.cond_embed = nn.Embedding(self.num_levels, C)
        self.blocks = nn.ModuleList(AdaLNSelfAttn(C, cfg.num_heads) for _ in range(cfg.num_layers))
        # 4. conv levels: context from the previous level, shared AdaLN conv blocks
        self.context = nn.ModuleList(
            nn.ConvTranspose2d(C if i - 1 < cfg.attn_levels else Cc, Cc, 2, stride=2)
            if i > 0
            else nn.Identity()
            for i in range(self.num_levels)
        )
        self.conv_lvl_embed = nn.Embedding(self.num_levels, Cc)
        self.conv_blocks = nn.ModuleList(
            AdaLNConvBlock(Cc, C, activation=cfg.activation) for _ in range(cfg.conv_blocks)
        )
        # 5. one head per level
        self.heads = nn.ModuleList(Head(C if i < cfg.attn_levels else Cc, s) for i, s in enumerate(strides))
        self._init_weights()

    def _init_weights(self) -> None:
        for block in list(self.blocks) + list(self.conv_blocks):
            lin = block.ada_lin[-1]
            nn.init.normal_(lin.weight, std=0.02)
            with torch.no_grad():  # gates start small (VAR), scales/shifts at zero
                dim = lin.out_features // 6
                lin.bias.zero_()
                lin.bias[: 2 * dim] = 0.1

    # ------------------------------------------------------------------ geometry
    def level_grids(self, H: int, W: int, num_levels: int | None = None) -> list[tuple[int, int]]:
        """Grid (h, w) of each level for a padded input of H x W."""
        n = self.num_levels if num_levels is None else num_levels
        return [(round(H / s), round(W / s)) for s in self.config.strides[:n]]

    def level_names(self, frame_shape) -> list[str]:
        H, W = frame_shape[-2:]
        return [
            f"{math.ceil(H / s)}x{math.ceil(W / s)}"
            for s in self.config.strides[: len(self.config.patch_nums)]
        ]

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.config.frame_window:
            raise InputError(
                f"model input must be (B, {self.config.frame_window}, H, W) photons, got {tuple(x.shape)}"
            )
        if min(x.shape[-2:]) < 1:
            raise InputError(f"frames are empty: {tuple(x.shape)}")

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        m = self.config.pad_multiple
        H, W = x.shape[-2:]
        ph, pw = (-H) % m, (-W) % m
        return F.pad(x, (0, pw, 0, ph), mode="replicate") if (ph or pw) else x

    # ------------------------------------------------------------------ building blocks
    def _attn_tokens(self, i: int, inp_BChw, enc_BChw, B: int, hw) -> torch.Tensor:
        """Token map of attention level i: chain input + image + position + level embeddings."""
        x = self.readers[i](enc_BChw)
        if self.config.chain and inp_BChw is not None:
            x = x + self.word_embed[i](inp_BChw)
        pos = self.pos_embeds[i]
        if pos.shape[-2:] != tuple(hw):
            pos = resize_bicubic(pos, hw)
        x = x + pos + self.lvl_embed.weight[i][None, :, None, None]
        return x.flatten(2).transpose(1, 2)  # (B, h*w, C)

    def _conv_level_input(self, i: int, inp_BChw, enc_BChw, prev_hidden, cells_N=None, grid=None):
        """Conv level i's input: a (B, C, h, w) map, or with ``cells_N`` only those flat cells of
        the (B, h, w) ``grid``, as (N, C) rows (the same numbers)."""

        def apply(module, src):
            return module(src) if cells_N is None else _rows(module, src, cells_N, grid)

        reader = self.readers[i]
        h = apply(reader.proj if reader.stride <= 1 else reader, enc_BChw)  # stride <= 1: proj alone
        embed = self.conv_lvl_embed.weight[i]
        h = h + (embed if cells_N is not None else embed[None, :, None, None])
        if self.config.chain:
            if inp_BChw is not None:
                h = h + apply(self.word_embed[i], inp_BChw)
            if prev_hidden is not None:
                h = h + apply(self.context[i], prev_hidden)
        return h

    def _conv_level(self, i: int, inp_BChw, enc_BChw, prev_hidden) -> torch.Tensor:
        h = self._conv_level_input(i, inp_BChw, enc_BChw, prev_hidden)
        cond = self.cond_embed.weight[i][None]  # (1, D): the same level condition for every frame
        for block in self.conv_blocks:
            h = block(h, cond)
        return h

    def _sparse_level_cells(self, prev_raw, grid, gate: float):
        """Where the last level is computed, as two bool (B, h, w) maps on its grid: ``core``, the
        cells under the previous level's cells of emitter probability above ``gate`` and their
        neighbours; ``work``, the core and every cell the blocks' 3x3 convolutions reach from it."""
        active = prev_raw[:, 0] > math.log(gate / (1 - gate))  # logit > logit(gate)
        ratio = grid[0] // active.shape[-2]
        under = active.repeat_interleave(ratio, 1).repeat_interleave(ratio, 2)[:, : grid[0], : grid[1]]
        core = dilate(under, 1)
        return core, dilate(core, len(self.conv_blocks))

    def _sparse_last_level(self, i: int, inp_BChw, enc_BChw, prev_hidden, core_Bhw, work_Bhw):
        """Level i's raw head outputs computed at the cells ``core_Bhw`` only (elsewhere: no
        emitter, logit ``EMPTY_LOGIT``). The blocks run on ``work_Bhw``, which holds every cell
        within ``len(conv_blocks)`` of the core, so the core's outputs are the dense level's."""
        B, (hh, ww) = work_Bhw.shape[0], work_Bhw.shape[1:]
        cells = _bucketed(work_Bhw.flatten().nonzero()[:, 0])
        rows = self._conv_level_input(i, inp_BChw, enc_BChw, prev_hidden, cells, (hh, ww))
        cond = self.cond_embed.weight[i][None]
        for block in self.conv_blocks:
            rows = block.forward_cells(rows, cells, (B, hh, ww), cond)
        in_core = core_Bhw.flatten()[cells]
        head = self.heads[i].out
        with torch.autocast(rows.device.type, enabled=False):  # every row: shapes from few buckets
            raw_rows = F.linear(rows.float(), head.weight.flatten(1).float(), head.bias.float())
        raw = raw_rows.new_zeros(B * hh * ww, NUM_OUTPUTS)
        raw[:, 0] = EMPTY_LOGIT
        raw[cells[in_core]] = raw_rows[in_core]
        return raw.view(B, hh, ww, NUM_OUTPUTS).permute(0, 3, 1, 2)

    def _head(self, i: int, hidden_BChw) -> torch.Tensor:
        """Level i's head, always in float32: offsets need more than bfloat16's 8 bits."""
        with torch.autocast(hidden_BChw.device.type, enabled=False):
            return self.heads[i](hidden_BChw.float())

    def _attention_windows(self, grids, device) -> list[Windows] | None:
        """Attention windows for these attention-level grids (one plan per level): cores of each
        level's training grid (``patch_nums``) with ``ATTENTION_MARGIN`` coarsest-level tokens of
        context on each side (in proportion on finer levels); None (global attention) where a
        window would not fit or would cost more than half of global attention."""
        plans, window_tokens = [], 0
        for (h, w), pn in zip(grids, self.config.patch_nums, strict=False):
            margin = ATTENTION_MARGIN * pn // self.config.patch_nums[0]
            if min(h, w) < pn + 2 * margin:
                return None
            plans.append(Windows.plan((h, w), pn, margin, device))
            window_tokens += (pn + 2 * margin) ** 2
        count = len(plans[0].rows) * len(plans[0].cols)
        tokens = sum(h * w for h, w in grids)
        return plans if 2 * count * window_tokens**2 < tokens**2 else None

    def _attn_bias(self, grids, device) -> torch.Tensor:
        """Block-causal mask: a token sees its own level and every coarser one."""
        levels = torch.cat([torch.full((h * w,), i, device=device) for i, (h, w) in enumerate(grids)])
        allowed = levels[:, None] >= levels[None, :]
        return torch.zeros(allowed.shape, device=device).masked_fill(~allowed, float("-inf"))

    # ------------------------------------------------------------------ the chain
    def _run(
        self, x, num_levels: int, teacher_tokens=None, perturb=None, sparse_gate=None, local_attention=False
    ):
        """Run levels 0..num_levels-1. With teacher_tokens: teacher forcing (block-causal
        attention in one pass); without: each level is fed the tokens of its own prediction.
        ``perturb(si, tokens) -> tokens`` may alter the tokens fed onward (tests, training).
        """
        self._check_input(x)
        H, W = x.shape[-2:]
        xp = self._pad(x)
        Hp, Wp = xp.shape[-2:]
        grids = self.level_grids(Hp, Wp, num_levels)
        SN, A = num_levels, min(self.config.attn_levels, num_levels)
        enc = self.encoder(xp)
        B = x.shape[0]
        f_hat = xp.new_zeros(B, self.config.token_dim, *grids[-1])
        if not enc.is_contiguous() and enc.is_contiguous(memory_format=torch.channels_last):
            # in the encoder's layout: adding a channels-last Phi output to an NCHW f_hat, and
            # pooling the result, were ~4x slower on a CPU (measured: 2.7 against 0.7 ms)
            f_hat = f_hat.contiguous(memory_format=torch.channels_last)
        raw_outputs = []

        def feed(si, tokens):
            nonlocal f_hat
            if perturb is not None:
                tokens = perturb(si, tokens)
            f_hat, nxt = self.quantizer.get_next_autoregressive_input(
                si, SN, f_hat, self.quantizer.embed(tokens)
            )
            return nxt

        inputs = [None] * SN
        if teacher_tokens is not None:  # VAR's idxBl_to_var_input: all next-scale inputs at once
            for si in range(SN - 1):
                inputs[si + 1] = feed(si, teacher_tokens[si])

        # attention levels
        hidden = None
        if A > 0:
            if teacher_tokens is not None:
                # (1, L, C): each token's level condition, shared by the batch
                cond = torch.cat(
                    [
                        self.cond_embed.weight[i][None, None].expand(1, h * w, -1)
                        for i, (h, w) in enumerate(grids[:A])
                    ],
                    1,
                )
                tok = torch.cat([self._attn_tokens(i, inputs[i], enc, B, grids[i]) for i in range(A)], dim=1)
                bias = self._attn_bias(grids[:A], x.device)
                for block in self.blocks:
                    tok = block(tok, cond, attn_bias=bias)
                start = 0
                for i, (h, w) in enumerate(grids[:A]):
                    hidden = tok[:, start : start + h * w].transpose(1, 2).reshape(B, -1, h, w)
                    raw_outputs.append(self._head(i, hidden))
                    start += h * w
            else:
                caches = [[] for _ in self.blocks]
                windows = self._attention_windows(grids[:A], x.device) if local_attention else None
                for i, (h, w) in enumerate(grids[:A]):
                    tok = self._attn_tokens(i, inputs[i], enc, B, (h, w))
                    if windows is not None:
                        tok = windows[i].split(tok)
                    cond_i = self.cond_embed.weight[i][None, None]  # (1, 1, C): one level
                    for block, cache in zip(self.blocks, caches, strict=False):
                        tok = block(tok, cond_i, kv_cache=cache)
                    if windows is not None:
                        tok = windows[i].join(tok, B)
                    hidden = tok.transpose(1, 2).reshape(B, -1, h, w)
                    raw = self._head(i, hidden)
                    raw_outputs.append(raw)
                    if i < SN - 1:
                        inputs[i + 1] = feed(
                            i, self.quantizer.probability_to_tokens(torch.sigmoid(raw[:, 0]))
                        )

        # conv levels
        for i in range(A, SN):
            if sparse_gate is not None and teacher_tokens is None and i == SN - 1 and i > 0:
                core, work = self._sparse_level_cells(raw_outputs[-1], grids[i], sparse_gate)
                if work.float().mean() <= SPARSE_MAX_FRACTION:
                    raw_outputs.append(self._sparse_last_level(i, inputs[i], enc, hidden, core, work))
                    continue
            hidden = self._conv_level(i, inputs[i], enc, hidden)
            raw = self._head(i, hidden)
            raw_outputs.append(raw)
            if teacher_tokens is None and i < SN - 1:
                inputs[i + 1] = feed(i, self.quantizer.probability_to_tokens(torch.sigmoid(raw[:, 0])))

        outputs = []
        for i, raw in enumerate(raw_outputs):
            s = self.config.strides[i]
            out = decode_outputs(raw[..., : math.ceil(H / s), : math.ceil(W / s)], self.config.photon_scale)
            out["stride"] = s
            outputs.append(out)
        return outputs

    def forward(
        self,
        x: torch.Tensor,
        teacher_tokens=None,
        num_levels: int | None = None,
        perturb=None,
        sparse_gate: float | None = None,
        local_attention: bool = False,
    ):
        """Every progressive level's outputs (a list of dicts, coarse to fine).

        ``sparse_gate`` (inference): the last level is computed only on the cells under the level
        before's cells of emitter probability above ``sparse_gate``, and their neighbours;
        elsewhere its probability is ~0 (``EMPTY_LOGIT``). The computed cells get the dense
        level's numbers.

        ``local_attention`` (inference, frames larger than ``train_size``): the attention levels
        attend within windows of the training frame's size plus ``ATTENTION_MARGIN`` (a KV cache
        per window), at a cost linear in the frame's area instead of quadratic; where windows would
        not fit or would cost more than half of global attention, attention stays global (see
        ``_attention_windows``).
        """
        n = len(self.config.patch_nums) if num_levels is None else num_levels
        return self._run(
            x,
            n,
            teacher_tokens=teacher_tokens,
            perturb=perturb,
            sparse_gate=sparse_gate,
            local_attention=local_attention,
        )

    def autoregressive_inference(self, x: torch.Tensor, target_resolution) -> list[dict]:
        """Run the chain until the grid reaches ``target_resolution`` (int for square input or
        (h, w)); e.g. a 40x40 input with target 80 gives 2x super-resolution."""
        H, W = x.shape[-2:]
        target = (
            (target_resolution, target_resolution)
            if isinstance(target_resolution, int)
            else target_resolution
        )
        for k, s in enumerate(self.config.strides):
            if (math.ceil(H / s), math.ceil(W / s)) == tuple(target):
                return self._run(x, k + 1)
        supported = ", ".join(f"{math.ceil(H / s)}x{math.ceil(W / s)}" for s in self.config.strides)
        raise InputError(
            f"target resolution {target} is not reachable for a {H}x{W} input; choose from {supported}"
        )

    def tokens_from_outputs(self, outputs) -> list[torch.Tensor]:
        return [self.quantizer.probability_to_tokens(torch.sigmoid(o["logits"])) for o in outputs]
