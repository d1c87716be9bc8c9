"""Throughput of the training simulator: frames/s of ``simulate_batch`` (64 x 64 frames, ~12 emitters each).

python training/bench_simulator.py [--device cpu] [--seconds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from napari_var_emitter.simulation import SimulationConfig, simulate_batch


def frames_per_second(config, batch_size, window, device, seconds, generator) -> float:
    simulate_batch(config, batch_size, window, generator=generator, device=device)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    frames, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        simulate_batch(config, batch_size, window, generator=generator, device=device)
        frames += batch_size * window
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return frames / (time.perf_counter() - start)


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
    print(f"{'structure':<10} {'batch':>5} {'window':>6} {'emitters/frame':>14} {'frames/s':>9}")
    for structure in ("uniform", "filaments"):
        config = SimulationConfig(structure=structure)  # 64 x 64, 0.3 per um^2 at 100 nm: ~12.3 per frame
        for window in (1, 3):
            fps = frames_per_second(config, 64, window, args.device, args.seconds, generator)
            print(f"{structure:<10} {64:>5} {window:>6} {config.emitters_per_frame:>14.1f} {fps:>9.0f}")


if __name__ == "__main__":
    main()
