#!/usr/bin/env python
"""Run a trained True VAR Emitter Predictor, as the seed's inference script did.

    python training/inference_true_var.py --model best_model.pt --mode progressive
    python training/inference_true_var.py --model best_model.pt --mode super_resolution --target_res 128
    python training/inference_true_var.py --model best_model.pt --mode both --input frames.tif

Without ``--input`` it simulates a small movie (seed 123) with the model's own camera and
reports the challenge metrics against its truth. It writes, under ``--out-dir``, the
localizations of each mode as CSV and the probability map of every level as a TIFF stack.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import tifffile

from napari_var_emitter.analysis.metrics import evaluate
from napari_var_emitter.errors import VarEmitterError
from napari_var_emitter.io.frames import read_frames
from napari_var_emitter.io.localizations import to_csv
from napari_var_emitter.localize import load_model, predict
from napari_var_emitter.simulation import SimulationConfig, simulate_movie


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the bundled weights)")
    parser.add_argument("--mode", choices=("progressive", "super_resolution", "both"), default="both")
    parser.add_argument(
        "--target_res", type=int, default=None, help="super-resolution grid (default: 2x the input)"
    )
    parser.add_argument("--input", default=None, help="TIFF stack; default: a simulated 64x64 movie")
    parser.add_argument("--frames", type=int, default=20, help="frames to simulate without --input")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out-dir", default="inference_out")
    args = parser.parse_args(argv)
    try:
        model = load_model(args.model, args.device)
        truth = None
        if args.input:
            frames = read_frames(args.input)
        else:
            sim = SimulationConfig(density_per_um2=1.0, camera=model.camera)
            movie = simulate_movie(sim, args.frames, seed=123)
            frames, truth = movie.frames.numpy(), movie.truth
        T, H, W = frames.shape
        out_dir = Path(args.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        modes = ("progressive", "super_resolution") if args.mode == "both" else (args.mode,)
        for mode in modes:
            sr_factor = 2
            if mode == "super_resolution" and args.target_res:
                sr_factor = args.target_res / H
                if sr_factor != int(sr_factor):
                    raise VarEmitterError(
                        f"--target_res {args.target_res} is not a whole multiple of the input {H}"
                    )
                sr_factor = int(sr_factor)
            levels = len(model.config.patch_nums) + (1 if mode == "super_resolution" else 0)
            t0 = time.perf_counter()
            result = predict(
                frames,
                model,
                model.camera,
                mode=mode,
                sr_factor=sr_factor,
                device=args.device,
                maps=tuple(range(levels)),
            )
            seconds = time.perf_counter() - t0
            to_csv(result.localizations, out_dir / f"locs_{mode}.csv", model.camera.pixel_size_nm)
            print(
                f"{mode}: {len(result.localizations)} localizations in {T} frames of {H}x{W}, "
                f"{T / seconds:.1f} frames/s on {result.device}"
            )
            for level, pmap in result.maps.items():
                tifffile.imwrite(
                    out_dir / f"prob_{mode}_level{level}_{pmap.name}.tif", pmap.data.astype(np.float32)
                )
                expected = float(pmap.data.sum() / T)
                print(
                    f"  level {level} {pmap.name:>9}: mean emitters per frame by probability {expected:.1f}"
                )
            if truth is not None:
                report = evaluate(result.localizations, truth, model.camera.pixel_size_nm)
                print(
                    f"  vs truth ({len(truth) / T:.1f} emitters/frame): JI {report.jaccard:.1f} "
                    f"RMSE {report.rmse_nm:.1f} nm E {report.efficiency:.1f}"
                    + ("" if math.isnan(report.calibration) else f" calibration {report.calibration:.2f}")
                )
    except (VarEmitterError, OSError) as exc:
        print(f"inference_true_var: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
