"""render.render_gaussians: mass, geometry (docs/CONVENTIONS.md, section 1) and its napari placement."""

import numpy as np
import pytest

from napari_var_emitter.analysis.render import render_gaussians
from napari_var_emitter.errors import InputError
from napari_var_emitter.io.localizations import Localizations
from napari_var_emitter.plugin.layers import map_geometry


def _locs(**columns) -> Localizations:
    n = len(columns["frame"])
    return Localizations(
        **{name: columns.get(name, np.full(n, np.nan)) for name in Localizations.column_names()}
    )


def _centroid(image, factor):
    rows, cols = np.indices(image.shape)
    # fine pixel k has its centre at camera-pixel coordinate (k + 0.5) / factor - 0.5
    to_px = lambda k: (k + 0.5) / factor - 0.5  # noqa: E731
    total = image.sum()
    return to_px((rows * image).sum() / total), to_px((cols * image).sum() / total)


@pytest.mark.parametrize("factor", [1, 4, 8])
def test_one_localization_lands_where_it_is(factor):
    locs = _locs(frame=[0], x=[20.7], y=[10.3], uncertainty=[0.6])
    image = render_gaussians(locs, (32, 40), factor)
    assert image.shape == (32 * factor, 40 * factor)
    assert image.sum() == pytest.approx(1.0, abs=1e-5)
    y, x = _centroid(image, factor)
    assert y == pytest.approx(10.3, abs=1e-3) and x == pytest.approx(20.7, abs=1e-3)
    # napari placement of the render: a map with f = 1 / factor
    scale, translate = map_geometry((1 / factor, 1 / factor), (1.0, 1.0), (0.0, 0.0))
    k = np.unravel_index(np.argmax(image), image.shape)
    world = np.asarray(k) * scale + translate
    assert np.all(np.abs(world - [10.3, 20.7]) <= 0.5 / factor + 1e-9)


def test_many_localizations_and_missing_uncertainty():
    rng = np.random.default_rng(0)
    n = 5000
    locs = _locs(frame=np.zeros(n, int), x=rng.uniform(5, 59, n), y=rng.uniform(5, 59, n))
    image = render_gaussians(locs, (64, 64), 8)
    assert image.sum() == pytest.approx(n, rel=1e-4)
    assert render_gaussians(Localizations(), (8, 8), 2).shape == (16, 16)


def test_bad_factor():
    with pytest.raises(InputError):
        render_gaussians(Localizations(), (8, 8), 0)
