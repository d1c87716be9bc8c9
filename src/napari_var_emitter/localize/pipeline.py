"""Frames -> localizations and probability maps with a VAR emitter model.

``iter_predict`` is a generator (it yields ``PredictProgress`` and returns a
``PredictionResult``) so that the GUI can run it in a worker and the CLI and tests run it to
the end with ``predict``. Frames are read chunk by chunk, so numpy memory maps, dask and zarr
arrays and :func:`.stream.open_frames` stacks are never loaded whole; frames larger than
``tile_size`` are cut into overlapping tiles (:mod:`.tiling`); localizations can be handed to a
``sink`` chunk by chunk instead of being kept (streaming to a file, :mod:`.stream`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import numpy as np
import torch

from ..camera import Camera
from ..errors import InputError
from ..io.frames import check_frame_shape, check_values
from ..io.localizations import Localizations
from ..model.checkpoint import EmitterModel, load_checkpoint
from ..model.runtime import PRECISIONS, runner_for
from .neighbours import dedupe
from .pooling import TemporalPooler, pooling_on
from .postprocess import extract
from .refine import CONFIRM_FLOOR, confirmed
from .refine import refine as refine_fit
from .tiling import DEFAULT_MARGIN, DEFAULT_TILE_SIZE, TilePlan, cut, owned, plan_tiles, stitch

MODES = ("progressive", "super_resolution")
# Of two detections of one frame closer than this (pixels), the less probable is dropped: an
# emitter on a cell edge can make both cells fire (closer emitters cannot be told apart anyway).
DUPLICATE_PX = 0.5
# Pixels per forward pass on the CPU when ``batch_pixels`` is not given: the default model holds
# about 1.2 kB of activations per pixel, so ~600 MB. Measured on this 2-core CPU (training/RESULTS.md):
# 64 frames of 64 x 64 were 1.2-1.35x faster than 16; 128 about 5 % faster than 64 (seventh session).
CPU_BATCH_PIXELS = 1 << 19
# Frames (or tiles) per forward pass on the CPU, at most: 64 x 64 px frames fill CPU_BATCH_PIXELS.
DEFAULT_BATCH_SIZE = 128
# On a GPU: frames per pass, at most, when ``batch_size`` is not given, and the share of the GPU's
# memory that a pass may take. The refinement's cost per pass is nearly fixed (a thousand small
# kernels), so a GPU wants thousands of frames per pass: measured on an H100, at 128 x 128 px the
# refinement took 0.16 ms per frame in passes of 256 frames and 0.04 ms in passes of 1,024
# (training/RESULTS.md, GPU).
GPU_BATCH_SIZE = 4096
GPU_MEMORY_SHARE = 0.4
# Peak GPU memory per input pixel and per channel of the model's widest full-resolution layer (bf16;
# fp32 takes ~1.7x): measured 460 (bf16) and 780 (fp32) bytes per pixel for the default model
# (width 32), 2,400 and 4,300 for the seed's sizes (width 96).
GPU_BYTES_PER_PIXEL_CHANNEL = 25
OTHER_BATCH_PIXELS = 1 << 22  # ~2-3 GB for the default model


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
    n_localizations: int = 0  # all of them, also those that went to a sink and are not kept here
    # unpooled runs (pool=False) without a sink: each localization's fit uncertainty (pixels, NaN
    # where not fitted), what pooling.TemporalPooler needs (the cluster pools on the client)
    position_sd: np.ndarray | None = None


class Output:
    """Where a run's localizations go, chunk by chunk: to ``sink`` if given (then not kept), else
    gathered; ``rows`` counts them either way."""

    def __init__(self, sink: Callable[[Localizations], None] | None = None) -> None:
        self.sink, self.parts, self.rows = sink, [], 0

    def __call__(self, locs: Localizations) -> None:
        self.rows += len(locs)
        if self.sink is not None:
            self.sink(locs)
        else:
            self.parts.append(locs)

    def gathered(self) -> Localizations:
        return Localizations.concatenate(self.parts)


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
    """(T, Y, X) of a stack or a frame, from its shape alone (nothing is read): io's checks."""
    shape = getattr(frames, "shape", None)
    if shape is None:
        raise InputError("frames must be an array (T, Y, X) or (Y, X)")
    return check_frame_shape(shape)


def _read_raw(frames, start: int, stop: int, ndim: int) -> np.ndarray:
    """Frames [start, stop) as (n, Y, X), checked, in their own dtype."""
    chunk = np.asarray(frames if ndim == 2 else frames[start:stop])
    if chunk.dtype.kind not in "uif":
        raise InputError(f"frames must hold numbers, got dtype {chunk.dtype}")
    check_values(chunk, name=f"frames {start}..{stop - 1}")
    return chunk.reshape(-1, *chunk.shape[-2:])


def _as_float32(chunk: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # values are checked to be within float32's range
        return chunk.astype(np.float32, copy=False)


def _photons_on(chunk: np.ndarray, camera: Camera, device: torch.device) -> torch.Tensor:
    """The chunk in photons, float32, on ``device``. A camera's integers travel as they are (uint16
    in half the bytes of float32) and become photons there, with the same float32 arithmetic."""
    if not chunk.flags.writeable or min(chunk.strides, default=0) < 0:
        chunk = np.array(chunk)  # torch takes neither read-only arrays (memory maps) nor negative strides
    if chunk.dtype == np.uint16:  # as int16 bits: torch's uint16 has few operations on some devices
        adu = torch.from_numpy(chunk.view(np.int16)).to(device).to(torch.int32) & 0xFFFF
    elif chunk.dtype in (np.uint8, np.int8, np.int16, np.int32, np.float32):
        adu = torch.from_numpy(chunk).to(device)
    else:
        adu = torch.from_numpy(_as_float32(chunk)).to(device)
    return camera.adu_to_photons(adu.to(torch.float32))


def _largest_divisor(n: int, at_most: int) -> int:
    return max(d for d in range(1, max(1, min(n, at_most)) + 1) if n % d == 0)


def default_batch_size(device: str | torch.device = "auto") -> int:
    """Frames per pass when none is given: DEFAULT_BATCH_SIZE on the CPU, GPU_BATCH_SIZE on a GPU."""
    return DEFAULT_BATCH_SIZE if resolve_device(device).type == "cpu" else GPU_BATCH_SIZE


def default_batch_pixels(runner) -> int | None:
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


def _pass_sizes(H, W, batch_size, budget: int | None, plan) -> tuple[int, int]:
    """(frames per chunk, inputs per forward pass): both divide ``batch_size``; a pass holds at most
    ``budget`` pixels (None: no limit)."""
    h, w = plan.tile_shape if plan is not None else (H, W)
    per_pass = batch_size if budget is None else _largest_divisor(batch_size, int(budget) // (h * w))
    if plan is None:
        return per_pass, per_pass
    return _largest_divisor(batch_size, per_pass // len(plan)), per_pass


def _detections_untiled(level: dict, threshold: float, H: int, W: int) -> dict[str, torch.Tensor]:
    det = extract(level, threshold, H, W)
    det["frame"] = det.pop("b")
    return det


def _detections_tiled(level: dict, threshold: float, plan: TilePlan, first: int) -> dict[str, torch.Tensor]:
    """Detections of N tiles (the first is tile ``first`` in (frame, tile) order), each kept only
    by the tile whose core holds its cell; positions in frame pixels, ``frame`` in the chunk."""
    s = level["stride"]
    th, tw = plan.tile_shape
    # Peak finding with zero offsets gives each detection's cell centre (in tile pixels) ...
    det = extract({**level, "offset": torch.zeros_like(level["offset"])}, threshold, th, tw)
    n = det.pop("b")
    row = torch.round((det["y"] + 0.5) / s - 0.5).long()
    col = torch.round((det["x"] + 0.5) / s - 0.5).long()
    # ... and the offset at that cell gives the position, as extract does for a whole frame.
    off = level["offset"][n, :, row, col].float()  # (N, 2 [x, y]) cells
    k = (n + first) % len(plan.tiles)
    y0 = torch.tensor([t.y0 for t in plan.tiles], device=n.device)[k]
    x0 = torch.tensor([t.x0 for t in plan.tiles], device=n.device)[k]
    keep = owned(plan, k, det["y"], det["x"], s)
    det["x"] = det["x"] + off[:, 0] * s + x0
    det["y"] = det["y"] + off[:, 1] * s + y0
    H, W = plan.height, plan.width
    keep &= (det["x"] >= -0.5) & (det["x"] < W - 0.5) & (det["y"] >= -0.5) & (det["y"] < H - 0.5)
    det["frame"] = (n + first) // len(plan.tiles)
    # (frame, cell row, cell column) in the whole frame: the order of an untiled run
    det["_row"], det["_col"] = row + torch.round(y0 / s).long(), col + torch.round(x0 / s).long()
    return {key: v[keep] for key, v in det.items()}


def _to_numpy(det: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {
        k: (v.float() if v.dtype in (torch.float16, torch.bfloat16) else v).cpu().numpy()
        for k, v in det.items()
    }


def _sorted_like_untiled(
    dets: list[dict[str, torch.Tensor]], plan: TilePlan, stride: float
) -> dict[str, torch.Tensor]:
    """The tiles' detections in the order of an untiled run: by frame, cell row, cell column."""
    det = {k: torch.cat([d[k] for d in dets]) for k in dets[0]}
    rows, cols = math.ceil(plan.height / stride) + 2, math.ceil(plan.width / stride) + 2
    key = (det["frame"] * rows + det.pop("_row") + 1) * cols + det.pop("_col") + 1
    order = torch.argsort(key, stable=True)
    return {k: v[order] for k, v in det.items()}


def iter_predict(
    frames,
    model: EmitterModel | None = None,
    camera: Camera | None = None,
    *,
    mode: str = "progressive",
    sr_factor: int = 2,
    threshold: float | None = None,
    device: str | torch.device = "auto",
    batch_size: int | None = None,
    maps=(),
    frame_range: tuple[int, int] | None = None,
    tile_size: int | None = DEFAULT_TILE_SIZE,
    tile_margin: int = DEFAULT_MARGIN,
    precision: str = "auto",
    compile: bool = False,
    batch_pixels: int | None = None,
    sink: Callable[[Localizations], None] | None = None,
    refine: bool = True,
    confirm: bool = True,
    pool: bool | None = None,
    sparse: bool = True,
    local_attention: bool = False,
) -> Generator[PredictProgress, None, PredictionResult]:
    """Predict frame chunk by frame chunk; yields progress, returns a :class:`PredictionResult`.

    ``batch_size``: frames (or tiles of large frames) per forward pass, at most (None:
    :func:`default_batch_size`, 128 on the CPU, 4,096 on a GPU); fewer where they would exceed
    ``batch_pixels`` pixels (None: :func:`default_batch_pixels`, from the GPU's memory), always a
    divisor of ``batch_size`` (so that ranges starting at multiples of
    ``batch_size`` run the same batches as the whole stack). Frames larger than
    ``tile_size`` on a side are cut into overlapping tiles (see :mod:`tiling`); ``None`` never
    tiles. ``precision`` ("auto": bf16 where the hardware is fast at it, "fp32", "bf16") and
    ``compile`` (``torch.compile``) go to :class:`~.model.runtime.InferenceRunner`. ``refine``
    fits every emitter by Poisson maximum likelihood, with its detected neighbours' light in the
    model, starting from the network's answer (see :mod:`refine`): the positions reach the
    Cramer-Rao bound and lose the network's pull toward pixel centres. With ``refine``,
    ``confirm`` also keeps candidates below ``threshold`` (down to ``refine.CONFIRM_FLOOR``) that
    the fit confirms as spots (:func:`.refine.confirmed`); without it only ``threshold`` decides.
    ``pool`` (None: for models that see several frames, which are for movies) averages each fitted
    localization with those of the same emitter in the frames before and after (:mod:`.pooling`);
    it needs ``refine``. ``sparse`` computes the finest level only around the cells where the level
    before sees emitters (the same numbers there; see :class:`~.model.runtime.InferenceRunner`):
    the same localizations, faster on sparse frames; its map is ~0 away from emitters.
    ``local_attention``: in frames (or tiles) where it pays, the attention levels attend within
    windows of the training frame's size plus a margin, not over the whole frame (see
    ``TrueVAREmitterPredictor.forward``): faster on large frames, slightly different answers.

    Memory: only the frames of one chunk (plus the frame window's neighbours) are read at a time.
    The localizations of each chunk go to ``sink`` if given, and are then not kept (the result's
    table is empty and ``n_localizations`` counts them); otherwise they are gathered, about 80
    bytes per localization. Maps are kept only for the levels in ``maps``.
    """
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if precision not in PRECISIONS:  # before anything is read or loaded
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if batch_size is not None and int(batch_size) < 1:
        raise InputError(f"batch size must be >= 1, got {batch_size}")
    if batch_pixels is not None and int(batch_pixels) < 1:
        raise InputError(f"batch_pixels must be >= 1, got {batch_pixels}")
    T, H, W = _frame_geometry(frames)
    ndim = len(frames.shape)
    if T == 0 or H == 0 or W == 0:
        raise InputError(f"the stack is empty: shape {tuple(frames.shape)}")
    start, stop = (0, T) if frame_range is None else (int(frame_range[0]), int(frame_range[1]))
    if not 0 <= start < stop <= T:
        raise InputError(f"frame range {start}..{stop} is outside the stack's 0..{T}")
    torch_device = resolve_device(device)
    batch_size = default_batch_size(torch_device) if batch_size is None else int(batch_size)
    model = load_model(None, torch_device) if model is None else model
    runner = runner_for(
        model.net,
        torch_device,
        precision=precision,
        compile=bool(compile),
        sparse=bool(sparse),
        local_attention=bool(local_attention),
    )
    net = runner.net
    camera = model.camera if camera is None else camera
    threshold = model.threshold if threshold is None else float(threshold)
    if not math.isfinite(threshold) or threshold <= 0:
        raise InputError(f"detection threshold must be > 0, got {threshold}")
    candidates = min(threshold, CONFIRM_FLOOR) if (refine and confirm) else threshold
    pooler = TemporalPooler() if pooling_on(model.config.frame_window, pool, refine) else None
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
    plan = None
    if tile_size is not None and max(H, W) > int(tile_size):
        try:
            plan = plan_tiles(H, W, int(tile_size), int(tile_margin), cfg.pad_multiple)
        except ValueError as exc:
            raise InputError(str(exc)) from None
    budget = default_batch_pixels(runner) if batch_pixels is None else int(batch_pixels)
    chunk_frames, per_pass = _pass_sizes(H, W, batch_size, budget, plan)
    map_data = {
        m: np.zeros((stop - start, math.ceil(H / cfg.strides[m]), math.ceil(W / cfg.strides[m])), np.float32)
        for m in maps
    }
    half = cfg.frame_window // 2
    psf_sigma_px = model.psf_sigma_nm / camera.pixel_size_nm
    emit, sd_parts = Output(sink), []

    for t0 in range(start, stop, chunk_frames):
        t1 = min(t0 + chunk_frames, stop)
        lo, hi = max(t0 - half, 0), min(t1 + half, T)
        photons = _photons_on(_read_raw(frames, lo, hi, ndim), camera, torch_device)
        idx = torch.arange(t0, t1)[:, None] + torch.arange(-half, half + 1)[None, :]
        x = photons[(idx.clamp(0, T - 1) - lo).to(torch_device)]  # (B, window, H, W)
        if plan is None:
            outputs = runner(x, num_levels)
            det = _detections_untiled(outputs[-1], candidates, H, W)
            for m in maps:
                probability = torch.sigmoid(outputs[m]["logits"]).float().cpu().numpy()
                map_data[m][t0 - start : t1 - start] = probability
        else:
            tiles = cut(x, plan)  # (B * K, window, th, tw)
            dets = []
            for g in range(0, tiles.shape[0], per_pass):
                outputs = runner(tiles[g : g + per_pass], num_levels)
                dets.append(_detections_tiled(outputs[-1], candidates, plan, g))
                for m in maps:
                    probability = torch.sigmoid(outputs[m]["logits"]).float().cpu().numpy()
                    stitch(probability, plan, cfg.strides[m], map_data[m][t0 - start : t1 - start], g)
            det = _sorted_like_untiled(dets, plan, final_stride)
        # post-processing stays on the model's device: duplicates, then the maximum-likelihood fit
        det["uncertainty"] = det["uncertainty"] * model.uncertainty_scale
        if DUPLICATE_PX > 0:  # two cells firing for one emitter
            keep = dedupe(det["frame"], det["x"], det["y"], det["probability"], DUPLICATE_PX)
            det = {k: v[keep] for k, v in det.items()}
        if refine:
            fit = refine_fit(
                photons[t0 - lo : t1 - lo],
                det["frame"],
                det["x"],
                det["y"],
                det["photons"],
                det["background"],
                det["uncertainty"],
                camera,
                psf_sigma_px,
            )
            det.update({k: fit[k] for k in ("x", "y", "photons", "background", "uncertainty", "position_sd")})
            det["bkgstd"] = fit["background"].clamp_min(0.0).sqrt()
            if confirm:
                keep = confirmed(det["probability"], fit, threshold)
                det = {k: v[keep] for k, v in det.items()}
        det = _to_numpy(det)
        locs = Localizations(
            frame=det["frame"] + t0,
            **{k: det[k].astype(np.float64) for k in ("x", "y", "photons", "background", "bkgstd")},
            sigma=np.full(len(det["frame"]), psf_sigma_px),
            uncertainty=det["uncertainty"].astype(np.float64),
            probability=det["probability"].astype(np.float64),
            grid_factor=1.0 / final_stride,
        )
        position_sd = det["position_sd"].astype(np.float64) if refine else np.full(len(locs), np.nan)
        if pooler is not None:
            locs = pooler.feed(locs, position_sd, t1)
        else:
            sd_parts.append(position_sd)
        emit(locs)
        yield PredictProgress(t1 - start, stop - start)
    if pooler is not None:
        emit(pooler.flush())
    names = [f"{math.ceil(H / s)}x{math.ceil(W / s)}" for s in cfg.strides]
    return PredictionResult(
        localizations=emit.gathered(),
        maps={m: ProbabilityMap(m, names[m], map_data[m], (cfg.strides[m], cfg.strides[m])) for m in maps},
        device=str(torch_device),
        mode=mode,
        grid_factor=1.0 / final_stride,
        n_localizations=emit.rows,
        position_sd=np.concatenate(sd_parts) if (pooler is None and sink is None and sd_parts) else None,
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
