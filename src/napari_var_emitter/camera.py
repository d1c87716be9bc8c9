"""Camera model (CONVENTIONS section 2): ADU <-> photons, and the noise model's constants."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .errors import CameraError


@dataclass(frozen=True)
class Camera:
    """An EMCCD (``em_gain > 1``) or sCMOS/CCD (``em_gain == 1``) camera.

    Defaults are the SMLM challenge 2016 camera.
    """

    pixel_size_nm: float = 100.0
    baseline: float = 100.0
    e_per_adu: float = 45.0
    em_gain: float = 300.0
    qe: float = 0.9
    read_noise_e: float = 74.4

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise CameraError(f"camera parameter {f.name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise CameraError(f"camera parameter {f.name} must be finite, got {value}")
        for name in ("pixel_size_nm", "e_per_adu", "em_gain", "qe"):
            if getattr(self, name) <= 0:
                raise CameraError(f"camera parameter {name} must be > 0, got {getattr(self, name)}")
        if self.qe > 1:
            raise CameraError(f"camera parameter qe must be <= 1, got {self.qe}")
        if self.em_gain < 1:
            raise CameraError(f"camera parameter em_gain must be >= 1 (1 for sCMOS/CCD), got {self.em_gain}")
        if self.read_noise_e < 0 or self.baseline < 0:
            raise CameraError("camera parameters read_noise_e and baseline must be >= 0")

    @property
    def photons_per_adu(self) -> float:
        """Detected photons per ADU above baseline."""
        return self.e_per_adu / self.em_gain / self.qe

    @property
    def excess_noise(self) -> float:
        """Excess-noise factor F of the Cramer-Rao bound: 2 for EMCCD, 1 otherwise."""
        return 2.0 if self.em_gain > 1 else 1.0

    def adu_to_photons(self, adu):
        """``photons = (ADU - baseline) * e_per_adu / em_gain / qe``; numpy or torch in, same out."""
        return (adu - self.baseline) * self.photons_per_adu

    def photons_to_adu(self, photons):
        return photons / self.photons_per_adu + self.baseline

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Camera":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise CameraError(f"unknown camera parameter(s): {', '.join(sorted(unknown))}")
        return cls(**values)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "Camera":
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise CameraError(f"cannot read camera file {path}: {exc}") from exc
        if not isinstance(values, dict):
            raise CameraError(f"camera file {path} must hold a JSON object")
        return cls.from_dict(values)
