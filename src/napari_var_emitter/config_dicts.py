"""Settings dataclasses from plain dicts (JSON files, checkpoints): unknown keys are an error, a
camera dict becomes a :class:`~.camera.Camera`, JSON lists become the tuples the fields hold."""

from __future__ import annotations

from dataclasses import fields

from .camera import Camera
from .errors import InputError


def from_dict(cls, values: dict, what: str, tuples: tuple[str, ...] = ()):
    """``cls(**values)``; InputError naming ``what`` (e.g. "simulation parameter") for unknown keys."""
    if not isinstance(values, dict):
        raise InputError(f"{what}s must be a mapping, got {type(values).__name__}")
    unknown = set(values) - {f.name for f in fields(cls)}
    if unknown:
        raise InputError(f"unknown {what}(s): {', '.join(sorted(map(str, unknown)))}")
    values = dict(values)
    if isinstance(values.get("camera"), dict):
        values["camera"] = Camera.from_dict(values["camera"])
    for key in tuples:
        if key in values:
            values[key] = tuple(values[key])
    return cls(**values)
