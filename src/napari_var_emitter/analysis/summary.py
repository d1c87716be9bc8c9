"""A run's summary in numbers a microscopist checks first: emitters per frame, density, photons and
localization precision in nm, with the camera and the model that made them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..camera import Camera
from ..io.localizations import Localizations


@dataclass
class Summary:
    """What :func:`summarize` measures; ``per_frame`` counts the rows of frames ``first_frame`` on."""

    n_localizations: int
    n_frames: int
    first_frame: int
    per_frame: np.ndarray  # (n_frames,) localizations in each frame
    area_um2: float  # one frame's field of view
    photons: np.ndarray  # (N,) photons per localization
    precision_nm: np.ndarray  # (N,) lateral localization uncertainty (1 sigma), nm
    camera: Camera | None = None
    camera_source: str = ""  # where the camera came from: "given", "the layer's metadata", "measured", ...
    model: str = ""  # which model localized, and why
    notes: list[str] = field(default_factory=list)

    @property
    def mean_per_frame(self) -> float:
        return float(self.per_frame.mean()) if self.n_frames else math.nan

    @property
    def density_per_um2(self) -> float:
        """Mean localizations per frame per square micrometre of the field of view."""
        return self.mean_per_frame / self.area_um2 if self.area_um2 > 0 else math.nan

    def lines(self) -> list[str]:
        """The summary as short lines (the widget's results panel, the Markdown report)."""
        med = lambda v: float(np.median(v)) if len(v) else math.nan  # noqa: E731
        out = [
            f"{self.n_localizations:,} emitters in {self.n_frames:,} frame(s): "
            f"{self.mean_per_frame:.1f} per frame, {self.density_per_um2:.3g} per um^2",
            f"photons: median {med(self.photons):,.0f}; precision: median {med(self.precision_nm):.1f} nm",
        ]
        if self.camera is not None:
            c = self.camera
            source = f" ({self.camera_source})" if self.camera_source else ""
            out.append(
                f"camera{source}: {c.pixel_size_nm:g} nm pixels, baseline {c.baseline:g} ADU, "
                f"{c.e_per_adu:g} e-/ADU, EM gain {c.em_gain:g}, QE {c.qe:g}"
            )
        if self.model:
            out.append(f"model: {self.model}")
        return out + list(self.notes)

    def to_markdown(self) -> str:
        """A short report: the summary, then a table of emitters per frame in ten blocks."""
        lines = ["# Localization summary", ""] + [f"- {line}" for line in self.lines()]
        if self.n_frames:
            blocks = np.array_split(np.arange(self.n_frames), min(10, self.n_frames))
            lines += ["", "| frames | emitters per frame |", "|---|---|"]
            for block in blocks:
                a, b = self.first_frame + block[0] + 1, self.first_frame + block[-1] + 1
                lines.append(f"| {a}-{b} | {self.per_frame[block].mean():.1f} |")
        return "\n".join(lines) + "\n"


def summarize(
    locs: Localizations,
    n_frames: int,
    frame_shape: tuple[int, int],
    pixel_size_nm: float,
    first_frame: int = 0,
    **context,
) -> Summary:
    """The :class:`Summary` of ``locs`` (pixels, 0-based frames of the stack) over frames
    ``first_frame`` .. ``first_frame + n_frames - 1`` of ``frame_shape`` pixels; ``context``:
    ``camera``, ``camera_source``, ``model``, ``notes``."""
    frames = locs.frame - first_frame
    inside = (frames >= 0) & (frames < n_frames)
    per_frame = np.bincount(frames[inside], minlength=n_frames)[:n_frames] if n_frames else np.zeros(0)
    height, width = frame_shape
    return Summary(
        n_localizations=len(locs),
        n_frames=int(n_frames),
        first_frame=int(first_frame),
        per_frame=per_frame,
        area_um2=height * width * (pixel_size_nm / 1000.0) ** 2,
        photons=np.asarray(locs.photons, dtype=float),
        precision_nm=np.asarray(locs.uncertainty, dtype=float) * pixel_size_nm,
        **context,
    )
