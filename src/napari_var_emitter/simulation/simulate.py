"""SMLM movie simulator (torch): blinking emitters, Gaussian PSF, background, EMCCD/sCMOS camera.

Everything is vectorised over emitters and frames, so it runs on any torch device and is fast
enough to generate training data on the fly (see ``training/bench_simulator.py``).

Conventions (CONVENTIONS sections 1 and 2):

* positions are in pixels, napari convention: the centre of pixel ``[row, col]`` is ``(y, x) = (row, col)``,
  so pixel ``col`` covers ``x`` in ``[col - 0.5, col + 0.5)``;
* frames are 0-based in memory; ``write_movie`` writes the 1-based, nm ThunderSTORM CSV;
* the camera turns expected photons into ADU exactly as CONVENTIONS section 2 says (``apply_camera``).

Blinking is DECODE-style: each emitter is ON for one continuous interval whose length is exponential
with mean ``mean_on_frames``; in a frame that is only partly covered it emits the matching fraction of
its photons. ``density_per_um2`` is the mean number of emitters that are ON (emit in) a frame, per
square micrometre of the frame.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..camera import Camera
from ..errors import InputError
from ..io.atomic import atomic_path, write_text
from ..io.localizations import Localizations, to_csv

STRUCTURES = ("uniform", "filaments")

# Filament model: a few persistent random walks per movie, sampled every half pixel.
_FILAMENTS_PER_MOVIE = 4
_FILAMENT_STEP_PX = 0.5
_FILAMENT_PERSISTENCE_PX = (15.0, 60.0)  # persistence length, uniform per filament
_FILAMENT_JITTER_NM = 15.0  # emitter offset from the filament axis (label size), per axis
_MARGIN_SIGMAS = 3.0  # emitters are spawned this many PSF sigmas beyond the frame edge


@dataclass(frozen=True)
class SimulationConfig:
    frame_size: tuple[int, int] = (64, 64)  # (H, W) pixels
    density_per_um2: float = 0.3  # mean emitters ON per frame per square micrometre
    photons: tuple[float, float] = (1000.0, 8000.0)  # photons per frame when fully on, per emitter
    photon_distribution: str = "uniform"  # of the photons over their range: "uniform" or "log-uniform"
    psf_sigma_nm: tuple[float, float] = (120.0, 120.0)  # Gaussian PSF sigma, uniform per movie
    psf_sigma_jitter: float = 0.0  # relative per-emitter sigma variation (std), e.g. 0.05
    background_photons: tuple[float, float] = (20.0, 100.0)  # per pixel per frame, uniform per movie
    background_variation: float = 0.0  # relative amplitude of a smooth spatial variation (0..1)
    structure: str = "uniform"  # "uniform" or "filaments" (smooth curved lines like microtubules)
    mean_on_frames: float = 3.0  # blinking: mean of the exponential on-time, in frames
    camera: Camera = field(default_factory=Camera)

    def __post_init__(self) -> None:
        for name in ("frame_size", "photons", "psf_sigma_nm", "background_photons"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)) and len(value) == 2:
                object.__setattr__(self, name, tuple(value))
            else:
                raise InputError(f"simulation parameter {name} must be a pair of numbers, got {value!r}")
            for v in getattr(self, name):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise InputError(f"simulation parameter {name} must hold finite numbers, got {value!r}")
        for name in ("density_per_um2", "psf_sigma_jitter", "background_variation", "mean_on_frames"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise InputError(f"simulation parameter {name} must be a finite number, got {v!r}")

        if self.photon_distribution not in ("uniform", "log-uniform"):
            raise InputError(
                f"photon_distribution must be 'uniform' or 'log-uniform', got {self.photon_distribution!r}"
            )
        h, w = self.frame_size
        if h != int(h) or w != int(w) or h < 4 or w < 4:
            raise InputError(f"frame_size must be two whole numbers >= 4 (H, W), got {self.frame_size}")
        object.__setattr__(self, "frame_size", (int(h), int(w)))
        if self.density_per_um2 < 0:
            raise InputError(f"density_per_um2 must be >= 0, got {self.density_per_um2}")
        for name, low_ok in (("photons", 0.0), ("psf_sigma_nm", 0.0)):
            lo, hi = getattr(self, name)
            if not (low_ok < lo <= hi):
                raise InputError(f"{name} must be a range (low, high) with 0 < low <= high, got ({lo}, {hi})")
        lo, hi = self.background_photons
        if not (0 <= lo <= hi):
            raise InputError(f"background_photons must be a range with 0 <= low <= high, got ({lo}, {hi})")
        if not (0 <= self.psf_sigma_jitter <= 0.5):
            raise InputError(f"psf_sigma_jitter must be in [0, 0.5], got {self.psf_sigma_jitter}")
        if not (0 <= self.background_variation <= 1):
            raise InputError(f"background_variation must be in [0, 1], got {self.background_variation}")
        if self.structure not in STRUCTURES:
            raise InputError(f"structure must be one of {', '.join(STRUCTURES)}, got {self.structure!r}")
        if self.mean_on_frames <= 0:
            raise InputError(f"mean_on_frames must be > 0, got {self.mean_on_frames}")
        if not isinstance(self.camera, Camera):
            raise InputError(f"camera must be a Camera, got {type(self.camera).__name__}")

    @property
    def pixel_size_nm(self) -> float:
        return float(self.camera.pixel_size_nm)

    @property
    def emitters_per_frame(self) -> float:
        """Mean number of emitters ON in one frame (inside the frame)."""
        h, w = self.frame_size
        area_um2 = h * w * (self.pixel_size_nm / 1000.0) ** 2
        return self.density_per_um2 * area_um2

    def to_dict(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "camera"}
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
        values["camera"] = self.camera.to_dict()
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "SimulationConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise InputError(f"unknown simulation parameter(s): {', '.join(sorted(unknown))}")
        values = dict(values)
        if isinstance(values.get("camera"), dict):
            values["camera"] = Camera.from_dict(values["camera"])
        return cls(**values)

    def save(self, path: str | Path) -> None:
        write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")  # atomic

    @classmethod
    def load(cls, path: str | Path) -> "SimulationConfig":
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read simulation file {path}: {exc}") from exc
        if not isinstance(values, dict):
            raise InputError(f"simulation file {path} must hold a JSON object")
        return cls.from_dict(values)


@dataclass
class SimBatch:
    """Training batch: B independent short movies of ``window`` consecutive frames."""

    frames: torch.Tensor  # (B, window, H, W) float32 ADU
    background: torch.Tensor  # (B, window, H, W) float32 expected background photons per pixel
    emitters: torch.Tensor  # (N, 6) float32 [b, t, x, y, photons, sigma]; x, y, sigma in pixels
    psf_sigma_px: torch.Tensor  # (B,) the movie's PSF sigma in pixels


@dataclass
class Movie:
    frames: torch.Tensor  # (T, H, W) float32 ADU
    truth: Localizations  # emitters inside the frame, 0-based frames, pixels
    background: torch.Tensor  # (T, H, W) float32 expected background photons per pixel
    config: SimulationConfig
    # emitters centred outside the frame whose light reaches it: not in the truth (no method can be
    # asked to find them), but they are the neighbours of in-frame emitters near the border
    outside: Localizations | None = None


# --------------------------------------------------------------------------------------------------
# 1. Rendering: expected photons of Gaussian emitters, integrated over pixels


def _pixel_fractions(
    centre: torch.Tensor, first: torch.Tensor, size: int, sigma: torch.Tensor
) -> torch.Tensor:
    """Fraction of a 1D Gaussian falling in each of ``size`` pixels starting at pixel ``first``.

    centre, first, sigma: (N,). Pixel ``k`` covers ``[k - 0.5, k + 0.5)``. Returns (N, size).
    """
    offsets = torch.arange(size + 1, device=centre.device, dtype=centre.dtype)  # (size + 1,)
    edges = first[:, None] - 0.5 + offsets[None, :]  # (N, size + 1) pixel edges
    cdf = torch.erf((edges - centre[:, None]) / (math.sqrt(2.0) * sigma[:, None]))  # (N, size + 1)
    return 0.5 * (cdf[:, 1:] - cdf[:, :-1])


def render_expected(
    x: torch.Tensor,
    y: torch.Tensor,
    photons: torch.Tensor,
    sigma: torch.Tensor,
    frame_index: torch.Tensor,
    n_frames: int,
    height: int,
    width: int,
    chunk: int = 65536,
) -> torch.Tensor:
    """Expected photons (T, H, W) of Gaussian emitters, each integrated exactly over every pixel.

    x, y, photons, sigma (pixels), frame_index: (N,). Each emitter is drawn on a square patch of
    radius ``ceil(4 * max(sigma)) + 1`` around its nearest pixel, clipped to the frame; overlapping
    patches add up, and emitters centred outside the frame still light the pixels they reach.
    """
    device = x.device
    dtype = torch.float32
    image = torch.zeros(n_frames * height * width, device=device, dtype=dtype)  # (T*H*W,)
    if x.numel() == 0:
        return image.reshape(n_frames, height, width)
    radius = int(math.ceil(4.0 * float(sigma.max()))) + 1
    size = 2 * radius + 1
    patch = torch.arange(size, device=device)  # (P,) offsets from the patch's first row / column
    for start in range(0, x.numel(), chunk):
        part = slice(start, start + chunk)
        xc, yc = x[part].to(dtype), y[part].to(dtype)  # (n,)
        s, n_ph = sigma[part].to(dtype), photons[part].to(dtype)
        t = frame_index[part].long()
        col0 = torch.round(xc).long() - radius  # (n,) first column of the patch
        row0 = torch.round(yc).long() - radius
        fx = _pixel_fractions(xc, col0.to(dtype), size, s)  # (n, P)
        fy = _pixel_fractions(yc, row0.to(dtype), size, s)  # (n, P)
        values = n_ph[:, None, None] * fy[:, :, None] * fx[:, None, :]  # (n, P, P)
        cols = col0[:, None] + patch[None, :]  # (n, P)
        rows = row0[:, None] + patch[None, :]  # (n, P)
        inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
        flat = (t[:, None, None] * height + rows[:, :, None]) * width + cols[:, None, :]  # (n, P, P)
        image.index_add_(0, flat[inside], values[inside])
    return image.reshape(n_frames, height, width)


# --------------------------------------------------------------------------------------------------
# 2. Camera


def _gamma_integer_shape(shape: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Gamma(shape, scale=1) samples for shape >= 1 (Marsaglia & Tsang 2000), vectorised.

    Uses only public torch samplers, so one generator makes it reproducible on any device.
    """
    d = shape - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.empty_like(shape)
    todo = torch.arange(shape.numel(), device=shape.device)
    d_flat, c_flat, out_flat = d.reshape(-1), c.reshape(-1), out.view(-1)
    while todo.numel() > 0:  # about 2% are rejected per round
        dd, cc = d_flat[todo], c_flat[todo]
        z = torch.randn(todo.shape, generator=generator, device=shape.device, dtype=shape.dtype)
        u = torch.rand(todo.shape, generator=generator, device=shape.device, dtype=shape.dtype)
        v = (1.0 + cc * z) ** 3
        ok = (v > 0) & (torch.log(u) < 0.5 * z * z + dd - dd * v + dd * torch.log(v.clamp_min(1e-30)))
        out_flat[todo[ok]] = (dd * v)[ok]
        todo = todo[~ok]
    return out


def apply_camera(
    expected_photons: torch.Tensor, camera: Camera, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Noisy ADU frames (float32, whole numbers in [0, 65535]) from expected photons (background included).

    CONVENTIONS section 2: Poisson(qe * photons) electrons; Gamma(electrons, em_gain) EM amplification
    when em_gain > 1; + Normal(0, read_noise_e); / e_per_adu + baseline; rounded and clipped to uint16.
    """
    rate = (camera.qe * expected_photons.float()).clamp_min(0.0)
    electrons = torch.poisson(rate, generator=generator)
    if camera.em_gain > 1:
        lit = electrons > 0
        amplified = torch.zeros_like(electrons)
        amplified[lit] = _gamma_integer_shape(electrons[lit], generator) * camera.em_gain
        electrons = amplified
    if camera.read_noise_e > 0:
        noise = torch.randn(
            electrons.shape, generator=generator, device=electrons.device, dtype=electrons.dtype
        )
        electrons = electrons + camera.read_noise_e * noise
    adu = electrons / camera.e_per_adu + camera.baseline
    return torch.round(adu).clamp_(0.0, 65535.0)


# --------------------------------------------------------------------------------------------------
# 3. Scene: PSF widths, backgrounds, emitter positions and blinking


def _uniform(low: float, high: float, shape, generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, device=device)


def _smooth_field(batch: int, height: int, width: int, generator, device) -> torch.Tensor:
    """(B, H, W) smooth random field with values in [-1, 1] (max |value| = 1 per movie)."""
    coarse = torch.rand((batch, 1, 4, 4), generator=generator, device=device) * 2 - 1  # (B, 1, 4, 4)
    fine = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)[:, 0]  # (B, H, W)
    fine = fine - fine.mean(dim=(1, 2), keepdim=True)
    return fine / fine.abs().amax(dim=(1, 2), keepdim=True).clamp_min(1e-6)


def _filament_points(batch, height, width, margin, generator, device):
    """Points every half pixel along a few persistent random walks per movie.

    Returns (x, y) each (B, F*K), a mask (B, F*K) of the points inside the padded field, and (B,)
    the ratio of filament length inside the padded field to that inside the frame.
    """
    n_fil = _FILAMENTS_PER_MOVIE
    n_steps = int(math.ceil(2 * (height + width) / _FILAMENT_STEP_PX))  # K: long enough to cross the field
    half = n_steps // 2
    # Each walk passes through a random point of the frame, heading in a random direction.
    x0 = _uniform(-0.5, width - 0.5, (batch, n_fil, 1), generator, device)  # (B, F, 1)
    y0 = _uniform(-0.5, height - 0.5, (batch, n_fil, 1), generator, device)
    theta0 = _uniform(0.0, 2 * math.pi, (batch, n_fil, 1), generator, device)
    persistence = _uniform(*_FILAMENT_PERSISTENCE_PX, (batch, n_fil, 1), generator, device)
    turn = torch.randn((batch, n_fil, n_steps), generator=generator, device=device)
    turn = turn * torch.sqrt(_FILAMENT_STEP_PX / persistence)  # (B, F, K) angle change per step
    theta = theta0 + torch.cumsum(turn, dim=2) - torch.cumsum(turn, dim=2)[:, :, half : half + 1]
    dx = _FILAMENT_STEP_PX * torch.cos(theta)  # (B, F, K)
    dy = _FILAMENT_STEP_PX * torch.sin(theta)
    # Positions relative to the anchor step `half`, so the walk extends both ways from (x0, y0).
    px = x0 + torch.cumsum(dx, dim=2) - torch.cumsum(dx, dim=2)[:, :, half : half + 1]
    py = y0 + torch.cumsum(dy, dim=2) - torch.cumsum(dy, dim=2)[:, :, half : half + 1]
    px, py = px.reshape(batch, -1), py.reshape(batch, -1)  # (B, F*K)
    inside = (
        (px >= -0.5 - margin)
        & (px < width - 0.5 + margin)
        & (py >= -0.5 - margin)
        & (py < height - 0.5 + margin)
    )
    in_frame = (px >= -0.5) & (px < width - 0.5) & (py >= -0.5) & (py < height - 0.5)
    padded_ratio = inside.sum(dim=1).float() / in_frame.sum(dim=1).clamp_min(1).float()  # (B,)
    return px, py, inside, padded_ratio


def _positions(config, movie, batch, margin, filaments, generator, device):
    """Positions (x, y), each (M,), for emitters of movies ``movie`` (M,), over the padded field.

    ``filaments`` is ``_filament_points``' output for the "filaments" structure, else None.
    """
    height, width = config.frame_size
    m = movie.numel()
    if filaments is None:
        x = _uniform(-0.5 - margin, width - 0.5 + margin, (m,), generator, device)
        y = _uniform(-0.5 - margin, height - 0.5 + margin, (m,), generator, device)
        return x, y
    px, py, inside, _ = filaments  # (B, F*K) each
    if m == 0:
        return px.new_zeros(0), py.new_zeros(0)
    counts = torch.bincount(movie, minlength=batch)  # (B,)
    weights = inside.float()
    weights[weights.sum(dim=1) == 0] = 1.0  # a movie whose filaments all left the field (never in practice)
    draws = torch.multinomial(weights, int(counts.max()), replacement=True, generator=generator)  # (B, max)
    # The i-th emitter of movie b takes draw i of that movie.
    order = torch.argsort(movie, stable=True)
    rank = torch.empty_like(movie)
    rank[order] = torch.arange(m, device=device) - torch.repeat_interleave(
        torch.cumsum(counts, 0) - counts, counts
    )
    point = draws[movie, rank]  # (M,) index along the walks
    x, y = px[movie, point], py[movie, point]
    # Spread uniformly along the half-pixel step, then off the axis by the label size.
    along = _uniform(-0.5, 0.5, (m,), generator, device) * _FILAMENT_STEP_PX
    angle = _uniform(0.0, 2 * math.pi, (m,), generator, device)  # walks are smooth: any direction is fine
    jitter = _FILAMENT_JITTER_NM / config.pixel_size_nm
    x = x + along * torch.cos(angle) + jitter * torch.randn((m,), generator=generator, device=device)
    y = y + along * torch.sin(angle) + jitter * torch.randn((m,), generator=generator, device=device)
    return x, y


def _simulate(config: SimulationConfig, batch: int, window: int, generator, device):
    """Core of the simulator: B movies of ``window`` frames.

    Returns expected photons (B, T, H, W) with background, the background (B, T, H, W),
    the in-frame emitter rows (N, 6) [b, t, x, y, photons, sigma] and psf sigma (B,).
    """
    height, width = config.frame_size
    px_nm = config.pixel_size_nm

    # 3.1 Per movie: PSF width and background level (+ smooth variation).
    sigma_px = _uniform(*config.psf_sigma_nm, (batch,), generator, device) / px_nm  # (B,)
    level = _uniform(*config.background_photons, (batch,), generator, device)  # (B,)
    background = level[:, None, None].expand(batch, height, width).clone()  # (B, H, W)
    if config.background_variation > 0:
        field_bhw = _smooth_field(batch, height, width, generator, device)
        background = background * (1.0 + config.background_variation * field_bhw)
    background = background.clamp_min(0.0)

    # 3.2 How many emitters: a stationary on/off process over the padded field.
    # Emitters switch on at rate `rate` per frame and stay on Exp(mean_on) frames; the number
    # overlapping one frame is then rate * (mean_on + 1). Those already on at t = 0 number
    # rate * mean_on and, by memorylessness, stay on a further Exp(mean_on).
    # The padded field holds `spread` times as many emitters as the frame: its area ratio for a
    # uniform scene, its length ratio of filament for filaments.
    margin = _MARGIN_SIGMAS * config.psf_sigma_nm[1] * (1 + 2 * config.psf_sigma_jitter) / px_nm
    filaments = None
    if config.structure == "filaments":
        filaments = _filament_points(batch, height, width, margin, generator, device)
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
        is_new, _uniform(0.0, window, (m,), generator, device), torch.zeros(m, device=device)
    )
    duration = -mean_on * torch.log1p(-torch.rand((m,), generator=generator, device=device))  # Exp(mean_on)
    on_end = on_start + duration  # (M,)

    # 3.3 Emitter properties.
    x, y = _positions(config, movie, batch, margin, filaments, generator, device)  # (M,)
    if config.photon_distribution == "log-uniform":  # as many dim emitters as bright ones
        lo, hi = config.photons
        brightness = torch.exp(_uniform(math.log(lo), math.log(hi), (m,), generator, device))
    else:
        brightness = _uniform(*config.photons, (m,), generator, device)  # photons per fully-on frame
    sigma = sigma_px[movie]
    if config.psf_sigma_jitter > 0:
        jitter = config.psf_sigma_jitter * torch.randn((m,), generator=generator, device=device)
        sigma = sigma * (1.0 + jitter).clamp(0.5, 1.5)

    # 3.4 Per frame: the fraction of each frame [t, t+1) that each emitter is on.
    t = torch.arange(window, device=device, dtype=torch.float32)  # (T,)
    overlap = (torch.minimum(on_end[:, None], t + 1) - torch.maximum(on_start[:, None], t)).clamp_min(
        0
    )  # (M, T)
    emitter, frame = torch.nonzero(overlap > 0, as_tuple=True)  # (N,) each
    photons = brightness[emitter] * overlap[emitter, frame]  # (N,)
    b = movie[emitter]
    flat_frame = b * window + frame  # (N,) index into the B*T frames

    signal = render_expected(
        x[emitter], y[emitter], photons, sigma[emitter], flat_frame, batch * window, height, width
    ).reshape(batch, window, height, width)
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
    frames = apply_camera(expected, config.camera, generator)
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
    frames = apply_camera(expected[0], config.camera, generator)  # (T, H, W)
    background = background[0].float()  # (T, H, W)

    truth = _truth_table(rows, background, config)
    out = outside.cpu().numpy().astype(np.float64)  # (M, 6)
    unseen = Localizations(
        frame=out[:, 1].astype(np.int64), x=out[:, 2], y=out[:, 3], photons=out[:, 4], sigma=out[:, 5]
    )
    return Movie(frames=frames, truth=truth, background=background, config=config, outside=unseen)


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
