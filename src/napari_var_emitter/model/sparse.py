"""The sparse finest level of inference: computed only on the cells around the emitters the level
before sees, as rows of (cells, channels) instead of whole maps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Cells left out get this logit (probability 1e-13), and a batch where more than this fraction of
# cells would be computed runs the level densely.
EMPTY_LOGIT = -30.0
SPARSE_MAX_FRACTION = 0.5
# The gate of inference (runtime.InferenceRunner): on the validation movies, no candidate of the
# dense finest level (integrated probability >= 0.1) lay outside the cells it opens at 0.01 or
# 0.03; at 0.1 a few did (training/DESIGN-CHOICES.md).
SPARSE_GATE = 0.01


def bucketed(cells_N: torch.Tensor) -> torch.Tensor:
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


def rows_at(module: nn.Module, src_BChw: torch.Tensor, cells_N: torch.Tensor, grid) -> torch.Tensor:
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
