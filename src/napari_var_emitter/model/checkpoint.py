"""Self-describing model files: config + weights + detection threshold + how they were made.

Saved with ``torch.save`` of plain containers and loaded with ``weights_only=True``: a file can
hold tensors, numbers, strings, lists and dicts, never code (STYLE items 2 and 3).

Loading checks everything before it allocates a network: the config's types (``ModelConfig``)
and sizes (``CONFIG_LIMITS``, at most ``MAX_PARAMETERS`` weights, counted on the "meta" device),
every weight's name and shape against that config, finite weights, and the metadata (threshold,
camera, PSF width, uncertainty scale). Anything wrong is a :class:`CheckpointError` with one clear
message. Saving is atomic and refuses non-finite weights, so the file at a path is always the last
good model.
"""

from __future__ import annotations

import math
import pickle
import warnings
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch

from ..camera import Camera
from ..errors import CameraError, CheckpointError
from ..io.atomic import atomic_path
from .config import CONFIG_LIMITS, MAX_PATCH_NUMS, MAX_PHOTON_SCALE, ModelConfig
from .var import TrueVAREmitterPredictor

FORMAT = "napari-var-emitter/1"
BUNDLED = "default.pt"
# Weights shipped in the package, by name: ``load_checkpoint("bundled:window-3")``.
BUNDLED_MODELS = {
    "default": BUNDLED,  # sees frame t alone: works on any frames
    "window-3": "window3.pt",  # sees frames t-1, t, t+1: only for movies of consecutive frames
}
BUNDLED_PREFIX = "bundled:"
MAX_PARAMETERS = 1_000_000_000  # the seed preset has 275 M
# (min, max) of the config's integer sizes: a crafted config must not make us allocate terabytes.


def bundled_path(name: str = "default") -> Path:
    if name not in BUNDLED_MODELS:
        raise CheckpointError(f"no bundled model {name!r}; choose from {', '.join(BUNDLED_MODELS)}")
    return Path(str(resources.files("napari_var_emitter") / "weights" / BUNDLED_MODELS[name]))


def resolve_model_path(path: str | Path | None) -> Path:
    """None -> the bundled default; ``"bundled:NAME"`` -> that bundled model; else the path."""
    if path is None:
        return bundled_path()
    if isinstance(path, str) and path.startswith(BUNDLED_PREFIX):
        return bundled_path(path[len(BUNDLED_PREFIX) :])
    return Path(path)


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
    """Write atomically: a temporary file beside the target, then a rename.

    Raises :class:`CheckpointError` (and leaves the file at ``path`` as it was) if a weight is NaN
    or infinite: a poisoned model never replaces a good one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.net.state_dict().items()}
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"refusing to save {path}: weight {bad[0]} holds NaN or infinite values")
    payload = {
        "format": FORMAT,
        "model_config": model.config.to_dict(),
        "state_dict": state,
        "threshold": float(model.threshold),
        "camera": model.camera.to_dict(),
        "psf_sigma_nm": float(model.psf_sigma_nm),
        "uncertainty_scale": float(model.uncertainty_scale),
        "meta": model.meta,
    }
    payload.update(extra or {})
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_payload(path: str | Path) -> dict:
    """The raw checkpoint dictionary, loaded safely; CheckpointError for anything wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no model file at {path}")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise CheckpointError(f"{path} is not a PyTorch model file (truncated or another format)")
    try:
        with warnings.catch_warnings():  # torch's warnings about a damaged archive: our message says it
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe content"
        raise CheckpointError(f"{path} was refused: it holds more than weights ({first})") from None
    except Exception as exc:  # noqa: BLE001 - a damaged archive: torch raises many kinds
        raise CheckpointError(f"{path} is not a readable model file ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a napari-var-emitter model (format {FORMAT!r} expected)")
    return payload


def _number(payload: dict, key: str, default: float, low: float, high: float, path: Path) -> float:
    """A metadata number: a real (int or float, not bool), finite, in [low, high]."""
    value = payload.get(key, default)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and math.isfinite(float(value)) and low <= float(value) <= high
    if not ok:
        raise CheckpointError(
            f"{path} holds an invalid {key.replace('_', ' ')} {value!r} (expected {low}..{high})"
        )
    return float(value)


def check_config(config: ModelConfig, path: str | Path = "model") -> int:
    """Check a config's sizes against ``CONFIG_LIMITS`` and count its weights without allocating
    them (on the "meta" device); return the count. :class:`CheckpointError` if out of range."""
    for name, (low, high) in CONFIG_LIMITS.items():
        value = getattr(config, name)
        if not low <= value <= high:
            raise CheckpointError(f"{path}: model config {name} = {value} is out of range [{low}, {high}]")
    if not 1 <= len(config.patch_nums) <= MAX_PATCH_NUMS or max(config.patch_nums) > config.train_size:
        raise CheckpointError(f"{path}: model config patch_nums {list(config.patch_nums)} is out of range")
    if not math.isfinite(config.photon_scale) or not 0 < config.photon_scale <= MAX_PHOTON_SCALE:
        raise CheckpointError(f"{path}: model config photon_scale = {config.photon_scale} is out of range")
    shell = _shell(config, path)
    count = sum(v.numel() for v in shell.state_dict().values())
    if count > MAX_PARAMETERS:
        raise CheckpointError(
            f"{path}: the model config asks for {count:,} weights (at most {MAX_PARAMETERS:,})"
        )
    return count


def _shell(config: ModelConfig, path) -> TrueVAREmitterPredictor:
    """The network of a config on the "meta" device: shapes only, no memory."""
    try:
        with torch.device("meta"):
            return TrueVAREmitterPredictor(config)
    except Exception as exc:  # noqa: BLE001 - a combination of sizes the network cannot be built with
        raise CheckpointError(
            f"{path}: the model config cannot be built ({type(exc).__name__}: {exc})"
        ) from None


def _check_state(state, config: ModelConfig, path: Path) -> None:
    """Every weight present, of the config's shape, a finite tensor; before anything is allocated."""
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path} holds no weights")
    expected = {k: tuple(v.shape) for k, v in _shell(config, path).state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = ([f"missing {missing[0]}"] if missing else []) + (
            [f"unexpected {unexpected[0]}"] if unexpected else []
        )
        raise CheckpointError(
            f"{path} does not match its declared architecture: {', '.join(parts)} "
            f"({len(missing)} missing, {len(unexpected)} unexpected weights)"
        )
    for key, shape in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: weight {key} is not a tensor")
        if tuple(value.shape) != shape:
            raise CheckpointError(
                f"{path} does not match its declared architecture: weight {key} has shape "
                f"{tuple(value.shape)}, the config gives {shape}"
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{path}: weight {key} holds NaN or infinite values")


def load_checkpoint(path: str | Path | None = None, device: str | torch.device = "cpu") -> EmitterModel:
    """Load a model file (None: the bundled weights; ``"bundled:window-3"``: another bundled
    model, see BUNDLED_MODELS) onto ``device``."""
    path = resolve_model_path(path)
    payload = read_payload(path)
    config = ModelConfig.from_dict(payload.get("model_config"))
    check_config(config, path)
    state = payload.get("state_dict")
    _check_state(state, config, path)
    threshold = _number(payload, "threshold", 0.5, 1e-6, 5.0, path)
    uncertainty_scale = _number(payload, "uncertainty_scale", 1.0, 0.1, 10.0, path)
    psf_sigma_nm = _number(payload, "psf_sigma_nm", 120.0, 1.0, 10_000.0, path)
    try:
        camera = Camera.from_dict(payload.get("camera", {}))
    except CameraError as exc:
        raise CheckpointError(f"{path} holds invalid camera parameters: {exc}") from None
    meta = payload.get("meta", {})
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} holds invalid metadata (a mapping expected)")
    net = TrueVAREmitterPredictor(config)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path} does not match its declared architecture: {str(exc).splitlines()[0]}"
        ) from None
    net.to(device).eval()
    return EmitterModel(
        net=net,
        threshold=threshold,
        camera=camera,
        psf_sigma_nm=psf_sigma_nm,
        uncertainty_scale=uncertainty_scale,
        meta=meta,
        name=path.stem,
    )
