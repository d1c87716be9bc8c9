"""Training from simulation, on the model's device, as a generator of progress events.

Every step simulates a fresh batch with the user's camera and PSF (simulate.simulate_batch, in
torch, so a GPU trains at full speed), runs the next-scale chain with teacher forcing, and
guards against exposure bias by feeding part of each level with the model's own predictions
(a no-grad pass, as Infinity's self-correction does) and by random token flips.
Validation on fixed seeded movies picks the detection threshold and rewrites the checkpoint
atomically, so cancelling keeps the last good model.

Safety: a step whose loss or gradient is NaN or infinite is skipped (no optimiser step), counted
in ``TrainProgress.skipped``, and ``max_nonfinite_steps`` of them in a row stop training with a
:class:`TrainingError`. Weights that became non-finite are never validated nor saved. A crash or a
kill therefore leaves the last good checkpoint at ``out``, and ``resume`` continues from it.
"""

from __future__ import annotations

import math
import platform
import random
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .analysis.metrics import evaluate
from .camera import Camera
from .config_dicts import from_dict
from .errors import CheckpointError, InputError, TrainingError
from .localize.pipeline import predict
from .model.checkpoint import EmitterModel, check_config, load_checkpoint, read_payload, save_checkpoint
from .model.config import preset
from .model.loss import VAREmitterLoss, occupancy_targets
from .model.runtime import keep_freed_memory, resolve_device
from .model.var import TrueVAREmitterPredictor
from .progress import run_to_end
from .simulation import SimulationConfig, simulate_batch, simulate_movie
from .simulation.config import PHOTON_DISTRIBUTIONS

VALIDATION_SEEDS = (5000, 5001)  # never used by the benchmark (>= 10000) nor by training batches
CAMERA_TYPES = ("emccd", "scmos")
SCMOS_E_PER_ADU = (0.25, 2.0)  # wide batches with an sCMOS camera: electrons per ADU, log-uniform
THRESHOLDS = tuple(np.round(np.arange(0.05, 0.95, 0.05), 2))


@dataclass
class TrainConfig:
    preset: str = "default"
    model: dict = field(default_factory=dict)  # overrides of the preset's ModelConfig
    camera: Camera = field(default_factory=Camera)
    psf_sigma_nm: tuple[float, float] = (100.0, 150.0)
    photons: tuple[float, float] = (200.0, 10000.0)
    photon_distribution: str = "uniform"  # of training emitters' photons: "uniform" or "log-uniform"
    density_per_um2: tuple[float, float] = (0.0, 5.0)  # drawn per batch
    background_photons: tuple[float, float] = (10.0, 150.0)
    background_variation: float = 0.3
    filament_fraction: float = 0.5  # batches with emitters on filaments rather than uniform
    # a PSF measured from beads (calibrate --beads): every movie is drawn with it, not the Gaussian
    psf_file: str | None = None
    # The wider family: a batch is drawn from it with probability wide_fraction, else from the
    # settings above exactly as without it. In a wide batch:
    wide_fraction: float = 0.0
    pupil_fraction: float = 0.5  # a pupil PSF (simulation/psf.py), else the Gaussian above
    na: tuple[float, float] = (1.2, 1.5)  # pupil PSF ranges, drawn per movie
    wavelength_nm: tuple[float, float] = (500.0, 700.0)
    defocus_nm: tuple[float, float] = (-400.0, 400.0)
    defocus_spread_nm: float = 0.0  # per-emitter depth, +-this around the movie's defocus
    spherical_waves: tuple[float, float] = (-0.5, 0.5)  # Zernike Z(4,0) coefficient [waves]
    # photons: one (distribution, low, high) per batch (SimulationConfig.photon_distribution);
    # empty: photons and photon_distribution above
    photon_distributions: tuple = ()
    background_blobs: float = 0.0  # out-of-focus blobs per um^2: uniform in [0, this] per batch
    background_blob_amplitude: float = 1.0  # a blob's peak: up to this x the background level
    # camera: one of these per batch; empty: camera above. "emccd": the camera above at an EM gain
    # log-uniform in emccd_gain (e_per_adu scaled with it: the same ADU per electron); "scmos":
    # em_gain 1, read noise uniform in scmos_read_noise_e, e_per_adu log-uniform in SCMOS_E_PER_ADU,
    # per-pixel read-noise and offset spreads uniform up to scmos_pixel_spread / scmos_offset_spread
    camera_types: tuple[str, ...] = ()
    emccd_gain: tuple[float, float] = (30.0, 300.0)
    scmos_read_noise_e: tuple[float, float] = (1.0, 3.0)
    scmos_pixel_spread: float = 0.3
    scmos_offset_spread: float = 2.0  # ADU
    frame_size: int = 64
    steps: int = 3000
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    grad_clip: float = 2.0
    scale_weights: tuple[float, ...] = (0.5, 0.7, 0.9, 1.0)
    sr_fraction: float = 0.1  # batches that also train the super-resolution level(s)
    self_correct_fraction: float = 0.5  # batches fed partly with the model's own tokens
    flip_rate: float = 0.02
    val_every: int = 250
    val_frames: int = 32
    seed: int = 0
    device: str = "auto"
    out: str = "model.pt"
    init_from: str | None = None  # None, "bundled", "bundled:window-3" or a checkpoint path
    resume: bool = False
    max_nonfinite_steps: int = 20  # NaN/inf losses or gradients in a row before training stops

    def __post_init__(self) -> None:
        self.photon_distributions = tuple(_photon_entry(e) for e in self.photon_distributions)
        self.camera_types = tuple(self.camera_types)
        for name in ("wide_fraction", "pupil_fraction"):
            if not (0.0 <= getattr(self, name) <= 1.0):
                raise InputError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for kind in self.camera_types:
            if kind not in CAMERA_TYPES:
                raise InputError(f"camera_types must hold {' or '.join(CAMERA_TYPES)}, got {kind!r}")
        for name in ("emccd_gain", "scmos_read_noise_e"):
            lo, hi = getattr(self, name)
            if not (0 < lo <= hi):
                raise InputError(f"{name} must be a range (low, high) with 0 < low <= high, got ({lo}, {hi})")
        if self.emccd_gain[0] < 1:
            raise InputError(f"emccd_gain must be >= 1, got {self.emccd_gain}")
        if self.psf_file is not None:  # readable, and of the camera's pixel size
            _simulation(self, random.Random(0))
        if self.wide_fraction > 0:  # the widest settings must make a valid simulation
            _wide(self, _simulation(replace(self, wide_fraction=0.0), random.Random(0)), _Widest())

    def to_dict(self) -> dict:
        d = asdict(self)
        d["camera"] = self.camera.to_dict()
        return d

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        ranges = ("psf_sigma_nm", "photons", "density_per_um2", "background_photons", "scale_weights")
        ranges += ("na", "wavelength_nm", "defocus_nm", "spherical_waves", "emccd_gain", "scmos_read_noise_e")
        return from_dict(cls, values, "training option", tuples=ranges)


def _photon_entry(entry) -> tuple[str, float, float]:
    """One ``photon_distributions`` entry: (distribution, low, high), checked."""
    if not isinstance(entry, (list, tuple)) or len(entry) != 3:
        raise InputError(f"photon_distributions entries must be [distribution, low, high], got {entry!r}")
    name, lo, hi = entry
    if name not in PHOTON_DISTRIBUTIONS:
        raise InputError(
            f"photon distribution must be one of {', '.join(PHOTON_DISTRIBUTIONS)}, got {name!r}"
        )
    SimulationConfig(photons=(lo, hi), photon_distribution=name)  # InputError for a bad range
    return (name, float(lo), float(hi))


@dataclass(frozen=True)
class TrainProgress:
    step: int
    total_steps: int
    loss: float
    lr: float
    val: dict | None = None  # validation metrics, when this step validated
    checkpoint: str | None = None  # the checkpoint written at this step
    skipped: int = 0  # steps skipped so far because the loss or the gradient was NaN or infinite


def _lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def _simulation(cfg: TrainConfig, rng: random.Random, structure: str | None = None) -> SimulationConfig:
    """The simulation of one training batch, drawn with ``rng``; without the wider family
    (``wide_fraction`` 0) the draws are exactly those of the recipes made before it."""
    sim = SimulationConfig(
        frame_size=(cfg.frame_size, cfg.frame_size),
        density_per_um2=rng.uniform(*cfg.density_per_um2),
        photons=cfg.photons,
        photon_distribution=cfg.photon_distribution,
        psf_sigma_nm=cfg.psf_sigma_nm,
        psf_sigma_jitter=0.05,
        background_photons=cfg.background_photons,
        background_variation=rng.uniform(0, cfg.background_variation),
        structure=structure or ("filaments" if rng.random() < cfg.filament_fraction else "uniform"),
        camera=cfg.camera,
    )
    if cfg.psf_file is not None:
        sim = replace(sim, psf_model="measured", psf_file=cfg.psf_file)
    if cfg.wide_fraction > 0 and rng.random() < cfg.wide_fraction:
        sim = _wide(cfg, sim, rng)
    return sim


class _Widest:
    """A stand-in for ``random.Random`` that takes every option at its widest (to check settings)."""

    def random(self) -> float:
        return 0.0

    def uniform(self, low: float, high: float) -> float:
        return high

    def choice(self, options):
        return options[-1]


def _wide(cfg: TrainConfig, sim: SimulationConfig, rng) -> SimulationConfig:
    """``sim`` moved into the wider family: PSF, photons, background blobs and camera (TrainConfig)."""
    changes = {}
    if rng.random() < cfg.pupil_fraction:
        changes.update(
            psf_model="pupil",
            na=cfg.na,
            wavelength_nm=cfg.wavelength_nm,
            defocus_nm=cfg.defocus_nm,
            defocus_spread_nm=cfg.defocus_spread_nm,
            spherical_waves=cfg.spherical_waves,
        )
    if cfg.photon_distributions:
        name, lo, hi = rng.choice(cfg.photon_distributions)
        changes.update(photon_distribution=name, photons=(lo, hi))
    if cfg.background_blobs > 0:
        changes.update(
            background_blobs=rng.uniform(0.0, cfg.background_blobs),
            background_blob_amplitude=cfg.background_blob_amplitude,
        )
    if cfg.camera_types:
        kind = rng.choice(cfg.camera_types)
        if kind == "emccd":
            gain = math.exp(rng.uniform(math.log(cfg.emccd_gain[0]), math.log(cfg.emccd_gain[1])))
            e_per_adu = cfg.camera.e_per_adu * gain / cfg.camera.em_gain  # the same ADU per electron
            changes.update(camera=replace(cfg.camera, em_gain=gain, e_per_adu=e_per_adu))
        else:
            e_per_adu = math.exp(rng.uniform(*(math.log(v) for v in SCMOS_E_PER_ADU)))
            read_noise = rng.uniform(*cfg.scmos_read_noise_e)
            changes.update(
                camera=replace(cfg.camera, em_gain=1.0, e_per_adu=e_per_adu, read_noise_e=read_noise),
                pixel_read_noise_spread=rng.uniform(0.0, cfg.scmos_pixel_spread),
                pixel_offset_spread=rng.uniform(0.0, cfg.scmos_offset_spread),
            )
    return replace(sim, **changes)


def validation_movies(cfg: TrainConfig, device) -> list:
    """Fixed seeded movies: sparse and dense, over the training photon range (with the measured
    PSF where training draws one)."""
    movies = []
    for seed, density in zip(VALIDATION_SEEDS, (0.3, 2.0), strict=False):
        sim = SimulationConfig(
            frame_size=(cfg.frame_size, cfg.frame_size),
            density_per_um2=density,
            photons=cfg.photons,
            psf_sigma_nm=(float(np.mean(cfg.psf_sigma_nm)),) * 2,
            background_photons=cfg.background_photons,
            camera=cfg.camera,
        )
        if cfg.psf_file is not None:
            sim = replace(sim, psf_model="measured", psf_file=cfg.psf_file)
        movies.append(simulate_movie(sim, cfg.val_frames, seed=seed, device=device))
    return movies


def validate(model: EmitterModel, movies, device, thresholds=None) -> tuple[float, dict]:
    """Best threshold (mean JI over the movies) of ``thresholds`` (default THRESHOLDS) and the
    metrics at it, of the network alone (no maximum-likelihood refinement: the calibration measured
    here is that of the network's own uncertainty, which ``finalize_weights.py`` folds into
    ``uncertainty_scale``)."""
    thresholds = THRESHOLDS if thresholds is None else tuple(float(t) for t in thresholds)
    px = model.camera.pixel_size_nm
    results = [
        predict(
            m.frames.cpu().numpy(),
            model,
            model.camera,
            threshold=min(thresholds),
            device=device,
            refine=False,
        )
        for m in movies
    ]
    best = None
    for th in thresholds:
        reports = [
            evaluate(r.localizations.subset(r.localizations.probability > th), m.truth, px)
            for r, m in zip(results, movies, strict=False)
        ]
        score = float(np.mean([rep.jaccard for rep in reports]))
        if best is None or score > best[0]:
            best = (score, float(th), reports)
    _, threshold, reports = best
    metrics = {"threshold": threshold}
    for name, rep in zip(("sparse", "dense"), reports, strict=False):
        metrics.update(
            {
                f"{name}_jaccard": rep.jaccard,
                f"{name}_rmse_nm": rep.rmse_nm,
                f"{name}_efficiency": rep.efficiency,
            }
        )
        metrics[f"{name}_calibration"] = rep.calibration
    return threshold, metrics


def _teacher_tokens(net, emitters, batch, grids, strides, cfg, rng, x, num_levels):
    """Ground-truth tokens per level, partly replaced by the model's own and randomly flipped."""
    V = net.config.vocab_size
    tokens = [(occ * (V - 1)).long() for occ in occupancy_targets(emitters, batch, grids, strides)]
    if rng.random() < cfg.self_correct_fraction:
        with torch.no_grad():
            own = net.tokens_from_outputs(net(x, teacher_tokens=tokens, num_levels=num_levels))
        for k in range(num_levels - 1):
            take = torch.rand(tokens[k].shape, device=x.device) < rng.uniform(0.0, 0.5)
            tokens[k] = torch.where(take, own[k], tokens[k])
    for k in range(num_levels - 1):
        flip = torch.rand(tokens[k].shape, device=x.device) < cfg.flip_rate
        random_tokens = torch.randint(0, V, tokens[k].shape, device=x.device)
        tokens[k] = torch.where(flip, random_tokens, tokens[k])
    return tokens


def _hardware(device: torch.device) -> str:
    chip = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    return f"{platform.machine()} {chip}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def _finite_weights(net: torch.nn.Module) -> bool:
    return bool(torch.stack([torch.isfinite(p).all() for p in net.parameters()]).all())


def _stopped(step: int, why: str, cfg: TrainConfig) -> TrainingError:
    kept = f"the last good checkpoint is {cfg.out}" if Path(cfg.out).is_file() else "nothing was saved"
    return TrainingError(f"training stopped at step {step}: {why} (try a lower learning rate); {kept}")


def _resume_step(train_state, out) -> int:
    """The step a checkpoint's ``train_state`` was saved at (0 without one)."""
    if train_state is None:
        return 0
    step = train_state.get("step") if isinstance(train_state, dict) else None
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"cannot resume from {out}: its training state has no valid step ({step!r})")
    return step


def iter_train(cfg: TrainConfig) -> Generator[TrainProgress, None, EmitterModel]:
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        keep_freed_memory()  # fewer page faults: 60 steps on 2 threads 35 -> 30 s (model/runtime.py)
    torch.manual_seed(cfg.seed)  # the initial weights

    # 1. model: new, fine-tuned from a checkpoint, or resumed
    start_step, train_state = 0, None
    if cfg.max_nonfinite_steps < 1:
        raise InputError(f"max_nonfinite_steps must be >= 1, got {cfg.max_nonfinite_steps}")
    if cfg.resume and Path(cfg.out).is_file():
        payload = read_payload(cfg.out)
        model = load_checkpoint(cfg.out, device)
        train_state = payload.get("train_state")
        start_step = _resume_step(train_state, cfg.out)
    elif cfg.init_from:
        model = load_checkpoint(None if cfg.init_from == "bundled" else cfg.init_from, device)
        if cfg.model.get("conv_blocks", model.net.config.conv_blocks) != model.net.config.conv_blocks:
            model.net = model.net.with_conv_blocks(cfg.model["conv_blocks"])  # added blocks: identity
    else:
        config = preset(cfg.preset, **cfg.model)
        check_config(config, "model")  # sizes checked before anything is allocated
        net = TrueVAREmitterPredictor(config)
        model = EmitterModel(net=net, camera=cfg.camera)
    # a resumed run draws new batches, not those of steps 0, 1, ... again
    seed = cfg.seed if start_step == 0 else cfg.seed + 1_000_003 * start_step
    rng = random.Random(seed)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed + 1)
    model.camera = cfg.camera
    model.psf_sigma_nm = float(np.mean(cfg.psf_sigma_nm))
    if cfg.psf_file is not None:  # the width of the PSF it learns, for the fit and the side lobes
        model.psf_sigma_nm = _simulation(cfg, random.Random(0)).measured_psf().sigma_nm
    net = model.net.to(device).train()
    ncfg = net.config
    if cfg.frame_size % ncfg.pad_multiple:
        raise InputError(f"frame_size must be a multiple of {ncfg.pad_multiple} for this model")
    n_prog = len(ncfg.patch_nums)
    weights = cfg.scale_weights if ncfg.chain else (0.0,) * (n_prog - 1) + (1.0,)
    loss_fn = VAREmitterLoss(scale_weights=weights)

    # 2. optimiser (AdamW as VAR: betas 0.9/0.95, no decay on gains, biases, embeddings)
    decay = [p for n, p in net.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in net.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    if isinstance(train_state, dict) and "optimizer" in train_state:
        try:
            optimizer.load_state_dict(train_state["optimizer"])
        except Exception as exc:  # noqa: BLE001 - ValueError, KeyError, TypeError on a state of another model
            raise CheckpointError(
                f"cannot resume from {cfg.out}: its optimiser state does not fit the model"
            ) from exc
    autocast = device.type == "cuda"
    val_movies = validation_movies(cfg, device)
    window = ncfg.frame_window
    t_start = time.time()
    skipped = in_a_row = 0

    for step in range(start_step, cfg.steps):
        lr = _lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        # 3. a fresh simulated batch
        sim = _simulation(cfg, rng)
        batch = simulate_batch(sim, cfg.batch_size, window=window, generator=generator, device=device)
        x = sim.camera.adu_to_photons(batch.frames)  # (B, window, H, W) photons, the batch's own camera
        emitters = batch.emitters[batch.emitters[:, 1] == window // 2]
        background = batch.background[:, window // 2]
        num_levels = n_prog + (ncfg.extra_levels if rng.random() < cfg.sr_fraction else 0)
        Hp = cfg.frame_size
        grids = net.level_grids(Hp, Hp, num_levels)
        strides = ncfg.strides[:num_levels]
        loc_levels = list(range(n_prog - 1, num_levels))
        # 4. teacher forcing with the exposure-bias guard, then the loss
        with torch.autocast("cuda", torch.bfloat16, enabled=autocast):
            tokens = _teacher_tokens(net, emitters, cfg.batch_size, grids, strides, cfg, rng, x, num_levels)
            outputs = net(x, teacher_tokens=tokens, num_levels=num_levels)
        loss, parts = loss_fn(outputs, emitters, background, loc_levels)
        optimizer.zero_grad(set_to_none=True)
        finite = bool(torch.isfinite(loss))
        if finite:
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            finite = bool(torch.isfinite(grad_norm))
        if not finite:  # a non-finite loss or gradient never reaches the weights
            optimizer.zero_grad(set_to_none=True)
            skipped, in_a_row = skipped + 1, in_a_row + 1
            if in_a_row >= cfg.max_nonfinite_steps:
                raise _stopped(
                    step + 1, f"the loss or its gradient was NaN or infinite {in_a_row} steps in a row", cfg
                )
            yield TrainProgress(step + 1, cfg.steps, float("nan"), lr, skipped=skipped)
            continue
        in_a_row = 0
        optimizer.step()

        # 5. validation, threshold, checkpoint
        val, ckpt = None, None
        if (step + 1) % cfg.val_every == 0 or step + 1 == cfg.steps:
            if not _finite_weights(net):  # never validated nor saved: the last good checkpoint stays
                raise _stopped(step + 1, "the weights became NaN or infinite", cfg)
            net.eval()
            model.threshold, val = validate(model, val_movies, device)
            net.train()
            val["step"] = step + 1
            model.meta = {
                "train_config": cfg.to_dict(),
                "step": step + 1,
                "validation": val,
                "train_seconds": round(time.time() - t_start, 1),
                "hardware": _hardware(device),
            }
            state = {"step": step + 1, "optimizer": optimizer.state_dict()}
            ckpt = str(save_checkpoint(cfg.out, model, extra={"train_state": state}))
        yield TrainProgress(step + 1, cfg.steps, float(loss.detach()), lr, val, ckpt, skipped)
    net.eval()
    return model


def train(cfg: TrainConfig, callback=None) -> EmitterModel:
    """Run :func:`iter_train` to the end; ``callback(TrainProgress)`` on each step."""
    return run_to_end(iter_train(cfg), callback)
