"""Camera model (docs/CONVENTIONS.md, section 2): ADU <-> photons, and the noise model's constants."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .errors import CameraError
from .io.atomic import write_text

MAX_CAMERA_FILE_BYTES = 1 << 20
CALIBRATION_KEY = "adu_per_electron"  # a camera file written by `calibrate` holds this key too


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
            try:
                finite = math.isfinite(value)
            except OverflowError:  # an int too large for a float
                raise CameraError(f"camera parameter {f.name} is too large") from None
            if not finite:
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
        if not isinstance(values, dict):
            raise CameraError(f"camera parameters must be a mapping, got {type(values).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise CameraError(f"unknown camera parameter(s): {', '.join(sorted(map(str, unknown)))}")
        return cls(**values)

    def save(self, path: str | Path) -> None:
        """Write the parameters as JSON, atomically (a temporary file, then a rename)."""
        write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "Camera":
        """Read a camera JSON file; :class:`CameraError` with one clear message for a bad one."""
        path = Path(path)
        try:
            too_large = path.stat().st_size > MAX_CAMERA_FILE_BYTES
            values = None if too_large else json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            first = " ".join(str(exc).split()) or type(exc).__name__
            raise CameraError(f"cannot read camera file {path}: {first}") from None
        if too_large:
            raise CameraError(f"camera file {path} is too large to hold camera parameters")
        if not isinstance(values, dict):
            raise CameraError(f"camera file {path} must hold a JSON object")
        if CALIBRATION_KEY in values:  # `calibrate --out`: the measurement beside the camera's fields
            values = {k: v for k, v in values.items() if k in CAMERA_FIELDS}
        return cls.from_dict(values)


CAMERA_FIELDS = tuple(f.name for f in fields(Camera))  # the names every command, file and widget uses
