"""The camera and the PSF width, measured from the frames being analysed.

:func:`calibrate` estimates the camera's offset, gain (ADU per photoelectron), excess noise (EMCCD or
sCMOS/CCD), read noise, the background and the PSF width, each with an uncertainty; a dark movie
gives per-pixel offset and variance maps. :func:`check_camera` says, in warnings a user can act on,
where a camera given by hand disagrees with the frames (:mod:`.check`). See :mod:`.noise` for the
method, :mod:`.spots` (frames, spots, PSF width), :mod:`.moments` (spot-free pixels) and :mod:`.dense`
(a spatial high-pass, for dense frames) for the pixel statistics behind it.
"""

from .check import check_camera
from .noise import CAMERA_TYPES, MAX_FRAMES, calibrate
from .result import Calibration

__all__ = ["CAMERA_TYPES", "MAX_FRAMES", "Calibration", "calibrate", "check_camera"]
