"""Where predict's time goes, stage by stage, on the CPU or a GPU.

python training/profile_predict.py [--device cuda] [--sizes 64,128] [--batches 64,256,1024]
                                   [--precision bf16] [--frames 1024] [--model PATH] [--out TABLE.md]

For each frame size and batch size it runs ``predict`` (bundled model unless ``--model``) over
simulated frames (gpu_check.py's LD-high-like set) twice after a warm-up: once plain, for frames/s
end to end, and once with every stage wrapped in a timer that synchronises the device before and
after it (which costs a little, so the stages' sum exceeds the plain run slightly). The stages are
the pipeline's own functions: reading and checking the chunk, the copy to the device and the
conversion to photons, the network, peak finding, duplicate removal, the maximum-likelihood
refinement, the confirmation, the copy to the host and the table of localizations; "rest" is what
the timers did not cover (the window indexing, the generator).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from napari_var_emitter.localize import load_model
from napari_var_emitter.localize import pipeline as predict_module
from napari_var_emitter.model.runtime import resolve_device

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check import simulated  # noqa: E402

STAGES = {  # the pipeline module's attribute -> stage name
    "read_chunk": "read chunk",
    "_photons_on": "to device, photons",
    "detections": "peak finding",
    "dedupe": "duplicates",
    "refine_fit": "refinement",
    "confirmed": "confirmation",
    "to_table": "to host, table",
}


class Timers:
    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.seconds: dict[str, float] = defaultdict(float)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def wrap(self, fn, name: str):
        def timed(*args, **kwargs):
            self.sync()
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            self.sync()
            self.seconds[name] += time.perf_counter() - start
            return result

        return timed


@contextlib.contextmanager
def timed_stages(timers: Timers):
    """Wrap predict's stages (its module's functions and the runner's call)."""
    saved = {name: getattr(predict_module, name) for name in STAGES}
    saved_runner_for = predict_module.runner_for

    def runner_for(*args, **kwargs):
        runner = saved_runner_for(*args, **kwargs)
        call = timers.wrap(runner.__call__, "network")

        class Timed:  # the runner, its call timed
            def __getattr__(self, name):
                return getattr(runner, name)

            def __call__(self, *a, **k):
                return call(*a, **k)

        return Timed()

    try:
        for name, stage in STAGES.items():
            setattr(predict_module, name, timers.wrap(saved[name], stage))
        predict_module.runner_for = runner_for
        yield
    finally:
        for name, fn in saved.items():
            setattr(predict_module, name, fn)
        predict_module.runner_for = saved_runner_for


def run(frames, model, device, batch, precision, compile_net=False) -> float:
    start = time.perf_counter()
    predict_module.predict(
        frames,
        model,
        device=device,
        batch_size=batch,
        batch_pixels=batch * frames.shape[-1] * frames.shape[-2],
        precision=precision,
        tile_size=None,
        sink=lambda locs: None,
        compile=compile_net,
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sizes", default="64,128")
    parser.add_argument("--batches", default="64,256,1024")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--frames", type=int, default=1024, help="frames per timed run")
    parser.add_argument("--model", default=None, help="a checkpoint (default: the bundled model)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--out", type=Path, default=None, help="also write the table (Markdown) here")
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    model = load_model(args.model, device)
    threads = f"CPU, {torch.get_num_threads()} threads"
    name = torch.cuda.get_device_name() if device.type == "cuda" else threads
    lines = [f"# predict, stage by stage, on {name} ({args.precision}, torch {torch.__version__})", ""]
    stage_names = ["read chunk", "to device, photons", "network", *list(STAGES.values())[2:]]
    head = "| size | batch | frames/s plain | " + " | ".join(stage_names) + " | rest | ms/frame timed |"
    lines += ["stages in ms per frame", "", head, "|" + "---|" * (len(stage_names) + 5)]
    print("\n".join(lines), flush=True)
    for size in [int(s) for s in args.sizes.split(",")]:
        pool = simulated(size, min(args.frames, 256), 10_200 + 2000 + size)
        frames = pool[np.arange(args.frames) % len(pool)]
        variants = [False, True] if args.compile else [False]
        for batch in [int(b) for b in args.batches.split(",")]:
            for compile_net in variants:
                run(frames[: 2 * batch], model, device, batch, args.precision, compile_net)  # warm-up
                plain = run(frames, model, device, batch, args.precision, compile_net)
                timers = Timers(device)
                with timed_stages(timers):
                    total = run(frames, model, device, batch, args.precision, compile_net)
                ms = {k: 1e3 * v / len(frames) for k, v in timers.seconds.items()}
                rest = 1e3 * total / len(frames) - sum(ms.values())
                label = f"{batch}{' compiled' if compile_net else ''}"
                row = (
                    f"| {size} | {label} | {len(frames) / plain:,.0f} | "
                    + " | ".join(f"{ms.get(s, 0.0):.3f}" for s in stage_names)
                    + f" | {rest:.3f} | {1e3 * total / len(frames):.3f} |"
                )
                lines.append(row)
                print(row, flush=True)
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
