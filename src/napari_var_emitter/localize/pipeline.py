"""Frames -> localizations and probability maps: the prediction pipeline.

One run is a short composition of named stages::

    plan_run     the geometry, the chunks of frames, the tiles, the passes, the network's runner
    read_window  one chunk of frames (and its neighbours for models that see several), in photons
    detect       the network's levels, then the finest level's detections (tiled or not)
    refine       the maximum-likelihood fit of every detection, and its confirmation of dim ones
    to_table     the chunk's Localizations (and its probability maps)
    collect      pooling across frames (movies), then the rows go to a sink or are gathered

``iter_predict`` runs them on one process as a generator (it yields ``PredictProgress`` and returns a
``PredictionResult``) so that the GUI can run it in a worker and the CLI and tests to the end with
``predict``; the Dask path (:mod:`.cluster`) runs ``localize_chunk`` on its workers and ``collect``
on the client. Frames are read chunk by chunk, so numpy memory maps, dask and zarr arrays and
:func:`..io.stream.open_frames` stacks are never loaded whole. Every option is a field of
:class:`.options.PredictOptions`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..camera import Camera
from ..errors import InputError
from ..io.frames import frame_geometry, read_chunk
from ..io.localizations import Localizations
from ..model.checkpoint import EmitterModel, load_checkpoint
from ..model.runtime import resolve_device, runner_for
from ..progress import run_to_end
from . import classical
from .batching import default_batch_pixels, default_batch_size, pass_sizes
from .detect import detections, in_untiled_order, tile_detections
from .neighbours import dedupe
from .options import PredictOptions
from .pooling import TemporalPooler, pooling_on
from .refine import CONFIRM_FLOOR, confirmed, pending, side_lobes
from .refine import refine as refine_fit
from .tiling import TilePlan, cut, plan_tiles, stitch

# Of two detections of one frame closer than this (pixels), the less probable is dropped: an
# emitter on a cell edge can make both cells fire (closer emitters cannot be told apart anyway).
DUPLICATE_PX = 0.5
# The classical baseline reads this many pixels at a time (its fits are per frame: any chunking
# gives the same rows).
CLASSICAL_CHUNK_PIXELS = 1 << 21


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


@dataclass
class ChunkResult:
    """What one chunk of frames [start, stop) gives: its rows (frames of the whole stack), each row's
    fit uncertainty (pixels, NaN where not fitted: what pooling weighs), its probability maps, and
    for runs that pool, which rows only an adjacent frame can confirm (:func:`.refine.pending`)."""

    start: int
    stop: int
    locs: Localizations
    position_sd: np.ndarray
    maps: dict[int, np.ndarray] = field(default_factory=dict)  # level -> (stop - start, h, w)
    pending: np.ndarray | None = None


@dataclass
class RunPlan:
    """What every chunk of one run shares. ``model`` is None for the classical baseline."""

    options: PredictOptions
    model: EmitterModel | None
    camera: Camera
    shape: tuple[int, int, int]  # (T, H, W) of the whole stack
    start: int
    stop: int
    chunk_frames: int
    device: torch.device
    pool: bool
    runner: object = None  # model.runtime.InferenceRunner
    tiles: TilePlan | None = None
    per_pass: int = 0  # inputs (frames or tiles) per forward pass
    num_levels: int = 0  # levels run: up to the camera's pixels, or finer for super-resolution
    final_stride: float = 1.0
    maps: tuple[int, ...] = ()
    map_shapes: dict[int, tuple[int, int]] = field(default_factory=dict)
    level_names: tuple[str, ...] = ()
    threshold: float = 0.0
    candidates: float = 0.0  # lowest probability that reaches the fit (with confirm)
    psf_sigma_px: float = 1.0

    def chunks(self) -> list[tuple[int, int]]:
        return [
            (a, min(a + self.chunk_frames, self.stop))
            for a in range(self.start, self.stop, self.chunk_frames)
        ]


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


# ---------------------------------------------------------------------------------------------------
# 1. plan


def plan_run(
    frames, model: EmitterModel | None, options: PredictOptions, maps=(), frame_range=None
) -> RunPlan:
    """Check the frames (their shape only: nothing is read) and plan the run."""
    T, H, W = frame_geometry(frames)
    start, stop = (0, T) if frame_range is None else (int(frame_range[0]), int(frame_range[1]))
    if not 0 <= start < stop <= T:
        raise InputError(f"frame range {start}..{stop} is outside the stack's 0..{T}")
    device = resolve_device(options.device)
    if options.classical:
        if maps:
            raise InputError("the classical baseline makes no probability maps")
        camera = options.camera or Camera()
        chunk = max(1, CLASSICAL_CHUNK_PIXELS // (H * W))
        return RunPlan(options, None, camera, (T, H, W), start, stop, chunk, device, pool=False)

    model = load_checkpoint(None, device) if model is None else model
    cfg = model.net.config
    runner = runner_for(
        model.net,
        device,
        precision=options.precision,
        compile=options.compile,
        sparse=options.sparse,
        local_attention=options.local_attention,
    )
    camera = options.camera or model.camera
    if options.psf is not None:
        options.psf.check_pixel_size(camera.pixel_size_nm)
    threshold = model.threshold if options.threshold is None else float(options.threshold)
    final_stride = output_stride(cfg, options)
    num_levels = cfg.strides.index(final_stride) + 1
    maps = tuple(int(m) for m in maps)
    for m in maps:
        if not 0 <= m < num_levels:
            raise InputError(f"map level {m} does not exist; this model has levels 0..{num_levels - 1}")
    tiles = None
    if options.tile_size is not None and max(H, W) > options.tile_size:
        try:
            tiles = plan_tiles(H, W, options.tile_size, options.tile_margin, cfg.pad_multiple)
        except ValueError as exc:
            raise InputError(str(exc)) from None
    batch_size = default_batch_size(device) if options.batch_size is None else options.batch_size
    budget = default_batch_pixels(runner) if options.batch_pixels is None else options.batch_pixels
    chunk_frames, per_pass = pass_sizes((H, W), batch_size, budget, tiles)
    return RunPlan(
        options,
        model,
        camera,
        (T, H, W),
        start,
        stop,
        chunk_frames,
        device,
        pool=pooling_on(cfg.frame_window, options.pool, options.refine),
        runner=runner,
        tiles=tiles,
        per_pass=per_pass,
        num_levels=num_levels,
        final_stride=final_stride,
        maps=maps,
        map_shapes={m: (math.ceil(H / cfg.strides[m]), math.ceil(W / cfg.strides[m])) for m in maps},
        level_names=tuple(f"{math.ceil(H / s)}x{math.ceil(W / s)}" for s in cfg.strides),
        threshold=threshold,
        candidates=min(threshold, CONFIRM_FLOOR) if (options.refine and options.confirm) else threshold,
        psf_sigma_px=psf_sigma_nm(model, options, camera) / camera.pixel_size_nm,
    )


def psf_sigma_nm(model: EmitterModel | None, options: PredictOptions, camera: Camera) -> float:
    """The PSF sigma [nm] a run's fit uses: the options', else the measured PSF's, else the model's
    (the classical baseline's default: 1.2 camera pixels)."""
    if options.psf_sigma_nm is not None:
        return float(options.psf_sigma_nm)
    if options.psf is not None:
        return options.psf.sigma_nm
    if model is None:
        return classical.DEFAULT_PSF_SIGMA_PX * camera.pixel_size_nm
    return float(model.psf_sigma_nm)


def output_stride(cfg, options: PredictOptions) -> float:
    """Input pixels per cell of the level the localizations come from: the camera's pixels
    (progressive mode) or ``1 / sr_factor`` (super-resolution, where the model has that level)."""
    if options.mode != "super_resolution":
        return cfg.strides[len(cfg.patch_nums) - 1]
    supported = [round(1 / s) for s in cfg.strides if s < 1]
    if options.sr_factor not in supported:
        raise InputError(
            f"super-resolution factor {options.sr_factor} is not supported by this model; "
            f"choose from {supported}"
        )
    return 1.0 / options.sr_factor


# ---------------------------------------------------------------------------------------------------
# 2. one chunk: read, detect, refine, table


def localize_chunk(run: RunPlan, frames, t0: int, t1: int) -> ChunkResult:
    """Frames [t0, t1) of ``frames`` -> their rows (unpooled) and maps."""
    if run.model is None:
        return _classical_chunk(run, frames, t0, t1)
    half = run.model.net.config.frame_window // 2
    lo = max(t0 - half, 0)
    photons, x = read_window(run, frames, t0, t1, half)
    det, maps = detect(run, x)
    det = refine(run, det, photons[t0 - lo : t1 - lo])
    locs, position_sd = to_table(run, det, t0)
    pending_rows = det["pending"].cpu().numpy() if "pending" in det else None
    return ChunkResult(t0, t1, locs, position_sd, maps, pending_rows)


def read_window(run: RunPlan, frames, t0: int, t1: int, half: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames [t0 - half, t1 + half) (clamped to the stack) in photons on the run's device, and the
    network's input (t1 - t0, 2 * half + 1, H, W): for each frame t, frames t - half .. t + half,
    the stack's first and last frames repeated beyond its ends."""
    T = run.shape[0]
    lo, hi = max(t0 - half, 0), min(t1 + half, T)
    photons = _photons_on(read_chunk(frames, lo, hi), run.camera, run.device)
    idx = torch.arange(t0, t1)[:, None] + torch.arange(-half, half + 1)[None, :]
    return photons, photons[(idx.clamp(0, T - 1) - lo).to(run.device)]


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
        with np.errstate(over="ignore"):  # values are checked to be within float32's range
            adu = torch.from_numpy(chunk.astype(np.float32, copy=False)).to(device)
    return camera.adu_to_photons(adu.to(torch.float32))


def detect(run: RunPlan, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[int, np.ndarray]]:
    """The network on the chunk's input ``x`` (B, window, H, W), in passes (of tiles, for large
    frames): the finest level's detections above ``run.candidates`` (``frame`` in the chunk,
    duplicates within ``DUPLICATE_PX`` dropped) and the probability maps of ``run.maps``."""
    _, H, W = run.shape
    B = x.shape[0]
    maps = {m: np.zeros((B, *run.map_shapes[m]), np.float32) for m in run.maps}
    strides = run.model.net.config.strides
    if run.tiles is None:
        outputs = run.runner(x, run.num_levels)
        det = detections(outputs[-1], run.candidates, H, W)
        for m in run.maps:
            maps[m][:] = torch.sigmoid(outputs[m]["logits"]).float().cpu().numpy()
    else:
        tiles = cut(x, run.tiles)  # (B * K, window, th, tw)
        dets = []
        for g in range(0, tiles.shape[0], run.per_pass):
            outputs = run.runner(tiles[g : g + run.per_pass], run.num_levels)
            dets.append(tile_detections(outputs[-1], run.candidates, run.tiles, g))
            for m in run.maps:
                probability = torch.sigmoid(outputs[m]["logits"]).float().cpu().numpy()
                stitch(probability, run.tiles, strides[m], maps[m], g)
        det = in_untiled_order(dets, run.tiles, run.final_stride)
    # post-processing stays on the model's device: duplicates, then the maximum-likelihood fit
    det["uncertainty"] = det["uncertainty"] * run.model.uncertainty_scale
    if DUPLICATE_PX > 0:  # two cells firing for one emitter
        keep = dedupe(det["frame"], det["x"], det["y"], det["probability"], DUPLICATE_PX)
        det = {k: v[keep] for k, v in det.items()}
    return det, maps


def refine(run: RunPlan, det: dict[str, torch.Tensor], photons: torch.Tensor) -> dict[str, torch.Tensor]:
    """With ``refine``: every detection fitted by Poisson maximum likelihood on ``photons`` (the
    chunk's own frames), with its neighbours' light in the model (:mod:`.refine`); with ``confirm``,
    candidates below the threshold are kept where the fit confirms them and unsure detections that
    are a brighter neighbour's side lobe are dropped, else only the threshold decides. Runs that pool
    also keep the candidates only an adjacent frame can confirm, marked ``pending`` (the pooling
    decides)."""
    if not run.options.refine:
        return det
    fit = refine_fit(
        photons,
        det["frame"],
        det["x"],
        det["y"],
        det["photons"],
        det["background"],
        det["uncertainty"],
        run.camera,
        run.psf_sigma_px,
        psf=run.options.psf,
    )
    det.update({k: fit[k] for k in ("x", "y", "photons", "background", "uncertainty", "position_sd")})
    det["bkgstd"] = fit["background"].clamp_min(0.0).sqrt()
    if run.options.confirm:
        keep = confirmed(det["probability"], fit, run.threshold)
        if run.pool:
            det["pending"] = pending(det["probability"], fit, run.threshold)
            keep |= det["pending"]
        keep &= ~side_lobes(det["frame"], det["x"], det["y"], det["photons"], run.psf_sigma_px)
        det = {k: v[keep] for k, v in det.items()}
    return det


def to_table(run: RunPlan, det: dict[str, torch.Tensor], t0: int) -> tuple[Localizations, np.ndarray]:
    """The chunk's detections as a table (frames of the whole stack) and each row's fit uncertainty."""
    det = {
        k: (v.float() if v.dtype in (torch.float16, torch.bfloat16) else v).cpu().numpy()
        for k, v in det.items()
    }
    locs = Localizations(
        frame=det["frame"] + t0,
        **{k: det[k].astype(np.float64) for k in ("x", "y", "photons", "background", "bkgstd")},
        sigma=np.full(len(det["frame"]), run.psf_sigma_px),
        uncertainty=det["uncertainty"].astype(np.float64),
        probability=det["probability"].astype(np.float64),
        grid_factor=1.0 / run.final_stride,
    )
    refined = run.options.refine
    position_sd = det["position_sd"].astype(np.float64) if refined else np.full(len(locs), np.nan)
    return locs, position_sd


def _classical_chunk(run: RunPlan, frames, t0: int, t1: int) -> ChunkResult:
    """The Gaussian-fit baseline on frames [t0, t1) (:mod:`.classical`)."""
    options, kwargs = run.options, {}
    if options.threshold is not None:
        kwargs["threshold"] = options.threshold
    if options.psf_sigma_nm is not None:
        kwargs["psf_sigma_px"] = options.psf_sigma_nm / run.camera.pixel_size_nm
    locs = classical.localize(read_chunk(frames, t0, t1), run.camera, **kwargs)
    locs.frame += t0
    return ChunkResult(t0, t1, locs, np.full(len(locs), np.nan))


# ---------------------------------------------------------------------------------------------------
# 3. collect


def collect(
    chunks: Iterable[ChunkResult],
    *,
    start: int,
    stop: int,
    pool: bool,
    sink: Callable[[Localizations], None] | None = None,
    map_shapes: dict[int, tuple[int, int]] | None = None,
) -> Generator[PredictProgress, None, tuple[Output, dict[int, np.ndarray]]]:
    """The chunks of frames [start, stop), in order -> their rows, pooled across frames where
    ``pool`` (:class:`.pooling.TemporalPooler`: the same rows whatever the chunking), to ``sink`` or
    gathered; yields progress after each chunk; returns the output and the maps."""
    pooler = TemporalPooler() if pool else None
    emit = Output(sink)
    maps = {m: np.zeros((stop - start, *shape), np.float32) for m, shape in (map_shapes or {}).items()}
    for chunk in chunks:
        locs = chunk.locs
        if pooler is not None:
            locs = pooler.feed(locs, chunk.position_sd, chunk.stop, chunk.pending)
        emit(locs)
        for m, data in chunk.maps.items():
            maps[m][chunk.start - start : chunk.stop - start] = data
        yield PredictProgress(chunk.stop - start, stop - start)
    if pooler is not None:
        emit(pooler.flush())
    return emit, maps


# ---------------------------------------------------------------------------------------------------
# the whole run


def iter_predict(
    frames,
    model: EmitterModel | None = None,
    camera: Camera | None = None,
    *,
    options: PredictOptions | None = None,
    maps=(),
    frame_range: tuple[int, int] | None = None,
    sink: Callable[[Localizations], None] | None = None,
    **option_fields,
) -> Generator[PredictProgress, None, PredictionResult]:
    """Predict chunk by chunk; yields :class:`PredictProgress`, returns a :class:`PredictionResult`.

    ``model``: an :class:`~..model.checkpoint.EmitterModel` (None: the bundled one-frame model;
    :func:`.models.resolve_model` reads the other specs, ``auto`` included). ``options`` (or its
    fields as keyword arguments, which override it; ``camera`` overrides its camera): see
    :class:`.options.PredictOptions`. ``maps``: the levels whose probability maps to keep, (T, h, w)
    each. ``frame_range``: (first, stop) frames of the stack; models that see several frames still
    read the neighbours beyond it, so a range gives the whole stack's rows for its frames.

    Memory: only the frames of one chunk (plus the frame window's neighbours) are read at a time.
    The localizations of each chunk go to ``sink`` if given, and are then not kept (the result's
    table is empty and ``n_localizations`` counts them); otherwise they are gathered, about 80
    bytes per localization. Maps are kept only for the levels in ``maps``.
    """
    options = options or PredictOptions()
    if camera is not None:
        option_fields["camera"] = camera
    if option_fields:
        options = options.replace(**option_fields)
    run = plan_run(frames, model, options, maps, frame_range)
    chunks = (localize_chunk(run, frames, a, b) for a, b in run.chunks())
    emit, map_data = yield from collect(
        chunks, start=run.start, stop=run.stop, pool=run.pool, sink=sink, map_shapes=run.map_shapes
    )
    factor = 0.0 if run.model is None else 1.0 / run.final_stride
    return PredictionResult(
        localizations=emit.gathered(),
        maps={
            m: ProbabilityMap(m, run.level_names[m], map_data[m], (run.model.net.config.strides[m],) * 2)
            for m in run.maps
        },
        device="cpu" if run.model is None else str(run.device),
        mode=options.mode,
        grid_factor=factor,
        n_localizations=emit.rows,
    )


def predict(frames, model=None, camera=None, *, progress: Callable[[int, int], None] | None = None, **kwargs):
    """Run :func:`iter_predict` to the end; ``progress(frames_done, frames_total)`` if given."""
    on_event = None if progress is None else (lambda event: progress(event.frames_done, event.frames_total))
    return run_to_end(iter_predict(frames, model, camera, **kwargs), on_event)
