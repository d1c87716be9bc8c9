"""Model specs -> loaded models: the one place that reads ``auto``, ``bundled``, ``bundled:NAME``,
a checkpoint path, or ``classical``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..camera import Camera
from ..model.checkpoint import BUNDLED_PREFIX, EmitterModel, load_checkpoint
from ..model.runtime import resolve_device
from .autoselect import FRAME_MODEL, MOVIE_MODEL, Choice, choose
from .options import CLASSICAL

AUTO, BUNDLED = "auto", "bundled"


def load_model(path=None, device: str | torch.device = "cpu") -> EmitterModel:
    """A model file (None: the bundled one-frame weights; ``"bundled:NAME"``: another bundled
    model), loaded safely; CheckpointError if unusable."""
    return load_checkpoint(path, resolve_device(device))


@dataclass(frozen=True)
class ResolvedModel:
    """A loaded model, the spec that loads it again anywhere (``"bundled"``, ``"bundled:NAME"`` or an
    absolute path: what Dask workers receive), and for ``auto`` the choice and its reason."""

    model: EmitterModel | None  # None for the classical baseline
    spec: str
    choice: Choice | None = None

    def describe(self, device: str) -> str:
        """What a run's last line says about the model (and for ``auto``, why it was chosen)."""
        if self.model is None:
            return "classical"
        return f"VAR on {device}" + (f"; {self.choice.describe()}" if self.choice is not None else "")


def resolve_model(
    spec: str,
    frames=None,
    camera: Camera | None = None,
    device: str | torch.device = "cpu",
    frame_model: EmitterModel | None = None,
) -> ResolvedModel:
    """Load the model ``spec`` names. ``auto`` chooses between the bundled models from ``frames``
    (:mod:`.autoselect`: only a sample is read) and needs them; ``frame_model`` is the bundled
    one-frame model if already loaded."""
    spec = str(spec)
    if spec == CLASSICAL:
        return ResolvedModel(None, CLASSICAL)
    if spec in (AUTO, BUNDLED):
        frame_model = frame_model if frame_model is not None else load_model(None, device)
    if spec == AUTO:
        choice = choose(frames, frame_model, camera, device)
        if choice.name == FRAME_MODEL:
            return ResolvedModel(frame_model, BUNDLED, choice)
        name = f"{BUNDLED_PREFIX}{MOVIE_MODEL}"
        return ResolvedModel(load_model(name, device), name, choice)
    if spec == BUNDLED:
        return ResolvedModel(frame_model, BUNDLED)
    if spec.startswith(BUNDLED_PREFIX):
        return ResolvedModel(load_model(spec, device), spec)
    return ResolvedModel(load_model(spec, device), str(Path(spec).resolve()))
