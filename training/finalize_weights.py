#!/usr/bin/env python
"""Turn a training checkpoint into bundled weights: re-pick the detection threshold and calibrate
the predicted uncertainty (one scale factor) on the validation movies (train.validate: fixed seeds
5000/5001, never the benchmark's), drop the optimizer state, and record where the weights came from.

    python training/finalize_weights.py runs/default.pt src/napari_var_emitter/weights/default.pt
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from napari_var_emitter.model.checkpoint import load_checkpoint, save_checkpoint
from napari_var_emitter.train import TrainConfig, validate, validation_movies


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("out")
    parser.add_argument("--note", default="", help="provenance note stored in meta['provenance']")
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="use this detection threshold (chosen elsewhere, e.g. benchmark.py --validation) "
        "instead of the best mean Jaccard on the validation movies",
    )
    parser.add_argument(
        "--keep-scale",
        action="store_true",
        help="keep the uncertainty scale as it is (re-pick only the threshold)",
    )
    args = parser.parse_args(argv)
    model = load_checkpoint(args.checkpoint)
    cfg = TrainConfig.from_dict(model.meta["train_config"])
    chosen = None if args.threshold is None else (args.threshold,)
    threshold, metrics = validate(model, validation_movies(cfg, "cpu"), "cpu", thresholds=chosen)
    print(
        f"threshold {model.threshold} -> {threshold}; " + " ".join(f"{k}={v:.3g}" for k, v in metrics.items())
    )
    model.threshold = threshold
    # calibration = RMS(error / predicted uncertainty) with the current scale: fold it into the scale
    factor = float(np.sqrt(np.mean([metrics["sparse_calibration"] ** 2, metrics["dense_calibration"] ** 2])))
    if args.keep_scale:
        print(f"uncertainty scale kept at {model.uncertainty_scale} (--keep-scale)")
    elif np.isfinite(factor) and factor > 0:
        model.uncertainty_scale = round(model.uncertainty_scale * factor, 4)
        print(f"uncertainty scale -> {model.uncertainty_scale}")
    else:  # nothing matched on the validation movies: nothing to calibrate against
        print(f"uncertainty scale kept at {model.uncertainty_scale} (calibration not measurable)")
    model.meta["validation"] = {**metrics, "step": model.meta.get("step")}
    if args.note:
        model.meta["provenance"] = args.note
    save_checkpoint(args.out, model)  # no train_state: weights, config, threshold, camera, meta
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
