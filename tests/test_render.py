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


def test_histogram_counts_each_localization_in_the_fine_pixel_it_falls_in():
    from napari_var_emitter.analysis.render import render_histogram

    # fine pixel k covers camera coordinates [k / f - 0.5, (k + 1) / f - 0.5)
    locs = _locs(frame=[0, 0, 0, 0], x=[-0.5, 0.2499, 0.25, 40.0], y=[0.0, 0.0, 0.0, 0.0])
    image = render_histogram(locs, (2, 40), 4)
    assert image.shape == (8, 160) and image.sum() == 3  # x = 40 lies outside the frame
    assert image[2, 0] == 1 and image[2, 2] == 1 and image[2, 3] == 1


@pytest.mark.parametrize("method", ["histogram", "gaussians"])
def test_a_render_in_steps_equals_the_render_at_once(method):
    from napari_var_emitter.analysis.render import RenderProgress, iter_render, render_histogram

    rng = np.random.default_rng(1)
    n = 1_000
    locs = _locs(frame=rng.integers(0, 100, n), x=rng.uniform(0, 16, n), y=rng.uniform(0, 12, n))
    locs.uncertainty[:] = rng.uniform(0.05, 0.3, n)
    steps = iter_render(locs, (12, 16), 4, method=method, rows_per_step=300)
    events = []
    while True:
        try:
            events.append(next(steps))
        except StopIteration as stop:
            image = stop.value
            break
    assert events == [RenderProgress(d, n) for d in (300, 600, 900, 1000)]
    whole = (render_histogram if method == "histogram" else render_gaussians)(locs, (12, 16), 4)
    np.testing.assert_allclose(image, whole, rtol=1e-5, atol=1e-5)


def test_time_spans_and_their_colours():
    from napari_var_emitter.analysis.render import color_by_time, iter_render
    from napari_var_emitter.progress import run_to_end

    locs = _locs(frame=[0, 0, 99], x=[2.0, 2.0, 10.0], y=[3.0, 3.0, 5.0])
    stack = run_to_end(iter_render(locs, (8, 16), 2, time_bins=2))
    assert stack.shape == (2, 16, 32) and stack[0].sum() == 2 and stack[1].sum() == 1
    rgb = color_by_time(stack, np.array([[1.0, 0, 0], [0, 0, 1.0]]), percentile=100)
    np.testing.assert_allclose(rgb[7, 5], [1, 0, 0])  # the early spot: red, at full brightness
    np.testing.assert_allclose(rgb[11, 21], [0, 0, 0.5])  # the late one: blue, half as dense
    assert rgb.shape == (16, 32, 3) and rgb.sum() == pytest.approx(1.5)
