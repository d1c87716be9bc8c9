"""SMLM movie simulator (torch): blinking emitters, a Gaussian, pupil or measured PSF, background, a camera.

Everything is vectorised over emitters and frames, so it runs on any torch device and is fast
enough to generate training data on the fly (see ``training/bench_simulator.py``).

Conventions (docs/CONVENTIONS.md, sections 1 and 2):

* positions are in pixels, napari convention: the centre of pixel ``[row, col]`` is ``(y, x) = (row, col)``,
  so pixel ``col`` covers ``x`` in ``[col - 0.5, col + 0.5)``;
* frames are 0-based in memory; ``write_movie`` writes the 1-based, nm ThunderSTORM CSV;
* the camera turns expected photons into ADU exactly as docs/CONVENTIONS.md, section 2 says
  (``apply_camera``).

The PSF is a Gaussian of width ``psf_sigma_nm`` integrated exactly over pixels (optics.py), or with
``psf_model="pupil"`` a scalar pupil PSF drawn per movie (psf.py: NA, wavelength, defocus, spherical
aberration), or with ``psf_model="measured"`` a PSF measured from beads (``psf_file``), whose truth
``sigma`` is its Gaussian-equivalent width. The background is a level per
movie, optionally with a smooth variation and static out-of-focus blobs (scene.py); an sCMOS camera
may have per-pixel read noise and offset maps (optics.camera_maps).

Blinking is DECODE-style: each emitter is ON for one continuous interval whose length is exponential
with mean ``mean_on_frames``; in a frame that is only partly covered it emits the matching fraction of
its photons. ``density_per_um2`` is the mean number of emitters that are ON (emit in) a frame, per
square micrometre of the frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..io.atomic import atomic_path
from ..io.localizations import Localizations, to_csv
from .config import Movie, SimBatch, SimulationConfig
from .optics import apply_camera, camera_maps, render_expected
from .psf import render_pupil
from .scene import (
    MARGIN_SIGMAS,
    blob_field,
    brightness,
    filament_points,
    positions,
    pupil_psfs,
    smooth_field,
    uniform,
)


def _simulate(config: SimulationConfig, batch: int, window: int, generator, device):
    """Core of the simulator: B movies of ``window`` frames.

    Returns expected photons (B, T, H, W) with background, the background (B, T, H, W),
    the in-frame emitter rows (N, 6) [b, t, x, y, photons, sigma], psf sigma (B,) (a pupil PSF's
    Gaussian-equivalent sigma) and the rows of emitters centred outside the frame.
    """
    height, width = config.frame_size
    px_nm = config.pixel_size_nm
    pupil = config.psf_model in ("pupil", "measured")  # drawn from pixel tables

    # 3.1 Per movie: PSF and background level (+ smooth variation, + out-of-focus blobs).
    if pupil:
        tables, plane_sigma, planes = pupil_psfs(config, batch, generator, device)  # (B*Z, S, S), (B*Z,)
        sigma_px = plane_sigma.reshape(batch, planes)[:, planes // 2]  # (B,) the movie's own defocus
    else:
        sigma_px = uniform(*config.psf_sigma_nm, (batch,), generator, device) / px_nm  # (B,)
    level = uniform(*config.background_photons, (batch,), generator, device)  # (B,)
    background = level[:, None, None].expand(batch, height, width).clone()  # (B, H, W)
    if config.background_variation > 0:
        field_bhw = smooth_field(batch, height, width, generator, device)
        background = background * (1.0 + config.background_variation * field_bhw)
    if config.background_blobs > 0:
        background = background + blob_field(config, level, batch, height, width, generator, device)
    background = background.clamp_min(0.0)

    # 3.2 How many emitters: a stationary on/off process over the padded field.
    # Emitters switch on at rate `rate` per frame and stay on Exp(mean_on) frames; the number
    # overlapping one frame is then rate * (mean_on + 1). Those already on at t = 0 number
    # rate * mean_on and, by memorylessness, stay on a further Exp(mean_on).
    # The padded field holds `spread` times as many emitters as the frame: its area ratio for a
    # uniform scene, its length ratio of filament for filaments.
    margin = MARGIN_SIGMAS * config.psf_sigma_nm[1] * (1 + 2 * config.psf_sigma_jitter) / px_nm
    if pupil:  # a pupil PSF's rings reach further: every emitter whose patch reaches the frame
        margin = config.psf_radius_px + 0.5
    filaments = None
    if config.structure == "filaments":
        filaments = filament_points(batch, height, width, margin, generator, device)
        spread = filaments[3]  # (B,)
    else:
        padded_area = (height + 2 * margin) * (width + 2 * margin) / (height * width)
        spread = torch.full((batch,), padded_area, device=device)  # (B,)
    mean_on = config.mean_on_frames
    rate = config.emitters_per_frame * spread / (mean_on + 1.0)  # (B,) switch-ons per frame per movie
    n_initial = torch.poisson(rate * mean_on, generator=generator).long()  # (B,)
    n_new = torch.poisson(rate * window, generator=generator).long()  # (B,)
    movie = torch.repeat_interleave(torch.arange(batch, device=device), n_initial + n_new)  # (M,)
    m = movie.numel()
    first_new = torch.repeat_interleave(n_initial, n_initial + n_new)  # (M,)
    rank = torch.arange(m, device=device) - torch.repeat_interleave(
        torch.cumsum(n_initial + n_new, 0) - (n_initial + n_new), n_initial + n_new
    )
    is_new = rank >= first_new
    on_start = torch.where(
        is_new, uniform(0.0, window, (m,), generator, device), torch.zeros(m, device=device)
    )
    duration = -mean_on * torch.log1p(-torch.rand((m,), generator=generator, device=device))  # Exp(mean_on)
    on_end = on_start + duration  # (M,)

    # 3.3 Emitter properties.
    x, y = positions(config, movie, batch, margin, filaments, generator, device)  # (M,)
    full_photons = brightness(config, m, generator, device)  # (M,) photons per fully-on frame
    sigma = sigma_px[movie]
    if pupil:  # each emitter's PSF: its movie's, at one of its depth planes
        plane = torch.randint(0, planes, (m,), generator=generator, device=device) if planes > 1 else 0
        table_index = movie * planes + plane  # (M,)
        sigma = plane_sigma[table_index]
    elif config.psf_sigma_jitter > 0:
        jitter = config.psf_sigma_jitter * torch.randn((m,), generator=generator, device=device)
        sigma = sigma * (1.0 + jitter).clamp(0.5, 1.5)

    # 3.4 Per frame: the fraction of each frame [t, t+1) that each emitter is on.
    t = torch.arange(window, device=device, dtype=torch.float32)  # (T,)
    overlap = (torch.minimum(on_end[:, None], t + 1) - torch.maximum(on_start[:, None], t)).clamp_min(
        0
    )  # (M, T)
    emitter, frame = torch.nonzero(overlap > 0, as_tuple=True)  # (N,) each
    photons = full_photons[emitter] * overlap[emitter, frame]  # (N,)
    b = movie[emitter]
    flat_frame = b * window + frame  # (N,) index into the B*T frames

    if pupil:
        # emitter is ascending (torch.nonzero's order): each emitter's patch is read once
        signal = render_pupil(
            x, y, photons, table_index, tables, flat_frame, batch * window, height, width, emitter=emitter
        )
    else:
        signal = render_expected(
            x[emitter], y[emitter], photons, sigma[emitter], flat_frame, batch * window, height, width
        )
    signal = signal.reshape(batch, window, height, width)
    background_bthw = background[:, None].expand(batch, window, height, width)
    expected = signal + background_bthw  # (B, T, H, W)

    # 3.5 Truth: only emitters centred inside the frame, ordered by movie, then frame.
    xe, ye = x[emitter], y[emitter]
    keep = (xe >= -0.5) & (xe < width - 0.5) & (ye >= -0.5) & (ye < height - 0.5)
    all_rows = torch.stack([b.float(), frame.float(), xe, ye, photons, sigma[emitter]], dim=1)  # (M', 6)
    rows = all_rows[keep][torch.argsort(flat_frame[keep], stable=True)]
    outside = all_rows[~keep][torch.argsort(flat_frame[~keep], stable=True)]
    return expected, background_bthw.contiguous(), rows.float(), sigma_px, outside.float()


def _make_generator(seed: int | None, device) -> torch.Generator | None:
    if seed is None:
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    return generator


def simulate_batch(
    config: SimulationConfig,
    batch_size: int,
    window: int = 1,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
) -> SimBatch:
    """B independent movies of ``window`` consecutive frames: the training fast path."""
    if not isinstance(config, SimulationConfig):
        raise InputError("config must be a SimulationConfig")
    if batch_size < 1 or window < 1:
        raise InputError(f"batch_size and window must be >= 1, got {batch_size} and {window}")
    device = torch.device(device) if generator is None else generator.device
    expected, background, rows, sigma_px, _ = _simulate(
        config, int(batch_size), int(window), generator, device
    )
    read_noise, offset = camera_maps(config, int(batch_size), generator, device)  # (B, H, W) or None
    frames = apply_camera(
        expected,
        config.camera,
        generator,
        read_noise_e=None if read_noise is None else read_noise[:, None],
        offset_adu=None if offset is None else offset[:, None],
    )
    return SimBatch(frames=frames, background=background.float(), emitters=rows, psf_sigma_px=sigma_px)


def simulate_movie(
    config: SimulationConfig, n_frames: int, seed: int = 0, device: str | torch.device = "cpu"
) -> Movie:
    """One movie of ``n_frames`` frames with its ground truth; the same seed gives the same movie."""
    if not isinstance(config, SimulationConfig):
        raise InputError("config must be a SimulationConfig")
    if n_frames < 1:
        raise InputError(f"n_frames must be >= 1, got {n_frames}")
    device = torch.device(device)
    generator = _make_generator(seed, device)
    expected, background, rows, _, outside = _simulate(config, 1, int(n_frames), generator, device)
    read_noise, offset = camera_maps(config, 1, generator, device)  # (1, H, W) or None
    read_noise = None if read_noise is None else read_noise[0]  # (H, W)
    offset = None if offset is None else offset[0]
    frames = apply_camera(expected[0], config.camera, generator, read_noise, offset)  # (T, H, W)
    background = background[0].float()  # (T, H, W)

    truth = _truth_table(rows, background, config)
    out = outside.cpu().numpy().astype(np.float64)  # (M, 6)
    unseen = Localizations(
        frame=out[:, 1].astype(np.int64), x=out[:, 2], y=out[:, 3], photons=out[:, 4], sigma=out[:, 5]
    )
    return Movie(
        frames=frames,
        truth=truth,
        background=background,
        config=config,
        outside=unseen,
        read_noise_e_map=read_noise,
        offset_adu_map=offset,
    )


def _truth_table(rows: torch.Tensor, background: torch.Tensor, config: SimulationConfig) -> Localizations:
    """The in-frame rows (N, 6) as a Localizations table, with the local background per emitter."""
    rows_np = rows.cpu().numpy().astype(np.float64)  # (N, 6)
    frame = rows_np[:, 1].astype(np.int64)
    x, y = rows_np[:, 2], rows_np[:, 3]
    height, width = config.frame_size
    row = np.clip(np.round(y).astype(np.int64), 0, height - 1)
    col = np.clip(np.round(x).astype(np.int64), 0, width - 1)
    local_bg = background.cpu().numpy()[frame, row, col].astype(np.float64)
    return Localizations(
        frame=frame,
        x=x,
        y=y,
        photons=rows_np[:, 4],
        background=local_bg,
        bkgstd=np.sqrt(local_bg),  # Poisson std of the background, photons
        sigma=rows_np[:, 5],
        uncertainty=np.nan,
        probability=1.0,
        grid_factor=0.0,
    )


def write_movie(movie: Movie, out_dir: str | Path) -> Path:
    """Write ``frames.tif`` (uint16 T, Y, X), ``truth.csv``, ``camera.json`` and ``simulation.json``."""
    import tifffile

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = movie.frames.detach().cpu().numpy()
    with atomic_path(out / "frames.tif") as tmp:  # an interrupted run leaves the previous movie
        tifffile.imwrite(tmp, np.clip(np.round(frames), 0, 65535).astype(np.uint16))
    to_csv(movie.truth, out / "truth.csv", movie.config.pixel_size_nm)
    movie.config.camera.save(out / "camera.json")
    movie.config.save(out / "simulation.json")
    return out


__all__ = [
    "SimulationConfig",
    "SimBatch",
    "Movie",
    "render_expected",
    "apply_camera",
    "simulate_batch",
    "simulate_movie",
    "write_movie",
]
