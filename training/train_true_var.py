#!/usr/bin/env python
"""Train a True VAR Emitter Predictor from simulation, from a JSON config (the seed's keys work).

    python training/train_true_var.py --config training/config_default.json --out model.pt
    python training/train_true_var.py --config training/config_true_var.json   # the seed's sizes

Progress lines go to stdout; the checkpoint (config + weights + threshold) is rewritten at each
validation, so an interrupted run keeps its last good model, and ``--resume`` continues it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from napari_var_emitter.camera import Camera
from napari_var_emitter.errors import VarEmitterError
from napari_var_emitter.train import TrainConfig, iter_train

# seed key -> TrainConfig field
TRAINING_KEYS = {
    "batch_size": "batch_size",
    "learning_rate": "lr",
    "lr": "lr",
    "warmup_steps": "warmup_steps",
    "steps": "steps",
    "val_every": "val_every",
    "scale_weights": "scale_weights",
    "psf_sigma_nm": "psf_sigma_nm",
    "photons": "photons",
    "photon_distribution": "photon_distribution",
    "density_per_um2": "density_per_um2",
    "background_photons": "background_photons",
    "seed": "seed",
    "sr_fraction": "sr_fraction",
    "device": "device",
}
# the wider simulated family (TrainConfig, train.py): the same names
WIDE_KEYS = (
    "wide_fraction",
    "pupil_fraction",
    "na",
    "wavelength_nm",
    "defocus_nm",
    "defocus_spread_nm",
    "spherical_waves",
    "photon_distributions",
    "background_blobs",
    "background_blob_amplitude",
    "camera_types",
    "emccd_gain",
    "scmos_read_noise_e",
    "scmos_pixel_spread",
    "scmos_offset_spread",
)
TRAINING_KEYS.update({key: key for key in WIDE_KEYS})


def config_from_json(values: dict) -> TrainConfig:
    """Map the seed's JSON layout onto a TrainConfig (model overrides, training, camera)."""
    model = dict(values.get("model", {}))
    preset_name = model.pop("preset", "default")
    training = values.get("training", {})
    size = training.get("input_resolution", [64, 64])
    if len(size) != 2 or size[0] != size[1]:
        raise VarEmitterError(f"input_resolution must be square [N, N], got {size}")
    overrides = {k: v for k, v in model.items()}
    if "patch_nums" in overrides:
        overrides["train_size"] = int(size[0])
        targets = training.get("target_resolutions")
        if targets and sorted(v[0] for v in targets.values()) != sorted(overrides["patch_nums"]):
            raise VarEmitterError("target_resolutions must list the same sizes as patch_nums")
    kwargs = {"preset": preset_name, "model": overrides, "frame_size": int(size[0])}
    for key, value in training.items():
        if key in TRAINING_KEYS:
            kwargs[TRAINING_KEYS[key]] = value
        elif key not in ("input_resolution", "target_resolutions"):
            raise VarEmitterError(f"unknown training key {key!r}")
    if "camera" in values:
        kwargs["camera"] = Camera.from_dict(values["camera"])
    return TrainConfig.from_dict(kwargs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", required=True, help="JSON config (config_default.json, config_true_var.json)"
    )
    parser.add_argument("--out", default="best_model.pt", help="checkpoint to write")
    parser.add_argument("--steps", type=int, help="override the number of steps")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or mps")
    parser.add_argument("--init-from", default=None, help='"bundled" or a checkpoint to fine-tune')
    parser.add_argument("--resume", action="store_true", help="continue the run saved at --out")
    args = parser.parse_args(argv)
    try:
        cfg = config_from_json(json.loads(Path(args.config).read_text()))
        cfg.out = args.out
        cfg.resume = args.resume
        cfg.init_from = args.init_from
        if args.steps:
            cfg.steps = args.steps
        if args.device:
            cfg.device = args.device
        t0 = time.time()
        for event in iter_train(cfg):
            if event.step % 25 == 0 or event.val:
                print(
                    f"step {event.step}/{event.total_steps} loss {event.loss:.4f} lr {event.lr:.2e} "
                    f"{time.time() - t0:.0f}s",
                    flush=True,
                )
            if event.val:
                print("  validation " + " ".join(f"{k}={v:.3g}" for k, v in event.val.items()), flush=True)
    except (VarEmitterError, OSError, ValueError) as exc:
        print(f"train_true_var: error: {exc}", file=sys.stderr)
        return 2
    print(f"saved {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
