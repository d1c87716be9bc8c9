#!/usr/bin/env python
"""The bundled networks under ONNX Runtime and OpenVINO against torch, on the CPU: speed and agreement.

python training/bench_onnx.py [--model bundled] [--model bundled:window-3] [--batch 128] [--repeats 5]

Needs the ``bench`` extra (``pip install -e ".[bench]"``: onnxruntime, onnx, onnxscript, openvino).
Each bundled network runs on ``--batch`` simulated 64 x 64 frames (LD-high-like, converted to
photons with the simulation's camera) six ways: as ``predict`` runs it (``InferenceRunner``: a
bfloat16 copy where the CPU is fast at it, the sparse finest level), in float32 with every level
dense, and exported to ONNX (``torch.onnx.export``, every level dense: the sparse level's cell
count depends on the data) and run on the same threads by ONNX Runtime, in float32 and quantized to
int8 (static, QDQ, the convolutions and matrix products, ranges from the same frames), and by
OpenVINO, in float32 and with its bfloat16 inference precision. Prints one Markdown table: ms per
frame (best of ``--repeats`` passes) and, for the exported graphs, the largest difference from
torch's float32 outputs relative to each output's largest value.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

MISSING = (
    'bench_onnx.py needs ONNX Runtime and OpenVINO: pip install -e ".[bench]" '
    "(onnxruntime, onnx, onnxscript, openvino)"
)


def best_ms(run, frames: int, repeats: int) -> float:
    run()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, (time.perf_counter() - start) / frames * 1e3)
    return best


def photons(window: int, batch: int):
    """``(batch, window, 64, 64)`` photons: consecutive frames of a seeded sparse movie."""
    import torch

    from napari_var_emitter.simulation import SimulationConfig, simulate_movie

    config = SimulationConfig(frame_size=(64, 64), density_per_um2=0.3, photons=(1000.0, 8000.0))
    movie = simulate_movie(config, batch + window - 1, seed=5)
    frames = config.camera.adu_to_photons(movie.frames.float())
    return torch.stack([frames[i : i + window] for i in range(batch)])


def relative_difference(got, reference) -> float:
    """The largest difference of any output from torch's, relative to that output's largest value."""
    import numpy as np

    return max(
        float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)) for a, b in zip(got, reference, strict=True)
    )


def rows(spec: str, batch: int, repeats: int, threads: int):
    import onnxruntime as ort
    import openvino
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from napari_var_emitter.localize import load_model
    from napari_var_emitter.model.runtime import InferenceRunner

    net = load_model(None if spec == "bundled" else spec).net.eval()
    levels = len(net.config.patch_nums)
    x = photons(net.config.frame_window, batch)

    class Calibration(CalibrationDataReader):  # int8 ranges from the timed frames themselves
        def __init__(self, feed):
            self.feeds = iter([feed])

        def get_next(self):
            return next(self.feeds, None)

    class Dense(torch.nn.Module):  # every level's output tensors, as one flat tuple
        def forward(self, frames):
            return tuple(
                v for out in net(frames, num_levels=levels) for v in out.values() if torch.is_tensor(v)
            )

    for precision, sparse, label in (
        ("auto", True, "torch, as predict runs it"),
        ("fp32", False, "torch fp32, dense"),
    ):
        runner = InferenceRunner(net, torch.device("cpu"), precision=precision, sparse=sparse)
        label = f"{label} ({runner.precision})" if precision == "auto" else label
        yield spec, label, best_ms(lambda r=runner: r(x, levels), batch, repeats), ""

    with torch.inference_mode():
        reference = [t.numpy() for t in Dense()(x)]
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "net.onnx", Path(tmp) / "net_int8.onnx"
        with torch.inference_mode(), contextlib.redirect_stdout(sys.stderr):  # its progress lines
            torch.onnx.export(Dense(), (x,), str(fp32), dynamo=True)
        feed = {"frames": x.numpy()}
        quantize_static(
            str(fp32),
            str(int8),
            Calibration(feed),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["Conv", "MatMul"],
        )
        for path, label in ((fp32, "ONNX Runtime fp32, dense"), (int8, "ONNX Runtime int8 (static), dense")):
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            worst = relative_difference(session.run(None, feed), reference)
            ms = best_ms(lambda s=session: s.run(None, feed), batch, repeats)
            yield spec, label, ms, f"{worst:.1e}"
        core = openvino.Core()
        graph = core.read_model(str(fp32))
        for hint, label in (("f32", "OpenVINO fp32, dense"), ("bf16", "OpenVINO bf16, dense")):
            config = {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads}
            compiled = core.compile_model(graph, "CPU", config)
            request = compiled.create_infer_request()
            result = request.infer({0: feed["frames"]})
            got = [result[output] for output in compiled.outputs]
            ms = best_ms(lambda r=request: r.infer({0: feed["frames"]}), batch, repeats)
            yield spec, label, ms, f"{relative_difference(got, reference):.1e}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=None, help="bundled or bundled:window-3")
    parser.add_argument("--batch", type=int, default=128, help="frames per pass")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    try:
        import onnxruntime  # noqa: F401
        import openvino  # noqa: F401
    except ImportError:
        print(MISSING, file=sys.stderr)
        return 2
    import torch

    threads = torch.get_num_threads()
    print(
        f"| model | runtime ({threads} threads, batch {args.batch}) | network, ms/frame "
        "| max relative difference from torch fp32 |"
    )
    print("|---|---|---|---|")
    for spec in args.model or ["bundled", "bundled:window-3"]:
        for model, runtime, ms, diff in rows(spec, args.batch, args.repeats, threads):
            print(f"| {model} | {runtime} | {ms:.2f} | {diff} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
