"""What a camera calibration measured (:class:`Calibration`), as a camera, a JSON object or words."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np

from ..camera import Camera


@dataclass
class Calibration:
    """Camera parameters measured from frames; ``uncertainty`` holds their standard errors."""

    baseline: float  # offset, ADU
    adu_per_electron: float  # = em_gain / e_per_adu
    excess_noise: float  # F: 2 EMCCD, 1 sCMOS/CCD
    variance_slope: float  # photon-transfer slope F * adu_per_electron, ADU^2 per ADU
    read_noise_adu: float  # from the dark frames, else fitted (or the typical value where unmeasurable)
    background_adu: float  # mean background level, ADU
    background_photons: float  # per pixel per frame
    psf_sigma_px: float  # NaN when no isolated spot could be fitted
    psf_sigma_spread_px: float
    n_psf_spots: int
    camera_type: str
    camera_type_source: str  # "given", "measured" or "assumed"
    pixel_size_nm: float
    qe: float
    em_gain: float  # conventional split for EMCCD (100), 1 otherwise
    low_percentile_adu: float  # 1st percentile of the sampled frames
    n_frames: int  # frames sampled
    uncertainty: dict[str, float] = field(default_factory=dict)
    by_type: dict[str, dict[str, float]] = field(default_factory=dict)  # offset and slope per camera type
    notes: list[str] = field(default_factory=list)
    # from dark frames, (Y, X) (the central part that is read of frames over 4 Mpx)
    offset_map: np.ndarray | None = None  # ADU
    variance_map: np.ndarray | None = None  # ADU^2

    @property
    def e_per_adu(self) -> float:
        return self.em_gain / self.adu_per_electron

    @property
    def read_noise_e(self) -> float:
        """Read noise in the Camera's electrons (after EM gain, before division by e_per_adu)."""
        return self.read_noise_adu * self.e_per_adu

    @property
    def psf_sigma_nm(self) -> float:
        return self.psf_sigma_px * self.pixel_size_nm

    def camera(self) -> Camera:
        """The section 2 camera: this offset (at least 0), e_per_adu from em_gain / adu_per_electron."""
        return Camera(
            pixel_size_nm=float(self.pixel_size_nm),
            baseline=float(max(self.baseline, 0.0)),
            e_per_adu=float(self.e_per_adu),
            em_gain=float(self.em_gain),
            qe=float(self.qe),
            read_noise_e=float(self.read_noise_e),
        )

    def to_dict(self) -> dict:
        """JSON-ready: the measured values, their uncertainties, notes, and the Camera's section 2 fields."""

        def clean(v):
            v = float(v) if isinstance(v, (float, np.floating)) else v
            return None if isinstance(v, float) and not math.isfinite(v) else v

        skip = ("baseline", "qe", "em_gain", "pixel_size_nm", "offset_map", "variance_map")
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        values |= {"psf_sigma_nm": self.psf_sigma_nm} | self.camera().to_dict()
        values["uncertainty"] = {k: clean(v) for k, v in self.uncertainty.items()}
        values["by_type"] = {t: {k: clean(v) for k, v in d.items()} for t, d in self.by_type.items()}
        return {k: v if isinstance(v, (dict, list)) else clean(v) for k, v in values.items()}

    def lines(self) -> list[str]:
        """The measurement in words: each value with its standard error, then the notes."""
        u = self.uncertainty

        def pm(key: str, value: float, fmt: str = ".3g") -> str:
            err = u.get(key, math.nan)
            return f"{value:{fmt}}" + (f" +- {err:{fmt}}" if err is not None and math.isfinite(err) else "")

        camera = self.camera()
        out = [
            f"offset (baseline): {pm('baseline', self.baseline, '.1f')} ADU",
            f"gain: {pm('adu_per_electron', self.adu_per_electron)} ADU per photoelectron "
            f"(variance slope {pm('variance_slope', self.variance_slope)})",
            f"camera type: {self.camera_type} ({self.camera_type_source}), "
            f"excess noise {self.excess_noise:g}",
            f"read noise: {self.read_noise_e:.3g} e- ({self.read_noise_adu:.3g} ADU)",
            f"background: {self.background_photons:.3g} photons per pixel ({self.background_adu:.1f} ADU)",
        ]
        if math.isfinite(self.psf_sigma_px):
            out.append(
                f"PSF sigma: {self.psf_sigma_nm:.0f} nm ({self.psf_sigma_px:.3g} px, spread "
                f"{self.psf_sigma_spread_px:.2g} px, {self.n_psf_spots} spots)"
            )
        else:
            out.append("PSF sigma: not measured (no isolated bright spot)")
        out.append(
            f"as flags: --pixel-size-nm {camera.pixel_size_nm:g} --baseline {camera.baseline:.1f} "
            f"--e-per-adu {camera.e_per_adu:.4g} --em-gain {camera.em_gain:g} --qe {camera.qe:g} "
            f"--read-noise-e {camera.read_noise_e:.3g}"
        )
        return out + [f"note: {note}" for note in self.notes]
