"""Large frames cut into overlapping tiles, each detection kept by exactly one tile.

A frame larger than ``tile_size`` on a side is replicate-padded to a multiple of the model's
coarsest stride (``config.pad_multiple``, exactly the padding the model applies itself), then
covered by tiles of one common size whose origins are multiples of that stride, so that every
level's cells in a tile coincide with the cells of the whole frame. The frame is partitioned into
non-overlapping *cores*, one per tile; each core lies inside its tile with at least ``margin``
pixels of context on every side that is not the frame's edge.

A detection belongs to the tile whose core holds its *cell* (the grid cell that fired, not the
sub-pixel position): cells do not move between tiles, so an emitter on a seam is found by both
neighbouring tiles at the same cell and kept by exactly one of them. Maps are stitched from the
cores in the same way.

Shapes: B frames, K tiles per frame, N = B * K tiles in a batch ordered (frame, tile).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

DEFAULT_TILE_SIZE = 256  # pixels; attention over the coarse levels costs ~ (pixels of a tile)^2
DEFAULT_MARGIN = 16  # pixels of context around each core (rounded up to the model's pad multiple)


@dataclass(frozen=True)
class Tile:
    """One tile: its origin in the padded frame and the core it owns, in frame pixels."""

    y0: int
    x0: int
    core_y: tuple[int, int]  # [start, stop) rows owned, in the padded frame
    core_x: tuple[int, int]  # [start, stop) columns owned, in the padded frame


@dataclass(frozen=True)
class TilePlan:
    height: int  # the frame
    width: int
    padded: tuple[int, int]  # (Hp, Wp): multiples of ``multiple``
    tile_shape: tuple[int, int]  # (h, w) of every tile
    margin: int
    multiple: int
    tiles: tuple[Tile, ...]

    def __len__(self) -> int:
        return len(self.tiles)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _axis(length: int, tile: int, margin: int, multiple: int) -> tuple[int, list[tuple[int, int, int]]]:
    """Tile length and (origin, core start, core stop) along one padded axis of ``length``."""
    if length <= tile:
        return length, [(0, 0, length)]
    n = math.ceil(length / (tile - 2 * margin))
    cells = length // multiple
    bounds = [round(k * cells / n) * multiple for k in range(n + 1)]
    size = min(length, max(b - a for a, b in zip(bounds, bounds[1:], strict=False)) + 2 * margin)
    parts = []
    for a, b in zip(bounds, bounds[1:], strict=False):
        origin = min(max(a - margin, 0), length - size)
        parts.append((origin, a, b))
    return size, parts


def plan_tiles(
    height: int, width: int, tile_size: int, margin: int = DEFAULT_MARGIN, multiple: int = 1
) -> TilePlan:
    """Cover a ``height x width`` frame with tiles of at most ``tile_size`` px a side (after
    rounding to ``multiple``); a frame that fits gets one tile, the whole (padded) frame."""
    multiple = max(1, int(multiple))
    margin = _round_up(max(0, int(margin)), multiple)
    tile = _round_up(int(tile_size), multiple)
    if tile - 2 * margin < multiple:
        raise ValueError(
            f"tile size {tile_size} leaves no core with a margin of {margin} px: "
            f"use a tile size of at least {2 * margin + multiple}"
        )
    Hp, Wp = _round_up(height, multiple), _round_up(width, multiple)
    th, rows = _axis(Hp, tile, margin, multiple)
    tw, cols = _axis(Wp, tile, margin, multiple)
    tiles = tuple(Tile(y0, x0, (cy0, cy1), (cx0, cx1)) for y0, cy0, cy1 in rows for x0, cx0, cx1 in cols)
    return TilePlan(height, width, (Hp, Wp), (th, tw), margin, multiple, tiles)


def cut(x_BCHW: torch.Tensor, plan: TilePlan) -> torch.Tensor:
    """Frames (B, C, H, W) -> tiles (B * K, C, th, tw), ordered (frame, tile)."""
    H, W = x_BCHW.shape[-2:]
    Hp, Wp = plan.padded
    if (Hp, Wp) != (H, W):  # the model's own padding: replicate at the bottom and right
        x_BCHW = F.pad(x_BCHW, (0, Wp - W, 0, Hp - H), mode="replicate")
    th, tw = plan.tile_shape
    tiles = [x_BCHW[:, :, t.y0 : t.y0 + th, t.x0 : t.x0 + tw] for t in plan.tiles]
    return torch.stack(tiles, dim=1).flatten(0, 1)


def owned(plan: TilePlan, tile_index, cell_y: torch.Tensor, cell_x: torch.Tensor, stride: float):
    """Mask of detections whose cell (centre given in tile pixels) lies in the core of its tile
    and exists in the whole frame's output (which has ceil(H / stride) cells, not the padding's).

    Pixel i covers [i - 0.5, i + 0.5): a core [a, b) is the interval [a - 0.5, b - 0.5), and cell
    boundaries fall on core boundaries because both are multiples of the level's stride.
    """
    dev = cell_y.device
    y0 = torch.tensor([t.y0 for t in plan.tiles], device=dev, dtype=cell_y.dtype)[tile_index]
    x0 = torch.tensor([t.x0 for t in plan.tiles], device=dev, dtype=cell_x.dtype)[tile_index]
    cy = torch.tensor([t.core_y for t in plan.tiles], device=dev, dtype=cell_y.dtype)[tile_index]
    cx = torch.tensor([t.core_x for t in plan.tiles], device=dev, dtype=cell_x.dtype)[tile_index]
    gy, gx = cell_y + y0 + 0.5, cell_x + x0 + 0.5
    in_core = (gy >= cy[:, 0]) & (gy < cy[:, 1]) & (gx >= cx[:, 0]) & (gx < cx[:, 1])
    return in_core & (gy - stride / 2 < plan.height) & (gx - stride / 2 < plan.width)


def stitch(map_Nhw: torch.Tensor, plan: TilePlan, stride: float, out_bhw, first: int = 0) -> None:
    """Write the cores of tile maps into frame maps.

    ``map_Nhw``: one level's maps of N consecutive tiles, the first being tile ``first`` of the
    (frame, tile) order; ``out_bhw``: (B, ceil(H / stride), ceil(W / stride)) for the B frames.
    """
    K = len(plan.tiles)
    h_out, w_out = out_bhw.shape[-2:]
    for n in range(map_Nhw.shape[0]):
        b, k = divmod(first + n, K)
        t = plan.tiles[k]
        # core bounds in cells of this level: in the frame, then in the tile
        r0, r1 = round(t.core_y[0] / stride), min(round(t.core_y[1] / stride), h_out)
        c0, c1 = round(t.core_x[0] / stride), min(round(t.core_x[1] / stride), w_out)
        ty, tx = round(t.y0 / stride), round(t.x0 / stride)
        out_bhw[b, r0:r1, c0:c1] = map_Nhw[n, r0 - ty : r1 - ty, c0 - tx : c1 - tx]
