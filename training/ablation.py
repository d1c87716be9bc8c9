#!/usr/bin/env python
"""Train a variant of the bundled recipe for the first N steps of the same schedule, so that it
can be compared with the bundled run's checkpoint at the same step.

    python training/ablation.py --set chain=false --stop-at 1000 --out runs/nochain.pt
    python training/ablation.py --set frame_window=3 --stop-at 1000 --out runs/window3.pt

``--set key=value`` overrides a ModelConfig field of the default preset (JSON values).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from napari_var_emitter.train import iter_train

sys.path.insert(0, str(Path(__file__).parent))
from train_true_var import config_from_json  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(Path(__file__).with_name("config_default.json")))
    parser.add_argument("--set", action="append", default=[], help="model override key=value")
    parser.add_argument("--stop-at", type=int, required=True, help="stop after this step's checkpoint")
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = config_from_json(json.loads(Path(args.config).read_text()))
    for item in args.set:
        key, value = item.split("=", 1)
        cfg.model[key] = json.loads(value)
    cfg.out = args.out
    t0 = time.time()
    for event in iter_train(cfg):
        if event.val:
            print(
                f"step {event.step} {time.time() - t0:.0f}s "
                + " ".join(f"{k}={v:.3g}" for k, v in event.val.items()),
                flush=True,
            )
        if event.step >= args.stop_at and event.checkpoint:
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
