"""analysis.selection: the rows within ranges, in the units a user reads."""

import math

import numpy as np

from napari_var_emitter.analysis.selection import filter_mask, filter_values
from napari_var_emitter.io.localizations import Localizations


def test_ranges_in_nm_both_bounds_included_unknown_values_fail():
    locs = Localizations(
        frame=[0, 1, 2, 3, 4],
        x=np.zeros(5),
        y=np.zeros(5),
        photons=[100, 200, 300, 400, np.nan],
        uncertainty=[0.1, 0.2, 0.3, np.nan, 0.1],  # pixels of 160 nm
    )
    np.testing.assert_allclose(filter_values(locs, "uncertainty_nm", 160.0), [16, 32, 48, np.nan, 16])
    keep = filter_mask(locs, {"photons": (200, 400), "uncertainty_nm": (-math.inf, 32)}, 160.0)
    np.testing.assert_array_equal(keep, [False, True, False, False, False])
    assert filter_mask(locs, {}, 160.0).all()
    np.testing.assert_array_equal(filter_mask(locs, {"frame": (3, math.nan)}, 160.0), [0, 0, 0, 1, 1])
