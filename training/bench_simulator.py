"""Throughput of the training simulator: frames/s of ``simulate_batch`` (64 x 64 frames, ~12 emitters each).

python training/bench_simulator.py [--device cpu] [--seconds 3] [--threads 1]

Rows: fixed families (batch 64: the base family's Gaussian PSF on uniform or filament scenes; the pupil PSF
over NA 1.2-1.5, 500-700 nm, defocus +-400 nm, spherical aberration +-0.5 waves, with and without
per-emitter depth; an sCMOS camera with per-pixel maps, out-of-focus blobs and exponential photons),
then the training recipes as they draw a new simulation per batch of 16 (``train._simulation``):
``recipe:lean`` (config_default_lean.json) and ``recipe:wide`` (config_default_wide.json).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from napari_var_emitter.camera import Camera
from napari_var_emitter.simulation import SimulationConfig, simulate_batch
from napari_var_emitter.train import _simulation

TRAINING = Path(__file__).resolve().parent
PUPIL = dict(
    psf_model="pupil",
    na=(1.2, 1.5),
    wavelength_nm=(500.0, 700.0),
    defocus_nm=(-400.0, 400.0),
    spherical_waves=(-0.5, 0.5),
)
SCMOS = Camera(baseline=100.0, e_per_adu=0.5, em_gain=1.0, qe=0.9, read_noise_e=1.5)
FAMILIES = {  # 64 x 64, 0.3 per um^2 at 100 nm: ~12.3 emitters per frame
    "uniform": SimulationConfig(structure="uniform"),
    "filaments": SimulationConfig(structure="filaments"),
    "pupil": SimulationConfig(**PUPIL),
    "pupil+depth": SimulationConfig(**PUPIL, defocus_spread_nm=200.0),
    "scmos+blobs": SimulationConfig(
        photons=(100.0, 3000.0),
        photon_distribution="exponential",
        background_blobs=0.1,
        camera=SCMOS,
        pixel_read_noise_spread=0.3,
        pixel_offset_spread=2.0,
    ),
}


def frames_per_second(draw, batch_size, window, device, seconds, generator) -> float:
    """``draw()`` gives the SimulationConfig of each batch."""
    simulate_batch(draw(), batch_size, window, generator=generator, device=device)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    frames, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        simulate_batch(draw(), batch_size, window, generator=generator, device=device)
        frames += batch_size * window
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return frames / (time.perf_counter() - start)


def recipe(name: str):
    """The TrainConfig of a JSON recipe under training/."""
    from train_true_var import config_from_json

    return config_from_json(json.loads((TRAINING / name).read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0: torch's default); 1 is fastest on a busy CPU",
    )
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    generator = torch.Generator(device=args.device).manual_seed(0)
    print(f"device {args.device}, torch threads {torch.get_num_threads()}")
    print(f"{'family':<14} {'batch':>5} {'window':>6} {'emitters/frame':>14} {'frames/s':>9}")
    for name, config in FAMILIES.items():
        for window in (1, 3):
            fps = frames_per_second(lambda c=config: c, 64, window, args.device, args.seconds, generator)
            print(f"{name:<14} {64:>5} {window:>6} {config.emitters_per_frame:>14.1f} {fps:>9.0f}")
    for label, file in (
        ("recipe:lean", "config_default_lean.json"),
        ("recipe:wide", "config_default_wide.json"),
    ):
        cfg, rng = recipe(file), random.Random(0)
        for window in (1, 3):
            fps = frames_per_second(
                lambda cfg=cfg, rng=rng: _simulation(cfg, rng),
                16,
                window,
                args.device,
                args.seconds,
                generator,
            )
            print(f"{label:<14} {16:>5} {window:>6} {'0-5 per um^2':>14} {fps:>9.0f}")


if __name__ == "__main__":
    main()
