"""The VAR model: next-scale structure, teacher forcing vs. KV-cache inference, geometry, presets."""

import pytest
import torch

from _tiny import TINY as _TINY
from _tiny import random_tiny_net
from napari_var_emitter.errors import CheckpointError, InputError
from napari_var_emitter.model import PRESETS, ModelConfig, TrueVAREmitterPredictor, preset
from napari_var_emitter.model.loss import VAREmitterLoss, occupancy_targets

TINY = {**_TINY, "num_layers": 2}


@pytest.fixture(scope="module", params=["gelu", "relu"])
def net(request):
    return random_tiny_net(activation=request.param)


@pytest.fixture(scope="module")
def frames():
    torch.manual_seed(1)
    return torch.rand(2, 1, 32, 32) * 300


def _flip(level):
    def perturb(si, tokens):
        return (TINY["vocab_size"] - 1 - tokens) if si == level else tokens  # every token changes

    return perturb


@pytest.mark.parametrize("teacher", [False, True])
def test_perturbing_a_level_changes_only_finer_levels(net, frames, teacher):
    with torch.no_grad():
        base = net(frames)
        tokens = net.tokens_from_outputs(base) if teacher else None
        base = net(frames, teacher_tokens=tokens)
        n = len(base)
        for k in range(1, n):  # the prediction of level k-1 is the input of level k
            out = net(frames, teacher_tokens=tokens, perturb=_flip(k - 1))
            for i in range(n):
                same = torch.equal(out[i]["logits"], base[i]["logits"])
                assert same == (i < k), f"level {i} after perturbing the input of level {k}"


def test_teacher_forcing_with_own_tokens_equals_kv_cache_inference(net, frames):
    """Block-causal attention in one pass == level-by-level inference with a KV cache."""
    with torch.no_grad():
        inferred = net(frames)
        forced = net(frames, teacher_tokens=net.tokens_from_outputs(inferred))
    for a, b in zip(inferred, forced, strict=False):
        for key in ("logits", "offset", "photons", "sigma", "background"):
            torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-5)


def test_inference_feeds_each_level_its_own_prediction(net, frames):
    seen = {}

    def record(si, tokens):
        seen[si] = tokens.clone()
        return tokens

    with torch.no_grad():
        outputs = net(frames, perturb=record)
    own = net.tokens_from_outputs(outputs)
    assert sorted(seen) == list(range(len(outputs) - 1))
    for si, tokens in seen.items():
        assert torch.equal(tokens, own[si])


def test_ground_truth_reaches_levels_only_through_teacher_tokens(net, frames):
    with torch.no_grad():
        tokens = net.tokens_from_outputs(net(frames))
        zeros = [torch.zeros_like(t) for t in tokens]
        a, b = net(frames, teacher_tokens=tokens), net(frames, teacher_tokens=zeros)
    assert torch.equal(a[0]["logits"], b[0]["logits"])  # the first level has no chain input
    assert not torch.equal(a[-1]["logits"], b[-1]["logits"])


@pytest.mark.parametrize("shape", [(32, 32), (37, 50), (8, 8), (1, 1)])
def test_any_frame_size_gives_maps_covering_the_frame(net, shape):
    x = torch.rand(1, 1, *shape) * 100
    with torch.no_grad():
        outs = net(x)
    for out in outs:
        s = out["stride"]
        assert out["logits"].shape[-2:] == (-(-shape[0] // int(s)), -(-shape[1] // int(s)))
    assert net.level_names(shape)[-1] == f"{shape[0]}x{shape[1]}"


def test_super_resolution_continues_the_chain(net, frames):
    with torch.no_grad():
        prog = net(frames)
        sr = net.autoregressive_inference(frames, target_resolution=64)
    assert len(sr) == len(prog) + 1
    assert sr[-1]["logits"].shape[-2:] == (64, 64) and sr[-1]["stride"] == 0.5
    with pytest.raises(InputError, match="not reachable"):
        net.autoregressive_inference(frames, target_resolution=48)


def test_seed_api_40_to_80_super_resolution():
    """The seed's example: patch_nums 10/20/40/80 for 160 px, a 40x40 input predicted at 80x80."""
    cfg = preset(
        "seed", embed_dim=24, num_heads=2, num_layers=1, conv_dim=8, encoder_channels=4, vocab_size=32
    )
    model = TrueVAREmitterPredictor(cfg).eval()
    with torch.no_grad():
        outs160 = model(torch.rand(1, 1, 160, 160))
        high = model.autoregressive_inference(torch.rand(1, 1, 40, 40), target_resolution=80)
    assert [tuple(o["logits"].shape[-2:]) for o in outs160] == [(10, 10), (20, 20), (40, 40), (80, 80)]
    assert high[-1]["logits"].shape[-2:] == (80, 80)


def test_presets_keep_the_seed_sizes():
    seed = PRESETS["seed"]
    assert (seed.patch_nums, seed.train_size) == ((10, 20, 40, 80), 160)
    assert (seed.embed_dim, seed.num_heads, seed.num_layers, seed.vocab_size) == (768, 12, 24, 8192)
    model = TrueVAREmitterPredictor(preset("default"))
    assert sum(p.numel() for p in model.parameters()) < 2_000_000  # bundled weights stay a few MB


def test_config_is_checked():
    with pytest.raises(CheckpointError):
        ModelConfig(patch_nums=(10, 30), train_size=160)
    with pytest.raises(CheckpointError):
        ModelConfig(embed_dim=50, num_heads=4)
    with pytest.raises(CheckpointError, match="unknown"):
        ModelConfig.from_dict({**ModelConfig().to_dict(), "evil": 1})
    with pytest.raises(CheckpointError, match="activation"):
        ModelConfig.from_dict({**ModelConfig().to_dict(), "activation": "swish"})
    fast = preset("fast")
    assert ModelConfig.from_dict(fast.to_dict()) == fast and fast.activation == "relu"
    assert ModelConfig.from_dict(ModelConfig().to_dict()) == ModelConfig()


def test_bad_input_shape_is_refused(net):
    with pytest.raises(InputError):
        net(torch.rand(1, 3, 32, 32))


def test_occupancy_targets_put_emitters_in_their_cells():
    # emitter at pixel (y=5.4, x=2.6) of frame 1 -> cell (5, 3) at stride 1, (1, 0) at stride 4
    emitters = torch.tensor([[1, 0, 2.6, 5.4, 1000.0, 1.0]])
    occ = occupancy_targets(emitters, 2, [(8, 8), (2, 2)], [1.0, 4.0])
    assert occ[0][1, 5, 3] == 1 and occ[0].sum() == 1
    assert occ[1][1, 1, 0] == 1 and occ[1].sum() == 1


def test_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    model = TrueVAREmitterPredictor(ModelConfig(**TINY))
    loss_fn = VAREmitterLoss()
    x = torch.rand(2, 1, 32, 32) * 50 + 50
    emitters = torch.tensor([[0, 0, 10.2, 12.7, 2000.0, 1.2], [1, 0, 20.5, 3.3, 3000.0, 1.2]])
    x[0, 0, 12:14, 9:12] += 400
    x[1, 0, 2:5, 20:22] += 400
    grids = model.level_grids(32, 32, 4)
    tokens = [(o * 7).long() for o in occupancy_targets(emitters, 2, grids, model.config.strides)]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss, _ = loss_fn(model(x, teacher_tokens=tokens), emitters, torch.full((2, 32, 32), 50.0), [3])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


@pytest.mark.parametrize("size", [(64, 64), (24, 40), (8, 8), (5, 3)])
def test_resize_bicubic_is_torch_bicubic(size):
    """The chain's upsampling as two matrix products gives F.interpolate's bicubic numbers."""
    from napari_var_emitter.model.ops import resize_bicubic

    x = torch.randn(3, 5, 8, 8, generator=torch.Generator().manual_seed(0))
    expected = torch.nn.functional.interpolate(x, size=size, mode="bicubic")
    torch.testing.assert_close(resize_bicubic(x, size), expected, atol=1e-5, rtol=1e-5)
    with torch.autocast("cpu", torch.bfloat16):  # computed in the input's dtype, not autocast's
        assert resize_bicubic(x, size).dtype == torch.float32


@pytest.mark.parametrize("size", [(32, 32), (8, 16), (64, 64), (48, 48)])
def test_area_downsample_is_torch_area(size):
    from napari_var_emitter.model.ops import area_downsample

    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    expected = torch.nn.functional.interpolate(x, size=size, mode="area")
    torch.testing.assert_close(area_downsample(x, size), expected, atol=1e-6, rtol=1e-6)


def test_resize_bicubic_trains_after_inference():
    """The matrices are cached: one first made under inference mode must still serve training."""
    from napari_var_emitter.model.ops import resize_bicubic

    with torch.inference_mode():
        resize_bicubic(torch.ones(1, 1, 7, 7), (28, 28))
    x = torch.ones(1, 1, 7, 7, requires_grad=True)
    resize_bicubic(x, (28, 28)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_conv_block_modulation_shared_or_per_frame_is_the_same():
    from napari_var_emitter.model.blocks import AdaLNConvBlock

    torch.manual_seed(0)
    block = AdaLNConvBlock(16, 24)
    torch.nn.init.normal_(block.ada_lin[-1].weight, std=0.5)  # modulations far from the identity
    h = torch.randn(3, 16, 8, 8)
    cond = torch.randn(1, 24)
    shared = block(h, cond)  # fused into the channel norm's affine
    per_frame = block(h, cond.expand(3, -1))  # the explicit modulation
    torch.testing.assert_close(shared, per_frame, rtol=1e-5, atol=1e-5)


def test_added_conv_blocks_start_as_the_identity(net, frames):
    grown = net.with_conv_blocks(net.config.conv_blocks + 1)
    assert grown.config.conv_blocks == net.config.conv_blocks + 1
    with torch.no_grad():  # dense, sparse and super-resolution paths: the same numbers
        for kwargs in ({}, {"sparse_gate": 0.3}, {"num_levels": 5}):
            torch.testing.assert_close(grown(frames, **kwargs), net(frames, **kwargs), rtol=0, atol=0)
    for bad in (net.config.conv_blocks - 1, "3", 2.5, True):
        with pytest.raises(InputError, match="conv_blocks must be a whole number of at least"):
            net.with_conv_blocks(bad)


@pytest.mark.parametrize("num_levels", [4, 5])  # progressive, and the super-resolution level
def test_sparse_last_level_gives_the_dense_numbers_where_it_computes(net, frames, num_levels):
    from napari_var_emitter.model.ops import dilate
    from napari_var_emitter.model.sparse import EMPTY_LOGIT

    with torch.no_grad():
        dense = net(frames, num_levels=num_levels)
        before = torch.sigmoid(dense[-2]["logits"])
        gate = float(before.flatten().quantile(0.97))  # a few cells of the level before are open
        sparse = net(frames, num_levels=num_levels, sparse_gate=gate)
    for d, s in zip(dense[:-1], sparse[:-1], strict=True):  # the levels before are untouched
        assert torch.equal(d["logits"], s["logits"])
    computed = sparse[-1]["logits"] != EMPTY_LOGIT
    under = (before > gate).repeat_interleave(2, 1).repeat_interleave(2, 2)
    assert torch.equal(computed, dilate(under, 1))  # under the open cells, and their neighbours
    assert 0 < computed.float().mean() < 0.5
    for key in ("logits", "offset", "photons", "sigma", "photon_sigma", "background"):
        d, s = dense[-1][key], sparse[-1][key]
        where = computed if d.ndim == 3 else computed[:, None].expand_as(d)
        torch.testing.assert_close(s[where], d[where], rtol=1e-5, atol=1e-5)


def test_sparse_last_level_runs_densely_where_most_cells_are_open(net, frames):
    with torch.no_grad():
        dense = net(frames)
        sparse = net(frames, sparse_gate=1e-9)  # every cell open: the dense path
    assert torch.equal(sparse[-1]["logits"], dense[-1]["logits"])


def test_dilate_is_a_square_max_filter():
    from napari_var_emitter.model.ops import dilate

    torch.manual_seed(3)
    mask = torch.rand(3, 9, 11) > 0.9
    for r in (0, 1, 2, 4):
        ref = torch.nn.functional.max_pool2d(mask.float()[:, None], 2 * r + 1, 1, r)[:, 0] > 0
        assert torch.equal(dilate(mask, r), ref)


def test_sparse_row_counts_come_from_few_buckets():
    # one shape per bucket keeps oneDNN's per-shape kernel cache and the allocator from growing
    # over a movie (each batch opens a different number of cells)
    from napari_var_emitter.model.sparse import bucketed

    lengths = set()
    for n in range(1, 200_000, 7):
        padded = bucketed(torch.arange(n))
        assert n <= len(padded) <= 1.25 * n and torch.equal(padded[:n], torch.arange(n))
        assert (padded[n:] == n - 1).all()  # copies of the last cell: computed twice, written back alike
        lengths.add(len(padded))
    assert len(lengths) < 80  # about 4 per octave


def test_local_attention_keeps_each_window_to_itself(net):
    # 256 px = 4 x 4 windows of the training size (64 px, + 8 px of context): with local attention
    # the coarsest level's outputs in the top-left window do not depend on pixels far from it
    torch.manual_seed(4)
    x = torch.rand(1, 1, 256, 256) * 300
    y = x.clone()
    y[..., 160:, 160:] += 500.0
    with torch.no_grad():
        local = [net(v, num_levels=2, local_attention=True)[0]["logits"][..., :8, :8] for v in (x, y)]
        full = [net(v, num_levels=2)[0]["logits"][..., :8, :8] for v in (x, y)]
    assert torch.equal(local[0], local[1])
    assert not torch.equal(full[0], full[1])  # global attention carries it across


def test_local_attention_is_global_attention_where_windows_would_not_pay(net, frames):
    with torch.no_grad():
        # one window (train_size), or 2 x 2 windows with their context: nearly the whole frame
        for v in (frames, torch.rand(2, 1, 64, 64) * 300, torch.rand(1, 1, 128, 128) * 300):
            a, b = net(v, local_attention=True), net(v)
            for o, r in zip(a, b, strict=True):
                assert torch.equal(o["logits"], r["logits"])


def test_windows_cover_the_grid_once_with_context():
    from napari_var_emitter.model.windows import Windows

    tok = torch.arange(2 * 30 * 48 * 3, dtype=torch.float32).view(2, 30 * 48, 3)
    plan = Windows.plan((30, 48), core=8, margin=2, device="cpu")  # 30: the last core overlaps
    assert plan.rows.shape == (4, 12) and plan.cols.shape == (6, 12)
    assert plan.rows[0, 0] == 0 and plan.rows[-1, -1] == 29  # edge windows shifted inward
    win = plan.split(tok)
    assert win.shape == (2 * 24, 144, 3)
    grid = tok.view(2, 30, 48, 3)
    assert torch.equal(win[1].view(12, 12, 3), grid[0, 0:12, 6:18])  # frame 0, window (0, 1)
    assert torch.equal(plan.join(win, 2), tok)  # every token back, from one window
    # a token is taken from a window where it has context on both sides, where there is room
    assert plan.owner_y.tolist() == [0] * 8 + [1] * 8 + [2] * 8 + [3] * 6
    assert (plan.at_y[8:24] >= 2).all() and (plan.at_y[8:24] <= 9).all()
