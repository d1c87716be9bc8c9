"""Self-describing model files: config + weights + detection threshold + how they were made.

Saved with ``torch.save`` of plain containers and loaded with ``weights_only=True``: a file can
hold tensors, numbers, strings, lists and dicts, never code (STYLE items 2 and 3).
"""

from __future__ import annotations

import math
import os
import pickle
import tempfile
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch

from .camera import Camera
from .errors import CameraError, CheckpointError
from .model.config import ModelConfig
from .model.var import TrueVAREmitterPredictor

FORMAT = "napari-var-emitter/1"
BUNDLED = "default.pt"


def bundled_path() -> Path:
    return Path(str(resources.files("napari_var_emitter") / "weights" / BUNDLED))


@dataclass
class EmitterModel:
    """A network plus what is needed to use it right."""

    net: TrueVAREmitterPredictor
    threshold: float = 0.5
    camera: Camera = field(default_factory=Camera)  # the camera it was trained for
    psf_sigma_nm: float = 120.0  # mean PSF width of its training data
    uncertainty_scale: float = 1.0  # calibration of the predicted uncertainty, fitted on validation data
    meta: dict = field(default_factory=dict)  # training config, metrics, step, provenance
    name: str = "model"

    @property
    def config(self) -> ModelConfig:
        return self.net.config

    def level_names(self, frame_shape) -> list[str]:
        return self.net.level_names(frame_shape)


def save_checkpoint(path: str | Path, model: EmitterModel, extra: dict | None = None) -> Path:
    """Write atomically: a temporary file beside the target, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "model_config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.net.state_dict().items()},
        "threshold": float(model.threshold),
        "camera": model.camera.to_dict(),
        "psf_sigma_nm": float(model.psf_sigma_nm),
        "uncertainty_scale": float(model.uncertainty_scale),
        "meta": model.meta,
    }
    payload.update(extra or {})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; a model file is an ordinary file
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_payload(path: str | Path) -> dict:
    """The raw checkpoint dictionary, loaded safely; CheckpointError for anything wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no model file at {path}")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise CheckpointError(f"{path} is not a PyTorch model file (truncated or another format)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe content"
        raise CheckpointError(f"{path} was refused: it holds more than weights ({first})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable model file ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a napari-var-emitter model (format {FORMAT!r} expected)")
    return payload


def load_checkpoint(path: str | Path | None = None, device: str | torch.device = "cpu") -> EmitterModel:
    """Load a model file (None: the bundled weights) onto ``device``."""
    path = bundled_path() if path is None else Path(path)
    payload = read_payload(path)
    config = ModelConfig.from_dict(payload.get("model_config"))
    net = TrueVAREmitterPredictor(config)
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds no weights")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path} does not match its declared architecture: {str(exc).splitlines()[0]}"
        ) from None
    threshold = payload.get("threshold", 0.5)
    if not isinstance(threshold, float) or not math.isfinite(threshold) or not 0 < threshold < 5:
        raise CheckpointError(f"{path} holds an invalid detection threshold {threshold!r}")
    uncertainty_scale = payload.get("uncertainty_scale", 1.0)
    if not isinstance(uncertainty_scale, float) or not 0.1 <= uncertainty_scale <= 10:
        raise CheckpointError(f"{path} holds an invalid uncertainty scale {uncertainty_scale!r}")
    try:
        camera = Camera.from_dict(payload.get("camera", {}))
    except CameraError as exc:
        raise CheckpointError(f"{path} holds invalid camera parameters: {exc}") from None
    net.to(device).eval()
    return EmitterModel(
        net=net,
        threshold=threshold,
        camera=camera,
        psf_sigma_nm=float(payload.get("psf_sigma_nm", 120.0)),
        uncertainty_scale=uncertainty_scale,
        meta=payload.get("meta", {}) if isinstance(payload.get("meta"), dict) else {},
        name=path.stem,
    )
