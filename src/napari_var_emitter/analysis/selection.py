"""Which rows of a localization table to keep: ranges of photons, precision, probability, frame and
PSF width, in the units a user reads (nm for lengths), as Picasso's filter does."""

from __future__ import annotations

import math

import numpy as np

from ..io.localizations import Localizations, check_pixel_size

# name a user reads -> (the table's column, unit, in nm: multiplied by the pixel size)
FILTER_COLUMNS = {
    "photons": ("photons", "photons", False),
    "uncertainty_nm": ("uncertainty", "nm", True),
    "probability": ("probability", "", False),
    "frame": ("frame", "", False),
    "sigma_nm": ("sigma", "nm", True),
}


def filter_values(locs: Localizations, name: str, pixel_size_nm: float) -> np.ndarray:
    """The values of one :data:`FILTER_COLUMNS` entry for every row (float; NaN where unknown)."""
    column, _, in_nm = FILTER_COLUMNS[name]
    values = np.asarray(getattr(locs, column), dtype=np.float64)
    return values * check_pixel_size(pixel_size_nm) if in_nm else values


def filter_mask(
    locs: Localizations, ranges: dict[str, tuple[float, float]], pixel_size_nm: float
) -> np.ndarray:
    """Rows whose every value named in ``ranges`` lies within its (low, high), both included; a row
    with an unknown (NaN) value fails that range. A bound that is NaN or infinite is open."""
    keep = np.ones(len(locs), dtype=bool)
    for name, (low, high) in ranges.items():
        values = filter_values(locs, name, pixel_size_nm)
        inside = np.isfinite(values)
        if math.isfinite(low):
            inside &= values >= low
        if math.isfinite(high):
            inside &= values <= high
        keep &= inside
    return keep
