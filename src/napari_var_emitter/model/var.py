"""The True VAR Emitter Predictor: next-scale prediction of emitter maps.

Reading guide (shapes: B batch, C channels, L tokens, h x w a level's grid):

1. ``Encoder`` keeps the input resolution; every level reads it losslessly (pixel-unshuffle for
   coarse levels, a learned 2x up-projection for super-resolution levels) (:mod:`.blocks`).
2. ``EmitterVectorQuantizer`` turns each level's predicted emitter probability into tokens
   (``vocab_size`` levels), embeds them, and accumulates them in ``f_hat`` through the Phi
   residual convs; ``get_next_autoregressive_input`` area-downsamples ``f_hat`` to the next
   level's grid, exactly as VAR does (:mod:`.quantizer`).
3. The first ``attn_levels`` levels are token maps processed together by ``AdaLNSelfAttn``
   blocks with block-causal attention (a KV cache at inference, windows on large frames:
   :mod:`.windows`); the large levels use ``AdaLNConvBlock``s (3x3 convolutions: local, linear
   cost) conditioned on the level in the same AdaLN way, with the previous level's hidden state as
   context; at inference the finest level runs only around emitters (:mod:`.sparse`).
4. Every level has its own head; its first output channel is the emitter probability logit, the
   others give what a localization needs (sub-cell offsets, photons, uncertainties, background).

Training runs the chain teacher-forced (``_teacher_forced``), inference on its own predictions
(``_autoregressive``). Outputs of level k depend only on the image and on the tokens of levels < k:
that is the next-scale structure, and ``tests/test_model.py`` checks it bit for bit.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .blocks import NUM_OUTPUTS, AdaLNConvBlock, AdaLNSelfAttn, Encoder, Head, LevelReader, decode_outputs
from .config import ModelConfig
from .ops import dilate, resize_bicubic
from .quantizer import EmitterVectorQuantizer
from .sparse import EMPTY_LOGIT, SPARSE_MAX_FRACTION, bucketed, rows_at
from .windows import ATTENTION_MARGIN, Windows


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

    def with_conv_blocks(self, n: int) -> "TrueVAREmitterPredictor":
        """A copy of this network with ``n`` AdaLN conv blocks instead of fewer: the blocks it has
        keep their weights, and each added block starts as the identity (its two gates zero, weights
        and biases; its other weights as a new network's), so the copy computes exactly what this one
        does until training opens the gates."""
        have = self.config.conv_blocks
        if isinstance(n, bool) or not isinstance(n, int) or n < have:
            raise InputError(f"conv_blocks must be a whole number of at least {have}, got {n!r}")
        grown = TrueVAREmitterPredictor(self.config, conv_blocks=n).to(next(self.parameters()).device)
        grown.load_state_dict(self.state_dict(), strict=False)  # the added blocks are the only keys left
        with torch.no_grad():
            for block in grown.conv_blocks[have:]:
                gates = block.ada_lin[-1]
                dim = gates.out_features // 6
                gates.weight[: 2 * dim].zero_()
                gates.bias[: 2 * dim].zero_()
        return grown.train(self.training)

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
            return module(src) if cells_N is None else rows_at(module, src, cells_N, grid)

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
        cells = bucketed(work_Bhw.flatten().nonzero()[:, 0])
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
        chain = _Chain(self, x, num_levels, perturb)
        if teacher_tokens is not None:
            raw_outputs = self._teacher_forced(chain, teacher_tokens)
        else:
            raw_outputs = self._autoregressive(chain, sparse_gate, local_attention)
        outputs = []
        for i, raw in enumerate(raw_outputs):
            s = self.config.strides[i]
            out = decode_outputs(raw[..., : math.ceil(H / s), : math.ceil(W / s)], self.config.photon_scale)
            out["stride"] = s
            outputs.append(out)
        return outputs

    def _teacher_forced(self, chain: "_Chain", teacher_tokens) -> list[torch.Tensor]:
        """Training: every level's input from the true tokens at once (VAR's
        ``idxBl_to_var_input``), the attention levels in one block-causal pass."""
        grids, SN, A, B = chain.grids, chain.num_levels, chain.attn_levels, chain.batch
        inputs = [None] * SN
        for si in range(SN - 1):
            inputs[si + 1] = chain.feed(si, teacher_tokens[si])
        raw_outputs, hidden = [], None
        if A > 0:
            # (1, L, C): each token's level condition, shared by the batch
            cond = torch.cat(
                [
                    self.cond_embed.weight[i][None, None].expand(1, h * w, -1)
                    for i, (h, w) in enumerate(grids[:A])
                ],
                1,
            )
            tok = torch.cat(
                [self._attn_tokens(i, inputs[i], chain.enc, B, grids[i]) for i in range(A)], dim=1
            )
            bias = self._attn_bias(grids[:A], chain.device)
            for block in self.blocks:
                tok = block(tok, cond, attn_bias=bias)
            start = 0
            for i, (h, w) in enumerate(grids[:A]):
                hidden = tok[:, start : start + h * w].transpose(1, 2).reshape(B, -1, h, w)
                raw_outputs.append(self._head(i, hidden))
                start += h * w
        for i in range(A, SN):
            hidden = self._conv_level(i, inputs[i], chain.enc, hidden)
            raw_outputs.append(self._head(i, hidden))
        return raw_outputs

    def _autoregressive(self, chain: "_Chain", sparse_gate, local_attention) -> list[torch.Tensor]:
        """Inference: each level fed the tokens of the level before's own prediction; the attention
        levels one by one with a KV cache (in windows with ``local_attention``), the last level
        sparse with ``sparse_gate``."""
        grids, SN, A, B = chain.grids, chain.num_levels, chain.attn_levels, chain.batch
        inputs = [None] * SN
        raw_outputs, hidden = [], None

        def predicted(i, raw):  # the next level's input, from level i's own probability
            if i < SN - 1:
                inputs[i + 1] = chain.feed(i, self.quantizer.probability_to_tokens(torch.sigmoid(raw[:, 0])))

        caches = [[] for _ in self.blocks]
        windows = self._attention_windows(grids[:A], chain.device) if (local_attention and A > 0) else None
        for i, (h, w) in enumerate(grids[:A]):
            tok = self._attn_tokens(i, inputs[i], chain.enc, B, (h, w))
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
            predicted(i, raw)
        for i in range(A, SN):
            if sparse_gate is not None and i == SN - 1 and i > 0:
                core, work = self._sparse_level_cells(raw_outputs[-1], grids[i], sparse_gate)
                if work.float().mean() <= SPARSE_MAX_FRACTION:
                    raw_outputs.append(self._sparse_last_level(i, inputs[i], chain.enc, hidden, core, work))
                    continue
            hidden = self._conv_level(i, inputs[i], chain.enc, hidden)
            raw = self._head(i, hidden)
            raw_outputs.append(raw)
            predicted(i, raw)
        return raw_outputs

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


class _Chain:
    """One run's shared state: the padded input's level grids, the encoder's features, and VAR's
    running sum ``f_hat``, to which :meth:`feed` adds each level's tokens."""

    def __init__(self, net: TrueVAREmitterPredictor, x: torch.Tensor, num_levels: int, perturb=None):
        self.net, self.perturb = net, perturb
        xp = net._pad(x)
        self.grids = net.level_grids(*xp.shape[-2:], num_levels)
        self.num_levels, self.attn_levels = num_levels, min(net.config.attn_levels, num_levels)
        self.batch, self.device = x.shape[0], x.device
        self.enc = net.encoder(xp)
        f_hat = xp.new_zeros(self.batch, net.config.token_dim, *self.grids[-1])
        if not self.enc.is_contiguous() and self.enc.is_contiguous(memory_format=torch.channels_last):
            # in the encoder's layout: adding a channels-last Phi output to an NCHW f_hat, and
            # pooling the result, were ~4x slower on a CPU (2.7 against 0.7 ms)
            f_hat = f_hat.contiguous(memory_format=torch.channels_last)
        self.f_hat = f_hat

    def feed(self, si: int, tokens: torch.Tensor) -> torch.Tensor:
        """Add level si's tokens to ``f_hat``; return level si+1's input (``f_hat`` at the end)."""
        if self.perturb is not None:
            tokens = self.perturb(si, tokens)
        quantizer = self.net.quantizer
        self.f_hat, nxt = quantizer.get_next_autoregressive_input(
            si, self.num_levels, self.f_hat, quantizer.embed(tokens)
        )
        return nxt
