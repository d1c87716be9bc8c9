"""Local attention for frames larger than the training frames: each attention level attends within
overlapping windows of its training grid plus a margin (a KV cache per window), at a cost linear in
the frame's area instead of quadratic."""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Context of each window beyond its core, in tokens of the coarsest level (8 px for the default preset).
ATTENTION_MARGIN = 1


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
