"""How many frames (or tiles) go through the network at once, on the CPU and on a GPU.

A forward pass holds ``batch_size`` frames at most, and no more pixels than ``batch_pixels``; the
frames of a chunk are a whole number of passes, and every pass size divides ``batch_size``, so that
frame ranges starting at multiples of ``batch_size`` (the widget's range, the Dask chunks) run the
same passes as the whole stack and give the same numbers.
"""

from __future__ import annotations

import math

import torch

from ..model.runtime import resolve_device

# Pixels per forward pass on the CPU when ``batch_pixels`` is not given: the default model holds
# about 1.2 kB of activations per pixel, so ~600 MB. On a 2-core CPU, 64 frames of 64 x 64 were
# 1.2-1.35x faster than 16, and 128 about 5 % faster than 64 (training/RESULTS.md).
CPU_BATCH_PIXELS = 1 << 19
# Frames (or tiles) per forward pass on the CPU, at most: 64 x 64 px frames fill CPU_BATCH_PIXELS.
DEFAULT_BATCH_SIZE = 128
# On a GPU: frames per pass, at most, when ``batch_size`` is not given, and the share of the GPU's
# memory that a pass may take. The refinement's cost per pass is nearly fixed (a thousand small
# kernels), so a GPU wants thousands of frames per pass: on an H100, at 128 x 128 px the refinement
# took 0.16 ms per frame in passes of 256 frames and 0.04 ms in passes of 1,024.
GPU_BATCH_SIZE = 4096
GPU_MEMORY_SHARE = 0.4
# Peak GPU memory per input pixel and per channel of the model's widest full-resolution layer (bf16;
# fp32 takes ~1.7x): 460 (bf16) and 780 (fp32) bytes per pixel for the default model (width 32),
# 2,400 and 4,300 for the seed's sizes (width 96).
GPU_BYTES_PER_PIXEL_CHANNEL = 25
OTHER_BATCH_PIXELS = 1 << 22  # ~2-3 GB for the default model


def default_batch_size(device: str | torch.device = "auto") -> int:
    """Frames per pass when none is given: DEFAULT_BATCH_SIZE on the CPU, GPU_BATCH_SIZE on a GPU."""
    return DEFAULT_BATCH_SIZE if resolve_device(device).type == "cpu" else GPU_BATCH_SIZE


def default_batch_pixels(runner) -> int:
    """Pixels per pass when ``batch_pixels`` is not given: CPU_BATCH_PIXELS on the CPU; on CUDA,
    the power of two that keeps a pass's estimated peak within GPU_MEMORY_SHARE of the GPU's memory;
    OTHER_BATCH_PIXELS elsewhere (Apple MPS, whose memory torch does not report)."""
    device = runner.device
    if device.type == "cpu":
        return CPU_BATCH_PIXELS
    if device.type != "cuda":
        return OTHER_BATCH_PIXELS
    cfg = runner.net.config
    width = max(cfg.encoder_channels, cfg.conv_dim)
    per_pixel = GPU_BYTES_PER_PIXEL_CHANNEL * width
    per_pixel *= 1.0 if runner.dtype == torch.bfloat16 else 1.7
    memory = torch.cuda.get_device_properties(device).total_memory
    return 1 << max(16, int(math.log2(GPU_MEMORY_SHARE * memory / per_pixel)))


def largest_divisor(n: int, at_most: int) -> int:
    return max(d for d in range(1, max(1, min(n, at_most)) + 1) if n % d == 0)


def pass_sizes(frame_shape, batch_size: int, budget: int | None, plan) -> tuple[int, int]:
    """(frames per chunk, inputs per forward pass): both divide ``batch_size``; a pass holds at most
    ``budget`` pixels (None: no limit). ``plan``: the frames' tiles (:mod:`.tiling`), or None."""
    h, w = plan.tile_shape if plan is not None else frame_shape
    per_pass = batch_size if budget is None else largest_divisor(batch_size, int(budget) // (h * w))
    if plan is None:
        return per_pass, per_pass
    return largest_divisor(batch_size, per_pass // len(plan)), per_pass
