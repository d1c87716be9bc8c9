"""Throughput and memory: frames/s and peak memory per method, frame size and stack length.

python training/bench_speed.py [--sizes 64,128,256,512,2048] [--size-frames 100]
                               [--stacks 100,1000,10000] [--stack-size 256]
                               [--methods var,classical,picasso] [--device auto] [--quick]
                               [--work DIR] [--out TABLE.md] [--json ROWS.json]

Two sweeps over the same simulated data (the LD-high set of benchmark.py: 0.3 emitters/um^2,
1000-8000 photons, background 50-100 photons/px, PSF sigma 120 nm, the default EMCCD camera;
seeds from 10_100, reserved for benchmarks): frame sizes (``--sizes``, each a stack of
``--size-frames`` frames) and stack lengths (``--stacks``, frames of ``--stack-size`` px). Each
stack is written once as an uncompressed TIFF in ``--work`` (reused by later runs) and every
method reads the same file, streaming (``stream.open_frames``, chunk by chunk).

Each (method, stack) runs in a fresh Python process, so that its peak memory is its own: after an
untimed warm-up on the first frames (one forward pass: model loading, JIT, first calls), the
whole stack is localized and timed end to end (reading, the network or fit, post-processing,
localizations handed to a sink that counts them). ``peak RSS`` is the process's high-water mark
(``VmHWM``: imports, model and run); ``growth`` is how much of it the timed run added (flat
memory: it does not grow with the stack). On CUDA, ``GPU peak`` is torch's peak allocation.

Methods: ``var`` (the bundled model or ``--var-model``, progressive mode, frames over
``--tile-size`` px tiled), ``classical`` (napari_var_emitter.localize.classical, in chunks of 2 Mpx),
``picasso`` (picassosr ``localize_frames``, gaussmle, batches of 4 Mpx with ``start_frame``;
skipped if it does not import; its own thread pool: 0.75 x CPUs, at least 1). Torch uses
``OMP_NUM_THREADS`` or ``--threads``. ``--quick`` is a small run (sizes 64,128,256 of 20 frames, stacks
of 100 and 300 frames of 64 px).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SEED_BASE = 10_100  # >= 10_000: benchmark-only seeds (benchmark.py)
ALL_METHODS = ("var", "classical", "picasso")
PSF_SIGMA_NM = 120.0
# Picasso's minimum net gradient in photons (benchmark.py's choice, converted to ADU per camera)
PICASSO_MIN_NG_PHOTONS = 400.0


# --------------------------------------------------------------------------------------------------
# data


def stack_path(work: Path, size: int, n_frames: int) -> Path:
    return work / f"ld-high_{size}x{size}_{n_frames}.tif"


def write_stack(path: Path, size: int, n_frames: int) -> Path:
    """Simulate ``n_frames`` frames of ``size`` px into an uncompressed TIFF, chunk by chunk."""
    if path.exists():
        return path
    import tifffile

    from napari_var_emitter.camera import Camera
    from napari_var_emitter.simulation import SimulationConfig, simulate_movie

    config = SimulationConfig(
        frame_size=(size, size),
        density_per_um2=0.3,
        photons=(1000.0, 8000.0),
        psf_sigma_nm=(PSF_SIGMA_NM, PSF_SIGMA_NM),
        background_photons=(50.0, 100.0),
        camera=Camera(),
    )
    tmp = path.with_name(path.name + ".part")
    out = tifffile.memmap(tmp, shape=(n_frames, size, size), dtype=np.uint16)
    chunk = max(1, (1 << 24) // (size * size))
    for k, start in enumerate(range(0, n_frames, chunk)):
        stop = min(start + chunk, n_frames)
        movie = simulate_movie(config, stop - start, seed=SEED_BASE + 7919 * size + k)
        out[start:stop] = movie.frames.numpy().astype(np.uint16)
    out.flush()
    del out
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------------------------------
# one case, in a fresh process


def _peak_rss_mb() -> float:
    """This process's resident-memory high-water mark, in MB.

    Linux: ``VmHWM`` (``getrusage``'s ``ru_maxrss`` survives fork and exec, so a child would report
    its parent's peak when that is higher).
    """
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def _runner(method: str, args):
    """A function (frames, first_frame, sink) that localizes frames and gives rows to sink."""
    from napari_var_emitter.camera import Camera

    camera = Camera()
    if method == "var":
        from napari_var_emitter.localize import load_model, predict

        model = load_model(args.var_model, device=args.device)

        def run(frames, sink):
            predict(
                frames,
                model,
                camera,
                device=args.device,
                batch_size=args.batch_size,
                tile_size=args.tile_size or None,
                precision=args.precision,
                sink=lambda locs: sink(len(locs)),
            )

        return run
    if method == "classical":
        from napari_var_emitter.localize import classical

        def run(frames, sink):
            step = max(1, (1 << 21) // (frames.shape[1] * frames.shape[2]))
            for a in range(0, frames.shape[0], step):
                locs = classical.localize(
                    frames[a : a + step], camera, psf_sigma_px=PSF_SIGMA_NM / camera.pixel_size_nm
                )
                sink(len(locs))

        return run
    if method == "picasso":
        import contextlib
        import io
        import warnings

        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from picasso import localize as plz
        camera_info = {
            "Baseline": camera.baseline,
            "Sensitivity": camera.e_per_adu,
            "Gain": camera.em_gain,
            "Qe": camera.qe,
            "Pixelsize": camera.pixel_size_nm,
        }
        params = {"Min. Net Gradient": PICASSO_MIN_NG_PHOTONS / camera.photons_per_adu, "Box Size": 7}

        def run(frames, sink):
            step = max(1, (1 << 22) // (frames.shape[1] * frames.shape[2]))
            for a in range(0, frames.shape[0], step):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    df = plz.localize_frames(
                        np.ascontiguousarray(frames[a : a + step]),
                        None,
                        params,
                        start_frame=a,
                        camera_info=camera_info,
                        fitting_method="gaussmle",
                    )
                sink(len(df))

        return run
    raise SystemExit(f"unknown method {method!r}")


def run_case(method: str, path: Path, args) -> dict:
    """Warm up, then time one method on the whole stack; a dict of numbers (printed as JSON)."""
    import torch

    from napari_var_emitter.io.stream import close_frames, open_frames

    run = _runner(method, args)
    frames = open_frames(path)
    try:
        n, h, w = frames.shape
        warm = max(1, min(n, 16, (1 << 18) // (h * w)))  # one forward pass of the VAR model
        run(np.asarray(frames[:warm]), lambda k: None)  # warm-up, untimed
        cuda = args.device != "cpu" and torch.cuda.is_available()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        rss_before = _peak_rss_mb()
        count = [0]
        start = time.perf_counter()
        run(frames, lambda k: count.__setitem__(0, count[0] + k))
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    finally:
        close_frames(frames)
    peak = _peak_rss_mb()
    return {
        "method": method,
        "size": f"{h}x{w}",
        "frames": n,
        "seconds": seconds,
        "frames_per_s": n / seconds,
        "mpx_per_s": n * h * w / seconds / 1e6,
        "locs_per_frame": count[0] / n,
        "peak_rss_mb": peak,
        "growth_mb": peak - rss_before,
        "gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "torch_threads": torch.get_num_threads(),
    }


def _child_argv(method: str, path: Path, args) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", method, "--path", str(path)]
    argv += ["--device", args.device, "--batch-size", str(args.batch_size), "--precision", args.precision]
    argv += ["--tile-size", str(args.tile_size)]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    if args.var_model:
        argv += ["--var-model", args.var_model]
    return argv


def run_in_child(method: str, path: Path, args) -> dict | str:
    """The case's numbers, or why there are none (one line)."""
    try:
        done = subprocess.run(
            _child_argv(method, path, args), capture_output=True, text=True, timeout=args.timeout
        )
    except subprocess.TimeoutExpired:
        return f"timed out after {args.timeout:.0f} s"
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return lines[-1] if lines else f"exit code {done.returncode}"
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------
# the table


def markdown_table(rows: list[dict]) -> str:
    head = ["frames", "size", "method", "frames/s", "Mpx/s", "locs/frame", "peak RSS [MB]", "growth [MB]"]
    gpu = any(r.get("gpu_peak_mb") is not None for r in rows)
    if gpu:
        head.append("GPU peak [MB]")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "note" in r:
            cells = [f"{r['frames']:,}", r["size"], r["method"], r["note"]] + [""] * (len(head) - 4)
        else:
            cells = [
                f"{r['frames']:,}",
                r["size"],
                r["method"],
                f"{r['frames_per_s']:.3g}" if r["frames_per_s"] < 100 else f"{r['frames_per_s']:.0f}",
                f"{r['mpx_per_s']:.2f}",
                f"{r['locs_per_frame']:.1f}",
                f"{r['peak_rss_mb']:.0f}",
                f"{r['growth_mb']:.0f}",
            ]
            if gpu:
                cells.append("n/a" if r.get("gpu_peak_mb") is None else f"{r['gpu_peak_mb']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine(rows: list[dict]) -> str:
    import torch

    device = "CPU"
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    omp = os.environ.get("OMP_NUM_THREADS", "unset")
    threads = sorted({r["torch_threads"] for r in rows if "torch_threads" in r})
    picasso = max(1, int(0.75 * (os.cpu_count() or 1)))  # picasso.lib.n_workers()
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{device}; OMP_NUM_THREADS={omp}, torch threads {threads}, Picasso fit threads {picasso}"
    )


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    from napari_var_emitter.localize.batching import DEFAULT_BATCH_SIZE

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,128,256,512,2048", help="frame sizes [px] of the size sweep")
    parser.add_argument("--size-frames", type=int, default=100, help="frames per stack of the size sweep")
    parser.add_argument("--stacks", default="100,1000,10000", help="stack lengths of the length sweep")
    parser.add_argument("--stack-size", type=int, default=256, help="frame size [px] of the length sweep")
    parser.add_argument(
        "--methods", default=",".join(ALL_METHODS), help="comma-separated: var,classical,picasso"
    )
    parser.add_argument("--quick", action="store_true", help="a small run (see the module docstring)")
    parser.add_argument("--device", default="auto", help="device of the VAR model")
    parser.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="VAR frames (or tiles) per forward pass"
    )
    parser.add_argument(
        "--tile-size", type=int, default=256, help="VAR tiles frames larger than this; 0: never"
    )
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads per case (0: torch's)")
    parser.add_argument("--var-model", default=None, help="checkpoint (default: the bundled weights)")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "napari-var-emitter-bench",
        help="data folder",
    )
    parser.add_argument("--timeout", type=float, default=24 * 3600.0, help="seconds per case")
    parser.add_argument("--out", type=Path, default=None, help="also write the table (Markdown) here")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows (JSON) here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:  # one case, in this fresh process: its numbers as one JSON line
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        print(json.dumps(run_case(args.child, args.path, args)))
        return 0

    if args.quick:
        args.sizes, args.size_frames, args.stacks, args.stack_size = "64,128,256", 20, "100,300", 64
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        if m not in ALL_METHODS:
            parser.error(f"unknown method {m!r}; choose from {', '.join(ALL_METHODS)}")
    cases = [(s, args.size_frames) for s in _ints(args.sizes)]
    cases += [(args.stack_size, n) for n in _ints(args.stacks)]
    cases = list(dict.fromkeys(cases))  # a stack in both sweeps runs once
    args.work.mkdir(parents=True, exist_ok=True)

    rows = []
    for size, n_frames in cases:
        t0 = time.perf_counter()
        path = write_stack(stack_path(args.work, size, n_frames), size, n_frames)
        made = time.perf_counter() - t0
        if made > 1:
            print(f"  wrote {path} in {made:.0f} s", file=sys.stderr)
        for method in methods:
            result = run_in_child(method, path, args)
            if isinstance(result, str):
                rows.append({"method": method, "size": f"{size}x{size}", "frames": n_frames, "note": result})
                print(f"  {method} {size}x{size} x {n_frames}: {result}", file=sys.stderr)
                continue
            rows.append(result)
            print(
                f"  {method} {size}x{size} x {n_frames}: {result['frames_per_s']:.3g} frames/s, "
                f"peak {result['peak_rss_mb']:.0f} MB",
                file=sys.stderr,
            )
    table = markdown_table(rows)
    text = f"{machine(rows)}\n\n{table}\n"
    print(text)
    summary = _summary_lines(rows)
    if summary:
        print(summary)
    if args.out is not None:
        args.out.write_text(text + ("\n" + summary + "\n" if summary else ""))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


def _summary_lines(rows: list[dict]) -> str:
    """The ratios the speed and memory targets speak of, where this run measured them: ours against
    Picasso on the same frames, peak memory of a long stack, and frames/s by stack length."""
    by = {(r["method"], r["size"], r["frames"]): r for r in rows if "note" not in r}
    lines = []
    for (method, size, n), r in by.items():
        p = by.get(("picasso", size, n))
        if method == "var" and size == "64x64" and p is not None:
            lines.append(
                f"- var / picasso at 64x64, {n} frames: {r['frames_per_s'] / p['frames_per_s']:.2f}x "
                "(target: >= 1, aim 2)"
            )
    big = [r for (m, s, n), r in by.items() if m == "var" and s == "256x256" and n >= 10_000]
    for r in big:
        lines.append(f"- var, 10,000 x 256x256: peak RSS {r['peak_rss_mb'] / 1024:.2f} GB (target: < 3 GB)")
    var_256 = sorted((n, r) for (m, s, n), r in by.items() if m == "var" and s == "256x256")
    if len(var_256) >= 2:
        rates = ", ".join(f"{n:,}: {r['frames_per_s']:.3g}" for n, r in var_256)
        lines.append(f"- var frames/s by stack length at 256x256 (linear time: constant): {rates}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
