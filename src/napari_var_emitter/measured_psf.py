"""A PSF measured from beads (``calibrate --beads``), as the simulator and the fit use it.

The PSF is held as a *pixel table* (simulation/psf.py, module docstring): at index
(J + jy, J + jx) the fraction of an emitter's light that falls in the camera pixel whose centre is
(jy, jx) / ``oversample`` pixels from the emitter, summing to 1 over a pixel-centred emitter's
pixels. The simulator draws emitters with it (``SimulationConfig(psf_model="measured")``), the
maximum-likelihood refinement fits with it (``PredictOptions.psf``), and ``sigma_px``, the width of
the Gaussian that fits it best, is the PSF width everything else uses (detection, side lobes).

A file is one JSON object (docs/CONVENTIONS.md, section 5): ``"kind": "psf"``, the pixel size, the
oversampling, the Gaussian-equivalent width, how it was measured, and the table as rows of numbers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .io.atomic import write_text

KIND = "psf"
MAX_PSF_FILE_BYTES = 16 << 20


@dataclass(frozen=True)
class MeasuredPsf:
    """A pixel table (2J+1, 2J+1), J a multiple of ``oversample``, with its pixel size and width."""

    table: np.ndarray
    pixel_size_nm: float
    oversample: int
    sigma_px: float  # the best-fitting Gaussian's sigma before pixel integration [pixels]
    source: dict = field(default_factory=dict)  # how it was measured: beads, planes, residual

    def __post_init__(self) -> None:
        table = np.asarray(self.table, dtype=np.float64)
        object.__setattr__(self, "table", table)
        if table.ndim != 2 or table.shape[0] != table.shape[1] or table.shape[0] % 2 != 1:
            raise InputError(f"a PSF table must be square with an odd side, got shape {table.shape}")
        if not (isinstance(self.oversample, int) and self.oversample >= 1):
            raise InputError(f"a PSF's oversampling must be a whole number >= 1, got {self.oversample!r}")
        centre = table.shape[0] // 2
        if centre % self.oversample or centre < 2 * self.oversample:
            raise InputError(
                f"a PSF table of side {table.shape[0]} does not fit oversampling {self.oversample}: its "
                "half-width must be a multiple of it, and at least 2 pixels"
            )
        if not np.isfinite(table).all() or (table < 0).any():
            raise InputError("a PSF table must hold finite numbers >= 0")
        for name in ("pixel_size_nm", "sigma_px"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f"PSF {name} must be a finite number, got {value!r}")
            if value <= 0:
                raise InputError(f"PSF {name} must be > 0, got {value}")
        total = table[:: self.oversample, :: self.oversample].sum()
        if not abs(total - 1.0) < 0.01:
            raise InputError(
                f"a PSF table must sum to 1 over a pixel-centred emitter's pixels, got {total:.4g}"
            )

    @property
    def radius_px(self) -> int:
        """The patch radius [pixels] the table lights around an emitter's nearest pixel."""
        return self.table.shape[0] // 2 // self.oversample - 1

    @property
    def sigma_nm(self) -> float:
        return self.sigma_px * self.pixel_size_nm

    def to_dict(self) -> dict:
        return {
            "kind": KIND,
            "pixel_size_nm": self.pixel_size_nm,
            "oversample": self.oversample,
            "sigma_nm": round(self.sigma_nm, 3),
            "sigma_px": self.sigma_px,
            "source": self.source,
            "table": [[float(f"{v:.6g}") for v in row] for row in self.table],
        }

    @classmethod
    def from_dict(cls, values: dict) -> MeasuredPsf:
        if not isinstance(values, dict) or values.get("kind") != KIND:
            raise InputError(
                'a PSF file must hold a JSON object with "kind": "psf" (calibrate --beads writes one)'
            )
        try:
            table = np.array(values["table"], dtype=np.float64)
            return cls(
                table=table,
                pixel_size_nm=values["pixel_size_nm"],
                oversample=values["oversample"],
                sigma_px=values["sigma_px"],
                source=dict(values.get("source", {})),
            )
        except KeyError as exc:
            raise InputError(f"a PSF file lacks {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise InputError(f"a PSF file's table is not a square of numbers: {exc}") from None

    def save(self, path: str | Path) -> None:
        """Write the JSON object, atomically."""
        write_text(path, json.dumps(self.to_dict()) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> MeasuredPsf:
        """Read a PSF file; :class:`InputError` with one clear message for a bad one."""
        path = Path(path)
        try:
            if path.stat().st_size > MAX_PSF_FILE_BYTES:
                raise InputError(f"PSF file {path} is too large to hold a PSF table")
            values = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            first = " ".join(str(exc).split()) or type(exc).__name__
            raise InputError(f"cannot read PSF file {path}: {first}") from None
        try:
            return cls.from_dict(values)
        except InputError as exc:
            raise InputError(f"PSF file {path}: {exc}") from None

    def check_pixel_size(self, pixel_size_nm: float) -> None:
        """The table is in camera pixels: it fits only frames of the pixel size it was measured at."""
        if abs(pixel_size_nm - self.pixel_size_nm) > 1e-3 * self.pixel_size_nm:
            raise InputError(
                f"the PSF was measured with {self.pixel_size_nm:g} nm pixels, the frames have "
                f"{pixel_size_nm:g} nm: measure it with beads imaged on the same camera and lens"
            )
