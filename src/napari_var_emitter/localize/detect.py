"""The network's finest level -> detections, vectorised on the model's device (no loop per emitter).

Detection follows DECODE's spatial integration: a cell is an emitter where its probability is a
3x3 local maximum (or above 0.6 beside one, so that neighbours are not lost), scored by the sum
of the probability over it and its 4 neighbours, then thresholded. Frames cut into tiles
(:mod:`.tiling`) give the detections of the whole frame: each is kept by the tile whose core holds
its cell, and they come out in the order of an untiled run (frame, cell row, cell column).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .tiling import TilePlan, owned


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


def detections(level: dict, threshold: float, height: int, width: int) -> dict[str, torch.Tensor]:
    """:func:`extract` of whole frames, ``frame`` indexing the batch."""
    det = extract(level, threshold, height, width)
    det["frame"] = det.pop("b")
    return det


def tile_detections(level: dict, threshold: float, plan: TilePlan, first: int) -> dict[str, torch.Tensor]:
    """Detections of N tiles (the first is tile ``first`` in (frame, tile) order), each kept only
    by the tile whose core holds its cell; positions in frame pixels, ``frame`` in the chunk."""
    s = level["stride"]
    th, tw = plan.tile_shape
    # Peak finding with zero offsets gives each detection's cell centre (in tile pixels) ...
    det = extract({**level, "offset": torch.zeros_like(level["offset"])}, threshold, th, tw)
    n = det.pop("b")
    row = torch.round((det["y"] + 0.5) / s - 0.5).long()
    col = torch.round((det["x"] + 0.5) / s - 0.5).long()
    # ... and the offset at that cell gives the position, as extract does for a whole frame.
    off = level["offset"][n, :, row, col].float()  # (N, 2 [x, y]) cells
    k = (n + first) % len(plan.tiles)
    y0 = torch.tensor([t.y0 for t in plan.tiles], device=n.device)[k]
    x0 = torch.tensor([t.x0 for t in plan.tiles], device=n.device)[k]
    keep = owned(plan, k, det["y"], det["x"], s)
    det["x"] = det["x"] + off[:, 0] * s + x0
    det["y"] = det["y"] + off[:, 1] * s + y0
    H, W = plan.height, plan.width
    keep &= (det["x"] >= -0.5) & (det["x"] < W - 0.5) & (det["y"] >= -0.5) & (det["y"] < H - 0.5)
    det["frame"] = (n + first) // len(plan.tiles)
    # (frame, cell row, cell column) in the whole frame: the order of an untiled run
    det["_row"], det["_col"] = row + torch.round(y0 / s).long(), col + torch.round(x0 / s).long()
    return {key: v[keep] for key, v in det.items()}


def in_untiled_order(
    dets: list[dict[str, torch.Tensor]], plan: TilePlan, stride: float
) -> dict[str, torch.Tensor]:
    """The tiles' detections in the order of an untiled run: by frame, cell row, cell column."""
    det = {k: torch.cat([d[k] for d in dets]) for k in dets[0]}
    rows, cols = math.ceil(plan.height / stride) + 2, math.ceil(plan.width / stride) + 2
    key = (det["frame"] * rows + det.pop("_row") + 1) * cols + det.pop("_col") + 1
    order = torch.argsort(key, stable=True)
    return {k: v[order] for k, v in det.items()}
