"""What a simulation is made of: its parameters (:class:`SimulationConfig`) and what it gives (a
training batch, a movie with its ground truth)."""

from __future__ import annotations

import functools
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
from ..measured_psf import MeasuredPsf
from .psf import N_IMMERSION, psf_radius_px

STRUCTURES = ("uniform", "filaments")
PSF_MODELS = ("gaussian", "pupil", "measured")
PHOTON_DISTRIBUTIONS = ("uniform", "log-uniform", "exponential", "log-normal")
PAIRS = ("frame_size", "photons", "psf_sigma_nm", "background_photons", "na", "wavelength_nm", "defocus_nm")
PAIRS += ("spherical_waves",)
NUMBERS = ("density_per_um2", "psf_sigma_jitter", "background_variation", "mean_on_frames")
NUMBERS += ("defocus_spread_nm", "background_blobs", "background_blob_amplitude")
NUMBERS += ("pixel_read_noise_spread", "pixel_offset_spread")
MAX_PSF_RADIUS_PX = 32  # a pupil PSF's patch is at most 65 x 65 pixels


@functools.lru_cache(maxsize=4)
def _load_psf(path: str, stamp: int) -> MeasuredPsf:
    return MeasuredPsf.load(path)


@dataclass(frozen=True)
class SimulationConfig:
    frame_size: tuple[int, int] = (64, 64)  # (H, W) pixels
    density_per_um2: float = 0.3  # mean emitters ON per frame per square micrometre
    photons: tuple[float, float] = (1000.0, 8000.0)  # photons per frame when fully on, per emitter
    # of each emitter's photons, with photons = (lo, hi): "uniform" over [lo, hi]; "log-uniform";
    # "exponential": lo + Exp, mean hi (lo a floor); "log-normal": median sqrt(lo * hi), 95 % in [lo, hi]
    photon_distribution: str = "uniform"
    # "gaussian" (psf_sigma_nm), "pupil" (simulation/psf.py: na ... spherical_waves) or "measured"
    # (psf_file: a PSF measured from beads, measured_psf.py)
    psf_model: str = "gaussian"
    psf_file: str | None = None
    psf_sigma_nm: tuple[float, float] = (120.0, 120.0)  # Gaussian PSF sigma, uniform per movie
    psf_sigma_jitter: float = 0.0  # relative per-emitter sigma variation (std), e.g. 0.05; Gaussian only
    na: tuple[float, float] = (1.4, 1.4)  # pupil PSF: numerical aperture, uniform per movie (< 1.518)
    wavelength_nm: tuple[float, float] = (680.0, 680.0)  # pupil PSF: emission wavelength, uniform per movie
    defocus_nm: tuple[float, float] = (0.0, 0.0)  # pupil PSF: signed defocus, uniform per movie
    defocus_spread_nm: float = 0.0  # pupil PSF: per-emitter depth, uniform over +-this around the movie's
    spherical_waves: tuple[float, float] = (0.0, 0.0)  # pupil PSF: Zernike Z(4,0) coefficient [waves]
    background_photons: tuple[float, float] = (20.0, 100.0)  # per pixel per frame, uniform per movie
    background_variation: float = 0.0  # relative amplitude of a smooth spatial variation (0..1)
    background_blobs: float = 0.0  # large blurred blobs (out-of-focus light) per um^2, static per movie
    background_blob_amplitude: float = 1.0  # a blob's peak: uniform in [0, this] x the background level
    structure: str = "uniform"  # "uniform" or "filaments" (smooth curved lines like microtubules)
    mean_on_frames: float = 3.0  # blinking: mean of the exponential on-time, in frames
    camera: Camera = field(default_factory=Camera)
    # sCMOS: per-pixel read noise read_noise_e * exp(spread * N(0, 1)) [e-] (log-normal, median
    # camera.read_noise_e) and per-pixel offset N(0, spread^2) [ADU] added to the baseline; one map
    # each per movie (optics.camera_maps)
    pixel_read_noise_spread: float = 0.0
    pixel_offset_spread: float = 0.0

    def __post_init__(self) -> None:
        for name in PAIRS:
            value = getattr(self, name)
            if isinstance(value, (list, tuple)) and len(value) == 2:
                object.__setattr__(self, name, tuple(value))
            else:
                raise InputError(f"simulation parameter {name} must be a pair of numbers, got {value!r}")
            for v in getattr(self, name):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise InputError(f"simulation parameter {name} must hold finite numbers, got {value!r}")
        for name in NUMBERS:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise InputError(f"simulation parameter {name} must be a finite number, got {v!r}")

        if self.photon_distribution not in PHOTON_DISTRIBUTIONS:
            raise InputError(
                f"photon_distribution must be one of {', '.join(PHOTON_DISTRIBUTIONS)}, "
                f"got {self.photon_distribution!r}"
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
        self._check_pupil()
        for name in ("background_blobs", "background_blob_amplitude", "pixel_read_noise_spread"):
            if getattr(self, name) < 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not (0 <= self.pixel_offset_spread <= 1000):
            raise InputError(f"pixel_offset_spread must be in [0, 1000] ADU, got {self.pixel_offset_spread}")
        if self.pixel_read_noise_spread > 2:
            raise InputError(f"pixel_read_noise_spread must be <= 2, got {self.pixel_read_noise_spread}")

    def _check_pupil(self) -> None:
        if self.psf_model not in PSF_MODELS:
            raise InputError(f"psf_model must be one of {', '.join(PSF_MODELS)}, got {self.psf_model!r}")
        for name, low, high in (
            ("na", 0.3, N_IMMERSION),
            ("wavelength_nm", 200.0, 2000.0),
            ("defocus_nm", -2000.0, 2000.0),
            ("spherical_waves", -1.0, 1.0),
        ):
            lo, hi = getattr(self, name)
            if not (low <= lo <= hi <= high) or (name == "na" and hi >= high):
                raise InputError(
                    f"{name} must be a range (low, high) within [{low}, {high}], got ({lo}, {hi})"
                )
        if not (0 <= self.defocus_spread_nm <= 2000):
            raise InputError(f"defocus_spread_nm must be in [0, 2000], got {self.defocus_spread_nm}")
        if (self.psf_model == "measured") != (self.psf_file is not None):
            raise InputError('a measured PSF needs psf_model "measured" and a psf_file, both')
        if self.psf_model == "measured":
            self.measured_psf().check_pixel_size(self.pixel_size_nm)
        if self.psf_model == "pupil" and self.psf_radius_px > MAX_PSF_RADIUS_PX:
            raise InputError(
                f"the pupil PSF needs a patch of radius {self.psf_radius_px} pixels (at most "
                f"{MAX_PSF_RADIUS_PX}): raise na or pixel_size_nm, or lower wavelength_nm or defocus_nm"
            )

    def measured_psf(self) -> MeasuredPsf:
        """The measured PSF of ``psf_file`` (read once per file and modification time)."""
        path = Path(self.psf_file)
        try:
            stamp = path.stat().st_mtime_ns
        except OSError as exc:
            raise InputError(f"cannot read PSF file {path}: {exc.strerror}") from None
        return _load_psf(str(path), stamp)

    @property
    def psf_radius_px(self) -> int:
        """Pupil or measured PSF: the radius [pixels] of the patch that each emitter lights
        (psf.psf_radius_px)."""
        if self.psf_model == "measured":
            return self.measured_psf().radius_px
        defocus = max(abs(self.defocus_nm[0]), abs(self.defocus_nm[1])) + self.defocus_spread_nm
        return psf_radius_px(self.na[0], self.wavelength_nm[1], defocus, self.pixel_size_nm)

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
    psf_sigma_px: torch.Tensor  # (B,) the movie's PSF sigma in pixels (a pupil PSF: Gaussian-equivalent)


@dataclass
class Movie:
    frames: torch.Tensor  # (T, H, W) float32 ADU
    truth: Localizations  # emitters inside the frame, 0-based frames, pixels
    background: torch.Tensor  # (T, H, W) float32 expected background photons per pixel
    config: SimulationConfig
    # emitters centred outside the frame whose light reaches it: not in the truth (no method can be
    # asked to find them), but they are the neighbours of in-frame emitters near the border
    outside: Localizations | None = None
    read_noise_e_map: torch.Tensor | None = None  # (H, W) per-pixel read noise [e-] (pixel_read_noise_spread)
    offset_adu_map: torch.Tensor | None = None  # (H, W) per-pixel offset [ADU] above the baseline
