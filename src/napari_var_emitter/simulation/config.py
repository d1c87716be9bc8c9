"""What a simulation is made of: its parameters (:class:`SimulationConfig`) and what it gives (a
training batch, a movie with its ground truth)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from ..camera import Camera
from ..config_dicts import from_dict
from ..errors import InputError
from ..io.atomic import write_text
from ..io.localizations import Localizations

STRUCTURES = ("uniform", "filaments")


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
        return from_dict(cls, values, "simulation parameter")

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
