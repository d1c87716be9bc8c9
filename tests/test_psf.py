"""The pupil PSF (simulation/psf.py) against diffraction theory: the Airy pattern in focus, energy,
pixel integration, sub-pixel placement and its Gaussian-equivalent width."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import j1

from napari_var_emitter.simulation.psf import (
    OVERSAMPLE,
    fine_psf,
    gaussian_equivalent_sigma_nm,
    gaussian_sigma_px,
    pixel_table,
    psf_radius_px,
    pupil_tables,
    render_pupil,
)

PX = 100.0


def _fine(na=1.4, wavelength=680.0, defocus=0.0, spherical=0.0, radius=8):
    t = torch.tensor
    return fine_psf(t([na]), t([wavelength]), t([defocus]), t([spherical]), PX, radius)[0].double()


def _axis(fine):
    half = fine.shape[-1] // 2
    return (np.arange(fine.shape[-1]) - half + 0.5) / OVERSAMPLE  # pixels


def test_in_focus_psf_is_the_airy_pattern_with_its_first_zero_at_0_61_lambda_over_na():
    na, wavelength = 1.4, 680.0
    fine = _fine(na, wavelength).numpy()
    axis = _axis(fine)
    row = fine.shape[0] // 2  # the row at y = 1/16 pixel
    profile = fine[row] / fine.max()
    r_nm = np.hypot(axis, axis[row]) * PX
    v = 2 * math.pi * na * r_nm / wavelength
    airy = (2 * j1(v) / v) ** 2
    assert np.abs(profile - airy / airy.max()).max() < 0.01  # scalar Fourier optics = Airy
    right = axis > 0
    first_min = axis[right][np.argmax(np.diff(profile[right]) > 0)]  # first sample where it rises again
    assert first_min * PX == pytest.approx(0.61 * wavelength / na, abs=PX / OVERSAMPLE)
    assert profile[right].min() < 2e-3


def test_light_is_normalised_by_parseval():
    fine = _fine(radius=20)
    assert float(fine.sum()) == pytest.approx(0.988, abs=0.005)  # the Airy tail beyond 21 px: ~1 %
    assert float(_fine(radius=8).sum()) < float(fine.sum())


def test_pixel_table_is_the_box_sum_of_the_fine_samples_over_one_pixel():
    fine = _fine(1.3, 600.0, 150.0, 0.1, radius=6)[None].float()
    table = pixel_table(fine)[0].double()
    reference = F.avg_pool2d(fine[:, None].double(), OVERSAMPLE, stride=1)[0, 0] * OVERSAMPLE**2
    offset = (torch.arange(table.shape[-1]) - table.shape[-1] // 2) / OVERSAMPLE
    inner = offset[:, None] ** 2 + offset[None, :] ** 2 < 3.9**2  # inside the taper (4 to 5.5 px)
    ratio = (table / reference)[inner]
    assert float(ratio.std() / ratio.mean()) < 1e-5  # the same up to the renormalisation
    assert float(table[::OVERSAMPLE, ::OVERSAMPLE].sum()) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("na, wavelength", [(1.4, 680.0), (1.2, 520.0), (0.5, 600.0)])
def test_gaussian_equivalent_sigma_is_0_21_lambda_over_na(na, wavelength):
    sigma = gaussian_equivalent_sigma_nm(na, wavelength, pixel_size_nm=PX)
    assert sigma == pytest.approx(0.21 * wavelength / na, rel=0.04)


def test_defocus_widens_symmetrically_and_spherical_aberration_breaks_the_symmetry():
    t = torch.tensor
    depths = t([-300.0, 0.0, 300.0])
    plain = gaussian_sigma_px(fine_psf(t([1.4] * 3), t([680.0] * 3), depths, t([0.0] * 3), PX, 10))
    assert float(plain[0]) == pytest.approx(float(plain[2]), rel=1e-4)
    assert float(plain[0]) > 1.2 * float(plain[1])
    aberrated = gaussian_sigma_px(fine_psf(t([1.4] * 3), t([680.0] * 3), depths, t([0.2] * 3), PX, 10))
    assert abs(float(aberrated[0]) - float(aberrated[2])) > 0.05 * float(aberrated[1])
    assert float(aberrated[1]) > float(plain[1])


@pytest.mark.parametrize("x, y", [(15.0, 16.0), (15.37, 15.81), (15.5, 15.5), (14.06, 16.94), (15.49, 14.5)])
def test_rendered_emitter_keeps_its_photons_and_its_position(x, y):
    tables, _ = pupil_tables(
        torch.tensor([1.4]), torch.tensor([680.0]), torch.zeros(1), torch.zeros(1), PX, 9
    )
    t = torch.tensor
    image = render_pupil(t([x]), t([y]), t([2500.0]), t([0]), tables, t([0]), 1, 32, 32)[0].double()
    assert float(image.sum()) == pytest.approx(2500.0, rel=0.002)
    rows, cols = np.indices(image.shape)
    total = float(image.sum())
    assert float((image * torch.tensor(cols)).sum()) / total == pytest.approx(x, abs=0.002)
    assert float((image * torch.tensor(rows)).sum()) / total == pytest.approx(y, abs=0.002)


def test_rendering_reads_the_table_at_the_emitters_offset():
    """An emitter 3/8 pixel right of a pixel centre: each pixel holds the table at that offset."""
    tables, _ = pupil_tables(
        torch.tensor([1.3]), torch.tensor([600.0]), torch.tensor([100.0]), torch.zeros(1), PX, 8
    )
    t = torch.tensor
    image = render_pupil(t([12.375]), t([10.0]), t([1.0]), t([0]), tables, t([0]), 1, 24, 24)[0]
    centre = tables.shape[-1] // 2
    for row, col in [(10, 12), (10, 13), (11, 11), (8, 15)]:
        j_col = centre + OVERSAMPLE * (col - 12) - 3  # pixel centre minus emitter, in 1/8 pixels
        j_row = centre + OVERSAMPLE * (row - 10)
        assert float(image[row, col]) == pytest.approx(float(tables[0, j_row, j_col]), rel=1e-5)


def test_patch_radius_grows_with_wavelength_defocus_and_lower_na():
    base = psf_radius_px(1.4, 680.0, 0.0, PX)
    assert base == math.ceil(1.2 * 680 / 1.4 / PX + 2.0)
    assert psf_radius_px(1.2, 680.0, 0.0, PX) > base
    assert psf_radius_px(1.4, 680.0, 400.0, PX) > base
    assert psf_radius_px(1.4, 680.0, 0.0, 160.0) < base


def test_an_emitter_in_several_frames_is_drawn_in_each_as_if_alone():
    t = torch.tensor
    tables, _ = pupil_tables(t([1.4, 1.2]), t([680.0, 560.0]), t([0.0, 200.0]), t([0.0, 0.1]), PX, 9)
    x, y, which = t([3.3, 20.8, -6.0]), t([10.4, 25.1, 12.0]), t([0, 1, 1])  # (M,) the third outside
    emitter = t([0, 0, 1, 2, 2])  # (N,) rows: emitter 0 in frames 0 and 2, 1 in frame 1, 2 in 0 and 1
    frame, photons = t([0, 2, 1, 0, 1]), t([500.0, 800.0, 1000.0, 3000.0, 3000.0])
    shared = render_pupil(x, y, photons, which, tables, frame, 3, 32, 32, emitter=emitter)
    alone = render_pupil(x[emitter], y[emitter], photons, which[emitter], tables, frame, 3, 32, 32)
    assert torch.allclose(shared, alone, rtol=1e-6, atol=1e-6)
    one = render_pupil(x[1:2], y[1:2], t([1000.0]), which[1:2], tables, t([0]), 1, 32, 32)[0]
    assert float(shared[1].sum() - one.sum()) > 5.0  # emitter 2, 6 pixels outside: its rings reach in
