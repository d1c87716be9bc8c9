"""Every choice of a prediction, defined, documented and validated once.

:class:`PredictOptions` is what the command line, the napari widget and the Dask cluster build and
what :func:`.pipeline.iter_predict` runs. Its defaults and help texts are the ones ``predict --help``
and the widget's tooltips show; ``__post_init__`` is the only place they are checked, before
anything is read or loaded.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field

from ..camera import Camera
from ..errors import InputError
from ..measured_psf import MeasuredPsf
from ..model.runtime import PRECISIONS
from .tiling import DEFAULT_MARGIN, DEFAULT_TILE_SIZE

MODES = ("progressive", "super_resolution")
DEVICES = ("auto", "cpu", "cuda", "mps")
CLASSICAL = "classical"  # the model spec of the Gaussian-fit baseline


def _option(default, help: str, **extra):  # noqa: A002 - argparse's word
    return field(default=default, metadata={"help": help, **extra})


@dataclass(frozen=True)
class PredictOptions:
    """How to localize: the model, the camera and every setting of the pipeline's stages."""

    model: str = _option(
        "auto",
        "auto: the bundled model that sees frames t-1, t, t+1 when the stack is a movie (emitters "
        "persist across consecutive frames), else the bundled one-frame model; 'bundled' or "
        "'bundled:window-3' for one of them; a model file (.pt); or 'classical' for the Gaussian-fit "
        "baseline",
        metavar="auto|bundled|bundled:window-3|PATH|classical",
    )
    camera: Camera | None = _option(None, "the camera (docs/CONVENTIONS.md); None: the model's own")
    mode: str = _option(
        "progressive",
        "progressive: the levels up to the camera's pixels; super_resolution: the chain continued to a "
        "grid finer than the camera's (see the super-resolution factor)",
        choices=MODES,
    )
    sr_factor: int = _option(2, "super-resolution: output cells per camera pixel")
    threshold: float | None = _option(
        None,
        "detection threshold: for the VAR model a probability in (0, 1) (default: the model's own); "
        "for the classical baseline, multiples of the filtered frame's noise (default 4)",
    )
    psf_sigma_nm: float | None = _option(
        None,
        "the PSF's Gaussian sigma [nm] that the fit uses (the refinement, the classical baseline); "
        "default: the model's own, or the one measured with the camera (the classical baseline: 1.2 "
        "camera pixels)",
    )
    psf: MeasuredPsf | None = _option(
        None,
        "a PSF measured from beads (calibrate --beads): the fit models it instead of a Gaussian "
        "(unbiased photons and Cramer-Rao bounds for Airy-like PSFs), and its width is the PSF width",
        metavar="PSF.json",
    )
    refine: bool = _option(
        True,
        "fit every detection by Poisson maximum likelihood with its neighbours' light in the model "
        "(positions at the Cramer-Rao bound, no pull toward pixel centres); off: the network's own "
        "positions, and no confirmation either",
    )
    confirm: bool = _option(
        True,
        "also keep candidates below the threshold (down to probability 0.1) that the fit confirms: a spot "
        "of at least 4 times its photons' Cramer-Rao bound, mostly its own light; with pooling (movies), "
        "2.8 times where the same spot is found in the frame before or after",
    )
    pool: bool | None = _option(
        None,
        "average each fit with the same emitter's in the frames before and after (default: on for "
        "models that see several frames, which are for movies; needs refine)",
    )
    sparse: bool = _option(
        True,
        "compute the finest level only around the cells where the level before sees emitters (the "
        "same localizations, up to float rounding; faster on sparse frames)",
    )
    local_attention: bool = _option(
        False,
        "frames of 192 px and more: the attention level attends within windows of the training size "
        "(64 px, with 8 px of context) instead of over the whole frame",
    )
    tile_size: int | None = _option(
        DEFAULT_TILE_SIZE, "frames larger than this (px) are cut into overlapping tiles (0 or None: never)"
    )
    tile_margin: int = _option(DEFAULT_MARGIN, "tile overlap on each side [px]")
    batch_size: int | None = _option(
        None,
        "frames (or tiles) per forward pass, at most (default: 128 on the CPU, 4,096 on a GPU, fewer "
        "where they would not fit its memory)",
    )
    batch_pixels: int | None = _option(
        None,
        "at most this many pixels per forward pass (default: 524,288 on the CPU; on a GPU, what fits "
        "in 40 % of its memory)",
    )
    precision: str = _option(
        "auto",
        "auto: bf16 where the hardware is fast at it (CUDA, CPUs with AVX-512 BF16 or AMX), else fp32",
        choices=PRECISIONS,
    )
    compile: bool = _option(False, "torch.compile the network (a slow start once per frame size)")
    device: str = _option("auto", "auto takes CUDA, then Apple MPS, then the CPU", choices=DEVICES)

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", str(self.device))  # a torch.device is welcome too
        if not isinstance(self.model, str) or not self.model:
            raise InputError(f"model must be a name or a path, got {self.model!r}")
        if self.camera is not None and not isinstance(self.camera, Camera):
            raise InputError(f"camera must be a Camera, got {type(self.camera).__name__}")
        for name, allowed in (("mode", MODES), ("precision", PRECISIONS), ("device", DEVICES)):
            value = getattr(self, name)
            if value not in allowed and not (name == "device" and str(value).startswith("cuda:")):
                raise InputError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        sr_low = 2 if self.mode == "super_resolution" else 1
        for name, low in (("sr_factor", sr_low), ("tile_margin", 0), ("batch_size", 1), ("batch_pixels", 1)):
            _check_int(name, getattr(self, name), low)
        if self.tile_size is not None:
            _check_int("tile_size", self.tile_size, 1)
        if self.threshold is not None:
            t = self.threshold
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
                raise InputError(f"detection threshold must be a number > 0, got {t!r}")
            if not self.classical and t >= 1:
                raise InputError(
                    f"detection threshold {t:g} is not a probability: the VAR model's threshold is in (0, 1)"
                )
        if self.psf_sigma_nm is not None and not (math.isfinite(self.psf_sigma_nm) and self.psf_sigma_nm > 0):
            raise InputError(f"PSF sigma must be > 0 nm, got {self.psf_sigma_nm}")
        if self.psf is not None and not isinstance(self.psf, MeasuredPsf):
            raise InputError(f"psf must be a MeasuredPsf, got {type(self.psf).__name__}")
        if self.psf is not None and self.classical:
            raise InputError(
                "the classical baseline fits a Gaussian: a measured PSF is for the VAR model's fit"
            )
        if self.pool and not self.refine:
            raise InputError("pooling averages the fits: it needs refine")

    @property
    def classical(self) -> bool:
        return self.model == CLASSICAL

    def replace(self, **changes) -> PredictOptions:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def help(cls, name: str) -> str:
        """The help text of option ``name``: one sentence or two, for ``--help`` and tooltips."""
        return _FIELDS[name].metadata["help"]

    @classmethod
    def default(cls, name: str):
        return _FIELDS[name].default

    @classmethod
    def choices(cls, name: str) -> tuple | None:
        return _FIELDS[name].metadata.get("choices")


_FIELDS = {f.name: f for f in dataclasses.fields(PredictOptions)}


def _check_int(name: str, value, low: int) -> None:
    if value is None and name in ("batch_size", "batch_pixels"):
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise InputError(f"{name} must be a whole number >= {low}, got {value!r}")
