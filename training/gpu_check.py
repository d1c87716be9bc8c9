"""GPU check: the GPU path gives the CPU path's localizations, and how fast it is.

python training/gpu_check.py [--out TABLE.md] [--sizes 64,128,256,512] [--presets default,seed]
                             [--seconds 2] [--compare-frames 256]

One command, installs nothing, a few minutes on an H100. Without a CUDA GPU it says so in one line
and exits with code 2.

1. Agreement: the same simulated frames (LD-high of benchmark.py, seeds from 10_200) through the
   CPU path (fp32) and the GPU path (fp32, then bf16), bundled model, end to end (predict.py). Per
   frame, localizations are matched one to one (nearest within 0.5 px, Hungarian); the table gives
   the counts, the share matched, and the median / 99th percentile / max distance of matched pairs
   in nm. 64 px frames, and two 512 px frames through the tiled path. Pass: fp32: 99 % of the pairs
   within 1 nm and counts within 0.5 %; bf16: 99 % of the pairs within 5 nm (its positions move by
   ~0.5 nm typically) and counts within 2 %.
2. Throughput: frames/s end to end (frames from host memory, the network, peak finding, duplicate
   removal and the maximum-likelihood refinement, all on the GPU, and the conversion to
   localizations, every chunk synchronised by its copy back to the host) at each
   size, for the ``default`` preset (bundled weights) and the ``seed`` preset (random weights: the
   seed's architecture has no trained checkpoint, which does not change its speed), in bf16 and
   fp32, no tiling, as many frames per pass as predict chooses on that GPU (``--batch-pixels`` / (H * W)
   if given); the bundled model with predict's
   sparse finest level (the default) and, in the first precision, dense (``sparse=False``). Each
   case runs for about ``--seconds`` after a warm-up, over frames repeated from a simulated pool.

``--device cpu`` runs the same script on the CPU (a dry run of the code path, for tests).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np

SEED_BASE = 10_200  # >= 10_000: benchmark-only seeds (benchmark.py)
PX_NM = 100.0


def simulated(size: int, n: int, seed: int) -> np.ndarray:
    from napari_var_emitter.camera import Camera
    from napari_var_emitter.simulation import SimulationConfig, simulate_movie

    config = SimulationConfig(
        frame_size=(size, size),
        density_per_um2=0.3,
        photons=(1000.0, 8000.0),
        psf_sigma_nm=(120.0, 120.0),
        background_photons=(50.0, 100.0),
        camera=Camera(),
    )
    return simulate_movie(config, n, seed=seed).frames.numpy().astype(np.uint16)


# --------------------------------------------------------------------------------------------------
# 1. agreement


def compare(reference, other, radius_px: float = 0.5) -> dict:
    """Match two Localizations tables frame by frame (Hungarian within ``radius_px``)."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    distances = []
    for t in np.union1d(reference.frame, other.frame):
        a, b = reference.in_frame(t), other.in_frame(t)
        if not len(a) or not len(b):
            continue
        d = cdist(np.c_[a.x, a.y], np.c_[b.x, b.y])
        rows, cols = linear_sum_assignment(d)
        distances.extend(d[rows, cols][d[rows, cols] <= radius_px])
    distances = np.asarray(distances) * PX_NM
    n_ref, n_other = len(reference), len(other)
    return {
        "n_ref": n_ref,
        "n_other": n_other,
        "matched": len(distances) / max(n_ref, n_other, 1),
        "median_nm": float(np.median(distances)) if len(distances) else float("nan"),
        "p99_nm": float(np.percentile(distances, 99)) if len(distances) else float("nan"),
        "max_nm": float(distances.max()) if len(distances) else float("nan"),
    }


def passes(result: dict, precision: str) -> bool:
    """fp32: 99 % of the matched pairs within 1 nm; bf16: 99 % within 5 nm. Not every pair: a
    borderline cell may flip, moving one detection of a close pair (on an H100, one pair of 3,273
    moved 1.12 nm in fp32: cuDNN's convolutions use TF32 by default)."""
    if precision == "fp32":
        tol_count, min_matched, within = 0.005, 0.995, not result["p99_nm"] > 1.0
    else:
        tol_count, min_matched, within = 0.02, 0.98, not result["p99_nm"] > 5.0
    n = max(result["n_ref"], 1)
    return (
        abs(result["n_other"] - result["n_ref"]) <= tol_count * n
        and result["matched"] >= min_matched
        and within
    )


def agreement(device: str, compare_frames: int, big_frames: int = 2) -> list[dict]:
    from napari_var_emitter.localize import load_model, predict

    rows = []
    cases = [(64, compare_frames, None), (512, big_frames, 256)]  # (size, frames, tile size)
    cases = [c for c in cases if c[1] > 0]
    for size, n, tile in cases:
        frames = simulated(size, n, SEED_BASE + size)
        cpu = predict(frames, load_model(None), device="cpu", precision="fp32", tile_size=tile)
        for precision in ("fp32", "bf16"):
            other = predict(frames, load_model(None), device=device, precision=precision, tile_size=tile)
            result = compare(cpu.localizations, other.localizations)
            result.update(size=size, frames=n, tiled=tile is not None, precision=precision)
            result["pass"] = passes(result, precision)
            rows.append(result)
    return rows


# --------------------------------------------------------------------------------------------------
# 2. throughput


@functools.lru_cache(maxsize=8)
def _pool(size: int, n: int) -> np.ndarray:
    return simulated(size, n, SEED_BASE + 1000 + size)


def model_for(preset_name: str):
    from napari_var_emitter.localize import load_model
    from napari_var_emitter.model import TrueVAREmitterPredictor
    from napari_var_emitter.model.checkpoint import EmitterModel
    from napari_var_emitter.model.config import preset

    if preset_name == "default":
        return load_model(None), "bundled"
    return EmitterModel(net=TrueVAREmitterPredictor(preset(preset_name)).eval(), threshold=0.5), "random"


def throughput(
    model, size: int, precision: str, device: str, seconds: float, batch_pixels: int, sparse: bool = True
) -> dict:
    import torch

    from napari_var_emitter.localize import predict

    if batch_pixels is None:  # predict's own choice for this GPU and model
        from napari_var_emitter.localize.batching import default_batch_pixels, default_batch_size, pass_sizes
        from napari_var_emitter.model.runtime import runner_for

        runner = runner_for(model.net, torch.device(device), precision=precision, sparse=sparse)
        batch = pass_sizes((size, size), default_batch_size(device), default_batch_pixels(runner), None)[1]
    else:
        batch = max(1, min(4096, batch_pixels // (size * size)))
    pool = _pool(size, min(batch, 64))
    count = [0]
    kw = dict(device=device, batch_size=batch, batch_pixels=batch * size * size, precision=precision)
    kw.update(tile_size=None, sparse=sparse)
    sink = lambda locs: count.__setitem__(0, count[0] + len(locs))  # noqa: E731

    def run(n):
        frames = pool[np.arange(n) % len(pool)]
        start = time.perf_counter()
        predict(frames, model, sink=sink, **kw)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    run(batch)  # warm-up: kernels, cuDNN choices, allocator
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    once = run(batch)
    n = max(batch, int(round(seconds / max(once, 1e-6))) * batch)
    count[0] = 0
    elapsed = run(n)
    return {
        "size": size,
        "precision": precision,
        "finest": "sparse" if sparse else "dense",
        "batch": batch,
        "frames": n,
        "frames_per_s": n / elapsed,
        "locs_per_frame": count[0] / n,
        "gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan"),
    }


# --------------------------------------------------------------------------------------------------
# report


def agreement_table(rows: list[dict]) -> str:
    head = (
        "| frames | size | tiled | GPU precision | CPU locs | GPU locs | matched "
        "| median / p99 / max [nm] | pass |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(
            f"| {r['frames']} | {r['size']} | {'yes' if r['tiled'] else 'no'} | {r['precision']} | "
            f"{r['n_ref']} | {r['n_other']} | {100 * r['matched']:.1f} % | "
            f"{r['median_nm']:.2f} / {r['p99_nm']:.2f} / {r['max_nm']:.2f} | "
            f"{'PASS' if r['pass'] else 'FAIL'} |"
        )
    return "\n".join(lines)


def throughput_table(rows: list[dict]) -> str:
    head = (
        "| preset | weights | size | precision | finest level | batch | frames | frames/s | locs/frame "
        "| GPU peak [MB] |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {r['preset']} | {r['weights']} | {r['size']} | {r['precision']} | {r['finest']} | "
            f"{r['batch']} | "
            f"{r['frames']:,} | {r['frames_per_s']:,.0f} | {r['locs_per_frame']:.1f} | "
            f"{r['gpu_peak_mb']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="also write the report (Markdown) here")
    parser.add_argument("--sizes", default="64,128,256,512", help="frame sizes [px] for the throughput")
    parser.add_argument("--presets", default="default,seed", help="model presets for the throughput")
    parser.add_argument("--precisions", default="bf16,fp32")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per throughput case")
    parser.add_argument(
        "--batch-pixels", type=int, default=None, help="pixels per forward pass (default: predict's choice)"
    )
    parser.add_argument("--compare-frames", type=int, default=256, help="64 px frames compared CPU/GPU")
    parser.add_argument("--big-frames", type=int, default=2, help="512 px frames compared (tiled); 0: none")
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu for a dry run")
    args = parser.parse_args(argv)

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            f"gpu_check: no CUDA GPU here (torch {torch.__version__}, built for CUDA "
            f"{torch.version.cuda or 'none'}): nothing to check",
            file=sys.stderr,
        )
        return 2
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU (dry run)"
    start = time.perf_counter()
    report = [f"# GPU check on {name}", "", f"torch {torch.__version__}, CUDA {torch.version.cuda}", ""]

    rows = agreement(args.device, args.compare_frames, args.big_frames)
    report += ["## CPU (fp32) vs GPU, same frames, bundled model", "", agreement_table(rows), ""]
    print("\n".join(report[-5:]), flush=True)

    speed = []
    for preset_name in [p.strip() for p in args.presets.split(",") if p.strip()]:
        model, weights = model_for(preset_name)
        precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
        # trained weights: predict's default (sparse finest level), and the dense level in the first
        # precision for comparison; random weights open arbitrary cells, so the seed preset runs dense
        trained = weights == "bundled"
        cases = [(p, trained) for p in precisions] + (
            [(precisions[0], False)] if trained and precisions else []
        )
        for size in [int(s) for s in args.sizes.split(",") if s.strip()]:
            for precision, sparse in cases:
                row = throughput(model, size, precision, args.device, args.seconds, args.batch_pixels, sparse)
                row.update(preset=preset_name, weights=weights)
                speed.append(row)
                print(
                    f"  {preset_name} {size}px {precision} {row['finest']}: "
                    f"{row['frames_per_s']:,.0f} frames/s (batch {row['batch']})",
                    file=sys.stderr,
                    flush=True,
                )
        del model
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    report += [
        "## Throughput, end to end (frames from host memory to localizations), no tiling",
        "",
        "The seed preset has random weights (no trained checkpoint): its speed is the architecture's.",
        "",
        throughput_table(speed),
        "",
        f"all passed: {all(r['pass'] for r in rows)}; total {time.perf_counter() - start:.0f} s",
    ]
    text = "\n".join(report) + "\n"
    print("\n".join(report[-7:]))
    if args.out is not None:
        args.out.write_text(text)
    return 0 if all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
