"""Fake inputs shared by the bad-input tests."""

import numpy as np


class HugeFrames:
    """An array-like that claims 20,000 x 20,000 frames and fails the test if a pixel is read."""

    shape, dtype, ndim = (1, 20_000, 20_000), np.dtype(np.uint16), 3

    def __getitem__(self, index):
        raise AssertionError("a pixel of a 20,000 x 20,000 frame was read")

    def __array__(self, *args, **kwargs):
        raise AssertionError("a 20,000 x 20,000 frame was converted")
