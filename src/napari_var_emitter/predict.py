"""Frames -> localizations and probability maps with a VAR emitter model.

``iter_predict`` is a generator (it yields ``PredictProgress`` and returns a
``PredictionResult``) so that the GUI can run it in a worker and the CLI and tests run it to
the end with ``predict``. Frames are read chunk by chunk, so numpy memory maps and dask arrays
are never loaded whole.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import numpy as np
import torch

from .camera import Camera
from .checkpoint import EmitterModel, load_checkpoint
from .errors import InputError
from .localizations import Localizations
from .postprocess import extract

MODES = ("progressive", "super_resolution")


@dataclass(frozen=True)
class PredictProgress:
    frames_done: int
    frames_total: int


@dataclass
class ProbabilityMap:
    """Emitter probability of one level, (T, h, w); ``factor`` = input pixels per cell (y, x)."""

    level: int
    name: str
    data: np.ndarray
    factor: tuple[float, float]


@dataclass
class PredictionResult:
    localizations: Localizations
    maps: dict[int, ProbabilityMap] = field(default_factory=dict)
    device: str = "cpu"
    mode: str = "progressive"
    grid_factor: float = 1.0


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """ "auto" takes CUDA, then Apple MPS, then the CPU; an unavailable explicit device is an error."""
    name = str(device)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("device 'cuda' was asked for, but no CUDA GPU is available (use 'auto' or 'cpu')")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError("device 'mps' was asked for, but Apple MPS is not available (use 'auto' or 'cpu')")
    if name not in ("cpu", "mps") and not name.startswith("cuda"):
        raise InputError(f"unknown device {name!r}: choose auto, cpu, cuda or mps")
    return torch.device(name)


def load_model(path=None, device: str | torch.device = "cpu") -> EmitterModel:
    """A model file (None: the bundled weights), loaded safely; CheckpointError if unusable."""
    return load_checkpoint(path, resolve_device(device))


def _frame_geometry(frames) -> tuple[int, int, int]:
    shape = getattr(frames, "shape", None)
    if shape is None:
        raise InputError("frames must be an array (T, Y, X) or (Y, X)")
    if len(shape) == 2:
        return 1, int(shape[0]), int(shape[1])
    if len(shape) != 3:
        raise InputError(f"frames must be (T, Y, X) or (Y, X), got {len(shape)} dimensions {tuple(shape)}")
    if len(shape) == 3 and shape[-1] in (3, 4) and shape[0] > 4:
        raise InputError(f"frames look like an RGB image {tuple(shape)}: give a grey-level stack (T, Y, X)")
    return int(shape[0]), int(shape[1]), int(shape[2])


def _read_chunk(frames, start: int, stop: int, ndim: int) -> np.ndarray:
    """Frames [start, stop) as float32 (n, Y, X), checked."""
    chunk = frames if ndim == 2 else frames[start:stop]
    chunk = np.asarray(chunk)
    if chunk.dtype.kind not in "uif":
        raise InputError(f"frames must hold numbers, got dtype {chunk.dtype}")
    chunk = chunk.astype(np.float32, copy=False).reshape(-1, *chunk.shape[-2:])
    if not np.all(np.isfinite(chunk)):
        raise InputError(f"frames {start}..{stop - 1} hold NaN or infinite values")
    return chunk


def iter_predict(
    frames,
    model: EmitterModel | None = None,
    camera: Camera | None = None,
    *,
    mode: str = "progressive",
    sr_factor: int = 2,
    threshold: float | None = None,
    device: str | torch.device = "auto",
    batch_size: int = 16,
    maps=(),
    frame_range: tuple[int, int] | None = None,
) -> Generator[PredictProgress, None, PredictionResult]:
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    T, H, W = _frame_geometry(frames)
    ndim = len(frames.shape)
    if T == 0 or H == 0 or W == 0:
        raise InputError(f"the stack is empty: shape {tuple(frames.shape)}")
    start, stop = (0, T) if frame_range is None else (int(frame_range[0]), int(frame_range[1]))
    if not 0 <= start < stop <= T:
        raise InputError(f"frame range {start}..{stop} is outside the stack's 0..{T}")
    torch_device = resolve_device(device)
    model = load_model(None, torch_device) if model is None else model
    net = model.net.to(torch_device).eval()
    camera = model.camera if camera is None else camera
    threshold = model.threshold if threshold is None else float(threshold)
    if not math.isfinite(threshold) or threshold <= 0:
        raise InputError(f"detection threshold must be > 0, got {threshold}")
    cfg = net.config
    n_prog = len(cfg.patch_nums)
    if mode == "super_resolution":
        if sr_factor < 2 or sr_factor not in [round(1 / s) for s in cfg.strides if s < 1]:
            supported = [round(1 / s) for s in cfg.strides if s < 1]
            raise InputError(
                f"super-resolution factor {sr_factor} is not supported by this model; choose from {supported}"
            )
        final_stride = 1.0 / sr_factor
    else:
        final_stride = cfg.strides[n_prog - 1]
    num_levels = cfg.strides.index(final_stride) + 1
    maps = tuple(int(m) for m in maps)
    for m in maps:
        if not 0 <= m < num_levels:
            raise InputError(f"map level {m} does not exist; this model has levels 0..{num_levels - 1}")
    map_data = {
        m: np.zeros((stop - start, math.ceil(H / cfg.strides[m]), math.ceil(W / cfg.strides[m])), np.float32)
        for m in maps
    }
    half = cfg.frame_window // 2
    psf_sigma_px = model.psf_sigma_nm / camera.pixel_size_nm
    parts = []
    use_autocast = torch_device.type == "cuda"
    for t0 in range(start, stop, batch_size):
        t1 = min(t0 + batch_size, stop)
        lo, hi = max(t0 - half, 0), min(t1 + half, T)
        chunk = _read_chunk(frames, lo, hi, ndim)
        photons = torch.from_numpy(camera.adu_to_photons(chunk)).to(torch_device)
        idx = torch.arange(t0, t1)[:, None] + torch.arange(-half, half + 1)[None, :]
        x = photons[(idx.clamp(0, T - 1) - lo).to(torch_device)]  # (B, window, H, W)
        with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=use_autocast):
            outputs = net(x, num_levels=num_levels)
        det = extract(outputs[-1], threshold, H, W)
        frame_index = det["b"].cpu().numpy() + t0
        parts.append(
            Localizations(
                frame=frame_index,
                **{k: det[k].float().cpu().numpy() for k in ("x", "y", "photons", "background", "bkgstd")},
                sigma=np.full(len(frame_index), psf_sigma_px),
                uncertainty=det["uncertainty"].float().cpu().numpy() * model.uncertainty_scale,
                probability=det["probability"].float().cpu().numpy(),
                grid_factor=1.0 / final_stride,
            )
        )
        for m in maps:
            map_data[m][t0 - start : t1 - start] = torch.sigmoid(outputs[m]["logits"]).float().cpu().numpy()
        yield PredictProgress(t1 - start, stop - start)
    names = [f"{math.ceil(H / s)}x{math.ceil(W / s)}" for s in cfg.strides]
    return PredictionResult(
        localizations=Localizations.concatenate(parts),
        maps={m: ProbabilityMap(m, names[m], map_data[m], (cfg.strides[m], cfg.strides[m])) for m in maps},
        device=str(torch_device),
        mode=mode,
        grid_factor=1.0 / final_stride,
    )


def predict(frames, model=None, camera=None, *, progress: Callable[[int, int], None] | None = None, **kwargs):
    """Run :func:`iter_predict` to the end; ``progress(frames_done, frames_total)`` if given."""
    gen = iter_predict(frames, model, camera, **kwargs)
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(event.frames_done, event.frames_total)
