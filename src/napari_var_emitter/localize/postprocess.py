"""Model maps -> localizations, vectorised on the model's device (no loop per emitter).

Detection follows DECODE's spatial integration: a cell is an emitter where its probability is a
3x3 local maximum (or above 0.6 beside one, so that neighbours are not lost), scored by the sum
of the probability over it and its 4 neighbours, then thresholded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def integrated_probability(p_Bhw: torch.Tensor, raw_threshold: float = 0.1) -> torch.Tensor:
    p = p_Bhw[:, None]
    p_clip = torch.where(p > raw_threshold, p, torch.zeros_like(p))
    is_max = (p == F.max_pool2d(p_clip, 3, 1, padding=1)) & (p > raw_threshold)
    cross = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]], device=p.device, dtype=p.dtype)
    summed = F.conv2d(p, cross[None, None], padding=1)
    second = (~is_max) & (p > 0.6)
    return ((is_max | second) * summed)[:, 0]


def extract(out: dict, threshold: float, height: int, width: int) -> dict[str, torch.Tensor]:
    """One level's decoded outputs (B, ...) -> flat tensors of detections.

    Positions in input pixels (pixel centre = integer); ``b`` indexes the batch.
    """
    s = out["stride"]
    score = integrated_probability(torch.sigmoid(out["logits"]))
    b, r, c = torch.nonzero(score > threshold, as_tuple=True)
    off = out["offset"][b, :, r, c]  # (N, 2) cells
    sig = out["sigma"][b, :, r, c] * s  # (N, 2) px
    x = (c + 0.5) * s - 0.5 + off[:, 0] * s
    y = (r + 0.5) * s - 0.5 + off[:, 1] * s
    keep = (x >= -0.5) & (x < width - 0.5) & (y >= -0.5) & (y < height - 0.5)
    bg = out["background"][b, r, c]
    det = {
        "b": b,
        "x": x,
        "y": y,
        "probability": score[b, r, c].clamp(max=1.0),
        "photons": out["photons"][b, r, c],
        "background": bg,
        "bkgstd": torch.sqrt(bg.clamp_min(0)),
        "uncertainty": torch.sqrt((sig**2).mean(dim=1)),
    }
    return {k: v[keep] for k, v in det.items()}
