"""Tiling of large frames: the plan's geometry, maps stitched back, seam emitters found exactly once.

``LocalNet`` is a stand-in network whose outputs depend only on the pixels within 4 px (a smoothed
image's local maxima, their 3x3 centroids): with it a tiled run must equal the untiled run, so any
duplicate or loss at a seam is the tiling's fault. The bundled model (global attention over coarse
levels) is then checked for agreement between tiled and untiled runs.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree

from napari_var_emitter.camera import Camera
from napari_var_emitter.errors import InputError
from napari_var_emitter.localize import load_model, predict
from napari_var_emitter.localize.refine import CONFIRM_FLOOR
from napari_var_emitter.localize.tiling import cut, plan_tiles, stitch
from napari_var_emitter.model import ModelConfig
from napari_var_emitter.model.checkpoint import EmitterModel
from napari_var_emitter.simulation import apply_camera, render_expected

# ---------------------------------------------------------------------------------------------------
# the plan


@pytest.mark.parametrize(
    "height, width", [(64, 64), (65, 200), (96, 96), (257, 513), (1000, 37), (2048, 2048)]
)
@pytest.mark.parametrize("tile, margin, multiple", [(48, 8, 8), (128, 16, 8), (256, 16, 8), (160, 16, 16)])
def test_cores_partition_the_frame_and_keep_their_margin(height, width, tile, margin, multiple):
    plan = plan_tiles(height, width, tile, margin, multiple)
    Hp, Wp = plan.padded
    assert Hp % multiple == 0 and Wp % multiple == 0 and Hp - height < multiple and Wp - width < multiple
    th, tw = plan.tile_shape
    assert th <= max(tile, Hp) and tw <= max(tile, Wp) and th <= Hp and tw <= Wp
    if max(height, width) <= tile:
        assert len(plan) == 1
    count = np.zeros((Hp, Wp), int)
    for t in plan.tiles:
        assert t.y0 % multiple == 0 and t.x0 % multiple == 0
        assert 0 <= t.y0 and t.y0 + th <= Hp and 0 <= t.x0 and t.x0 + tw <= Wp
        (a, b), (c, d) = t.core_y, t.core_x
        assert all(v % multiple == 0 for v in (a, b, c, d))
        assert t.y0 <= a < b <= t.y0 + th and t.x0 <= c < d <= t.x0 + tw
        # a side that is not the frame's edge has at least `margin` px of context
        assert a == 0 or a - t.y0 >= margin
        assert b == Hp or t.y0 + th - b >= margin
        assert c == 0 or c - t.x0 >= margin
        assert d == Wp or t.x0 + tw - d >= margin
        count[a:b, c:d] += 1
    assert np.all(count == 1)  # every pixel owned by exactly one tile


def test_a_tile_too_small_for_its_margin_is_refused():
    with pytest.raises(ValueError, match="no core"):
        plan_tiles(300, 300, 32, 16, 8)
    frames = np.zeros((1, 300, 300), np.uint16)
    tiny = EmitterModel(net=LocalNet(), threshold=0.5)
    with pytest.raises(InputError, match="tile size"):
        predict(frames, tiny, Camera(), device="cpu", tile_size=32, tile_margin=16)


@pytest.mark.parametrize("stride", [0.5, 1, 2, 8])
def test_cut_then_stitch_gives_the_frame_back(stride):
    H, W = 93, 150
    plan = plan_tiles(H, W, 48, 8, 8)
    frames = torch.rand(2, 1, H, W)
    tiles = cut(frames, plan)  # (2 * K, 1, th, tw)
    assert tiles.shape == (2 * len(plan), 1, *plan.tile_shape)

    def level(x):  # a map on a grid of `stride` input pixels per cell, cells aligned on the origin
        return F.interpolate(x, scale_factor=2, mode="nearest") if stride < 1 else F.avg_pool2d(x, stride)

    Hp, Wp = plan.padded
    expected = level(F.pad(frames, (0, Wp - W, 0, Hp - H), mode="replicate"))[:, 0]
    expected = expected[:, : math.ceil(H / stride), : math.ceil(W / stride)]
    out = np.full(expected.shape, np.nan, np.float32)
    tile_maps = level(tiles)[:, 0].numpy()
    for g in range(0, len(tile_maps), 5):  # in groups that split frames, as predict's batches do
        stitch(tile_maps[g : g + 5], plan, stride, out, first=g)
    np.testing.assert_array_equal(out, expected.numpy())


# ---------------------------------------------------------------------------------------------------
# a local stand-in network


class LocalNet(torch.nn.Module):
    """Outputs that depend on pixels within 4 px only: a cell fires (logit +8) where the 5x5-smoothed
    photons are a 3x3 maximum above ``level`` (-8 elsewhere); offsets are the 3x3 centroid.
    Coarse levels are the smoothed image averaged over their cells."""

    def __init__(self, level: float = 150.0):
        super().__init__()
        self.config = ModelConfig()
        self.level = level
        g = torch.exp(-0.5 * torch.arange(-2.0, 3.0) ** 2)
        self.register_buffer("kernel", (g[:, None] * g[None, :] / g.sum() ** 2)[None, None])

    def forward(self, x, num_levels=None, sparse_gate=None, local_attention=False):  # dense, local
        H, W = x.shape[-2:]
        m = self.config.pad_multiple
        xp = F.pad(x, (0, (-W) % m, 0, (-H) % m), mode="replicate")
        smooth = F.conv2d(F.pad(xp, (2, 2, 2, 2), mode="replicate"), self.kernel)  # (B, 1, Hp, Wp)
        peak = (smooth == F.max_pool2d(smooth, 3, 1, padding=1)) & (smooth > self.level)
        d = torch.arange(-1.0, 2.0)
        win = F.unfold(F.pad(smooth, (1, 1, 1, 1), mode="replicate"), 3)
        w = win.reshape(x.shape[0], 3, 3, *smooth.shape[-2:])  # (B, dy, dx, Hp, Wp)
        w = w - w.amin(dim=(1, 2), keepdim=True)
        total = w.sum(dim=(1, 2))
        dx = (w * d[None, None, :, None, None]).sum(dim=(1, 2)) / total
        dy = (w * d[None, :, None, None, None]).sum(dim=(1, 2)) / total
        outputs = []
        n = len(self.config.patch_nums) if num_levels is None else num_levels
        for s in self.config.strides[:n]:
            h, w_ = math.ceil(H / s), math.ceil(W / s)
            if s == 1:
                logits = torch.where(peak[:, 0], 8.0, -8.0)
                offset = torch.stack([dx, dy], 1).clamp(-0.99, 0.99)
            else:
                grid = F.avg_pool2d(smooth, int(s)) if s > 1 else F.interpolate(smooth, scale_factor=1 / s)
                logits, offset = grid[:, 0] / 100.0 - 2.0, torch.zeros(x.shape[0], 2, *grid.shape[-2:])
            ones = torch.ones_like(logits)
            out = {
                "logits": logits,
                "offset": offset,
                "photons": ones * 1000.0,
                "sigma": torch.stack([ones, ones], 1) * 0.1,
                "photon_sigma": ones,
                "background": ones * 50.0,
            }
            out = {k: v[..., :h, :w_] for k, v in out.items()}
            out["stride"] = s
            outputs.append(out)
        return outputs


SEAM_PHOTONS = 4000.0  # every emitter of the seam movie


def _seam_movie(seams=(31.5, 63.5), offsets=(-0.5, -0.3, -0.05, 0.0, 0.05, 0.3, 0.5), size=96, seed=0):
    """Frames with emitters on and beside the seams of a 48/8 plan of a 96 px frame (at 31.5 and
    63.5: cores [0, 32), [32, 64), [64, 96)), the crossings included; one offset per frame."""
    xs, ys, ts = [], [], []
    for t, d in enumerate(offsets):
        for s in seams:
            for a in (8.0, 20.0, 44.0, 76.0, 88.0):
                xs += [s + d, a]
                ys += [a, s + d]
                ts += [t, t]
        for cy in seams:
            for cx in seams:
                xs.append(cx + d)
                ys.append(cy - d)
                ts.append(t)
    x, y, t = torch.tensor(xs), torch.tensor(ys), torch.tensor(ts)
    expected = render_expected(
        x, y, torch.full_like(x, SEAM_PHOTONS), torch.full_like(x, 1.2), t, len(offsets), size, size
    )
    frames = apply_camera(expected + 50.0, Camera(), torch.Generator().manual_seed(seed))
    return frames.numpy().astype(np.uint16), np.array(xs), np.array(ys), np.array(ts)


def _counts_near(locs, xs, ys, ts, radius):
    return np.array(
        [
            int(np.sum((locs.frame == t) & ((locs.x - x) ** 2 + (locs.y - y) ** 2 < radius**2)))
            for x, y, t in zip(xs, ys, ts, strict=True)
        ]
    )


def test_emitters_on_tile_seams_are_found_exactly_once():
    frames, xs, ys, ts = _seam_movie()
    assert plan_tiles(96, 96, 48, 8, 8).tiles[1].core_x == (32, 64)  # the seams are where we put them
    model = EmitterModel(net=LocalNet(), threshold=0.5)
    kw = dict(device="cpu", precision="fp32")  # bf16 would make ties of LocalNet's maxima
    tiled = predict(frames, model, Camera(), tile_size=48, tile_margin=8, **kw).localizations
    untiled = predict(frames, model, Camera(), tile_size=None, **kw).localizations
    assert len(xs) == 168
    counts = _counts_near(tiled, xs, ys, ts, radius=1.0)
    assert np.all(counts == 1), f"found {np.bincount(counts)} times (index = times found)"
    assert len(tiled) == len(xs)  # nothing else either
    # and exactly what the whole frame gives, row for row, in the same order
    np.testing.assert_array_equal(tiled.frame, untiled.frame)
    for name in ("x", "y", "photons", "probability", "uncertainty"):
        np.testing.assert_allclose(getattr(tiled, name), getattr(untiled, name), atol=1e-5)


def test_tiled_maps_and_odd_sizes_match_the_whole_frame():
    frames = _seam_movie(size=96)[0][:3, :93, :75]  # not multiples of the pad multiple
    model = EmitterModel(net=LocalNet(), threshold=0.5)
    kw = dict(device="cpu", maps=(0, 2, 3), batch_size=4, precision="fp32")
    tiled = predict(frames, model, Camera(), tile_size=40, tile_margin=8, **kw)
    untiled = predict(frames, model, Camera(), tile_size=None, **kw)
    assert len(tiled.localizations) == len(untiled.localizations) > 10
    np.testing.assert_allclose(tiled.localizations.x, untiled.localizations.x, atol=1e-5)
    for m in (0, 2, 3):
        assert tiled.maps[m].data.shape == untiled.maps[m].data.shape
        np.testing.assert_allclose(tiled.maps[m].data, untiled.maps[m].data, atol=1e-5)


# ---------------------------------------------------------------------------------------------------
# the bundled model


@pytest.fixture(scope="module")
def bundled():
    return load_model(None)


def test_bundled_model_finds_seam_emitters_as_often_as_the_whole_frame_does(bundled):
    # The model itself (untiled too) may report an emitter near a pixel edge twice, ~0.05 px apart
    # (the post-processing keeps a neighbour above 0.6): the tiles must add no duplicate and lose none.
    # Tiles of the training frames' size with the default margin (64 / 16: the same cores as 48 / 8 on
    # 96 px). With 48 px tiles and 8 px margins, less context than the model was trained with, the
    # bundled one-frame model adds two detections of ~260 photons 4-6 px from bright emitters, inside
    # tile cores: a context effect of the model, not of the seams.
    frames, xs, ys, ts = _seam_movie(offsets=(-0.3, -0.2, 0.2, 0.3))
    tiled = predict(frames, bundled, device="cpu", tile_size=64, tile_margin=16).localizations
    untiled = predict(frames, bundled, device="cpu", tile_size=None).localizations
    counts = _counts_near(tiled, xs, ys, ts, radius=1.5)
    assert np.all(counts >= 1)
    np.testing.assert_array_equal(counts, _counts_near(untiled, xs, ys, ts, radius=1.5))
    # Anything else found by one run and not the other is a borderline call or the model's context
    # effect, never a seam defect (a duplicate or a loss of a true emitter at full brightness). A
    # detection whose probability sits on the threshold flips with the CPU's float rounding (one at
    # 0.7007 against 0.7 was seen); with the 64 / 16 plan the bundled one-frame model adds one dim
    # detection (~270 photons, probability 0.95) 7.7 px from three bright emitters, where the whole
    # frame's context says there is none.
    different = _unmatched(tiled, untiled) + _unmatched(untiled, tiled)
    assert len(different) <= 2, different
    for probability, photons, x, y, t in different:
        borderline = min(abs(probability - bundled.threshold), abs(probability - CONFIRM_FLOOR)) < 0.02
        here = ts == t
        far_and_dim = np.hypot(xs[here] - x, ys[here] - y).min() > 3.0 and photons < 0.1 * SEAM_PHOTONS
        assert borderline or far_and_dim, (probability, photons, x, y, t)


def _unmatched(a, b, radius=0.05) -> list[tuple[float, float, float, float, int]]:
    """(probability, photons, x, y, frame) of the detections of ``a`` with none of ``b`` within
    ``radius`` px in their frame."""
    out = []
    for k in np.unique(a.frame):
        here, there = a.in_frame(k), b.in_frame(k)
        rows = zip(here.probability, here.photons, here.x, here.y, [k] * len(here.x), strict=True)
        if len(there) == 0:
            out += list(rows)
            continue
        distance, _ = cKDTree(np.c_[there.x, there.y]).query(np.c_[here.x, here.y])
        out += [row for row, d in zip(rows, distance, strict=True) if d > radius]
    return out


def test_bundled_model_tiled_agrees_with_untiled(bundled):
    rng = np.random.default_rng(3)
    n, size = 3, 128
    x, y = np.tile(rng.uniform(2, size - 3, (2, 60)), n)  # 60 emitters, on in all n frames
    t = np.repeat(np.arange(n), 60)
    expected = render_expected(
        *map(torch.tensor, (x, y, rng.uniform(1500, 6000, x.size), np.full(x.size, 1.2), t)), n, size, size
    )
    frames = apply_camera(expected + 60.0, Camera(), torch.Generator().manual_seed(1)).numpy()
    untiled = predict(frames, bundled, device="cpu", tile_size=None).localizations
    tiled = predict(frames, bundled, device="cpu", tile_size=64, tile_margin=16).localizations
    assert abs(len(tiled) - len(untiled)) <= 0.03 * len(untiled)
    dist = np.concatenate(
        [
            cKDTree(np.c_[untiled.in_frame(k).x, untiled.in_frame(k).y]).query(
                np.c_[tiled.in_frame(k).x, tiled.in_frame(k).y]
            )[0]
            for k in range(n)
        ]
    )
    assert np.mean(dist < 0.5) > 0.97
    assert np.median(dist) < 0.05  # px: 5 nm
