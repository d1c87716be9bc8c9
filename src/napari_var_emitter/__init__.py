"""napari-var-emitter: find and localize emitters in SMLM movies with a next-scale (VAR) model."""

from .camera import Camera
from .errors import (
    CameraError,
    CheckpointError,
    CsvFormatError,
    InputError,
    PicassoFormatError,
    TableFormatError,
    TrainingError,
    VarEmitterError,
)
from .io.localizations import Localizations

__version__ = "0.2.0"
__all__ = [
    "Camera",
    "Localizations",
    "VarEmitterError",
    "InputError",
    "CameraError",
    "CheckpointError",
    "CsvFormatError",
    "PicassoFormatError",
    "TableFormatError",
    "TrainingError",
]
