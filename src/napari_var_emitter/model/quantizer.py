"""VAR's token chain: each level's emitter probability quantized into tokens, embedded, passed
through the Phi residual convs and accumulated in ``f_hat``, which is area-downsampled into the
next level's input (``EmitterVectorQuantizer.get_next_autoregressive_input``, as VAR's own)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .ops import area_downsample, resize_bicubic


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
