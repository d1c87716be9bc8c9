#!/usr/bin/env python
"""Network speed of architecture variants (random weights): what a retrained model would cost.

python training/bench_network.py [--size 64] [--batch 64] [--window 3] [--repeats 3]
                                 [--variant "attn_levels=1,encoder_blocks=1" ...]

Each variant is the default preset with ``key=value`` overrides (JSON values). Its network runs
through ``InferenceRunner`` (bfloat16 where the hardware is fast at it, channels-last, no
autograd) on random frames, every level dense (random weights open arbitrary cells of the sparse
finest level, so its saving is not measured here); the table gives the best of ``--repeats``
timed passes over ``--batch`` frames, in ms per frame. Without ``--variant``: the default
architecture and the variants of training/DESIGN-CHOICES.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

DEFAULT_VARIANTS = (
    "",
    "attn_levels=1",
    "encoder_blocks=1",
    "conv_blocks=1",
    'activation="relu"',
    'encoder_channels=16,conv_dim=24,token_dim=8,activation="relu"',
    "attn_levels=1,encoder_blocks=1",
    "attn_levels=1,encoder_blocks=1,conv_blocks=1",
)


def overrides(text: str) -> dict:
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, value = item.split("=", 1)
        out[key.strip()] = json.loads(value)
    return out


def ms_per_frame(over: dict, size: int, batch: int, window: int, repeats: int) -> float:
    import torch

    from napari_var_emitter.model import TrueVAREmitterPredictor, preset
    from napari_var_emitter.model.runtime import InferenceRunner

    torch.manual_seed(0)
    net = TrueVAREmitterPredictor(preset("default", frame_window=window, **over)).eval()
    runner = InferenceRunner(net, torch.device("cpu"))
    x = torch.rand(batch, window, size, size) * 300 + 50
    levels = len(net.config.patch_nums)
    runner(x, levels)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        runner(x, levels)
        best = min(best, (time.perf_counter() - start) / batch * 1e3)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="frame size [px]")
    parser.add_argument("--batch", type=int, default=64, help="frames per pass")
    parser.add_argument("--window", type=int, default=3, help="frames the model sees (1 or 3)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variant", action="append", default=None, help="overrides key=value,...")
    args = parser.parse_args(argv)
    print(f"| architecture ({args.size} px, batch {args.batch}, window {args.window}) | network, ms/frame |")
    print("|---|---|")
    for text in args.variant if args.variant is not None else DEFAULT_VARIANTS:
        ms = ms_per_frame(overrides(text), args.size, args.batch, args.window, args.repeats)
        print(f"| {text or 'default'} | {ms:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
