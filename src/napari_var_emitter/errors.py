"""Exceptions: one clear type per kind of bad input, all under :class:`VarEmitterError`.

The CLI prints ``str(error)`` of any of these as a single line and exits non-zero;
the widgets show it as a notification.
"""


class VarEmitterError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(VarEmitterError, ValueError):
    """Frames, arrays or parameters that cannot be analysed (shape, dtype, NaN, empty...)."""


class CameraError(InputError):
    """Camera parameters that are missing, non-finite or out of range."""


class CheckpointError(VarEmitterError):
    """A model file that is missing, unreadable, unsafe or does not match the code."""


class TableFormatError(VarEmitterError, ValueError):
    """A localization table (any format) that cannot be read."""


class CsvFormatError(TableFormatError):
    """A localization table in CSV (ThunderSTORM) form that cannot be read."""


class PicassoFormatError(TableFormatError):
    """A Picasso localization file (HDF5 ``/locs`` + YAML) that cannot be read."""


class TrainingError(VarEmitterError):
    """Training that cannot go on (e.g. the loss stays NaN); the last good checkpoint is kept."""
