"""Neighbours among localizations, and duplicate removal: torch, on any device, no loop.

A grid of cells of the search radius: each point looks into its own cell and the 8 around it,
found in the sorted cell keys by binary search (no tree; memory N x 9 x the fullest cell). Used by
the maximum-likelihood refinement (:mod:`.refine`), by prediction and by the classical baseline.
"""

from __future__ import annotations

import numpy as np
import torch


def neighbour_pairs(frame: torch.Tensor, x: torch.Tensor, y: torch.Tensor, radius: float) -> torch.Tensor:
    """(P, 2) ordered pairs (i, j), i != j, of one frame at most ``radius`` px apart."""
    empty = torch.zeros((0, 2), dtype=torch.int64, device=x.device)
    n = len(x)
    if n < 2:
        return empty
    cx = torch.floor(x / radius).long()
    cy = torch.floor(y / radius).long()
    cx, cy = cx - cx.min() + 1, cy - cy.min() + 1  # a free cell on every side: offsets stay in the frame
    nx, ny = int(cx.max()) + 2, int(cy.max()) + 2
    key = (frame.long() * ny + cy) * nx + cx
    sorted_key, order = torch.sort(key)
    fullest = int(torch.unique_consecutive(sorted_key, return_counts=True)[1].max())
    d = torch.tensor([-1, 0, 1], device=x.device)
    offsets = (d[:, None] * nx + d[None, :]).reshape(-1)  # the 9 cells around
    wanted = key[:, None] + offsets[None, :]  # (N, 9)
    first = torch.searchsorted(sorted_key, wanted)  # (N, 9)
    slot = first[:, :, None] + torch.arange(fullest, device=x.device)  # (N, 9, fullest)
    inside = slot < n
    slot = slot.clamp(max=n - 1)
    hit = inside & (sorted_key[slot] == wanted[:, :, None])
    i = torch.arange(n, device=x.device)[:, None, None].expand_as(slot)[hit]
    j = order[slot[hit]]
    close = (i != j) & (torch.hypot(x[i] - x[j], y[i] - y[j]) <= radius)
    return torch.stack([i[close], j[close]], dim=1)


def dedupe(frame: torch.Tensor, x: torch.Tensor, y: torch.Tensor, score: torch.Tensor, min_dist: float):
    """Boolean mask to keep: of two detections of one frame at most ``min_dist`` px apart, the one
    with the higher score (the first on a tie)."""
    keep = torch.ones(len(x), dtype=torch.bool, device=x.device)
    pairs = neighbour_pairs(frame, x, y, min_dist)
    i, j = pairs[:, 0], pairs[:, 1]
    first = i < j
    i, j = i[first], j[first]
    keep[torch.where(score[i] >= score[j], j, i)] = False
    return keep


def dedupe_indices(frame, x, y, score, min_dist: float) -> np.ndarray:
    """:func:`dedupe` for numpy arrays: the indices to keep."""
    columns = (torch.as_tensor(np.asarray(v)) for v in (frame, x, y, score))
    return np.nonzero(dedupe(*columns, min_dist).numpy())[0]
