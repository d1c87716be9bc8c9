"""The PSF measured from beads: the fitted table against the PSF the beads were drawn with, the
refinement with it, and the commands that write, read and use a PSF file."""

import json
import random

import numpy as np
import pytest
import tifffile
import torch
from scipy.special import erf

from napari_var_emitter.calibration.beads import measure_psf
from napari_var_emitter.camera import Camera
from napari_var_emitter.cli import main
from napari_var_emitter.errors import InputError
from napari_var_emitter.localize.psf_models import TableModel, gaussian_model
from napari_var_emitter.localize.refine import refine
from napari_var_emitter.measured_psf import MeasuredPsf
from napari_var_emitter.simulation import SimulationConfig, simulate_movie
from napari_var_emitter.simulation.beads import simulate_beads
from napari_var_emitter.simulation.psf import pupil_tables, render_pupil


def shape_error(table: np.ndarray, truth: np.ndarray) -> float:
    """Relative L2 difference of two pixel tables on their common extent, after the best scaling
    (their normalisation depends on how far each reaches)."""
    a, b = table.shape[0] // 2, truth.shape[0] // 2
    h = min(a, b)
    t, r = table[a - h : a + h + 1, a - h : a + h + 1], truth[b - h : b + h + 1, b - h : b + h + 1]
    scale = (t * r).sum() / (t * t).sum()
    return float(np.sqrt(((scale * t - r) ** 2).sum() / (r**2).sum()))


@pytest.fixture(scope="module")
def focus_movie():
    """Ten frames of 25 beads in focus, NA 1.4, 680 nm, 100 nm pixels, and the true table."""
    stack, tables = simulate_beads(planes_nm=(0.0,) * 10, seed=3)
    return stack, tables[0].numpy()


@pytest.fixture(scope="module")
def measured(focus_movie):
    return measure_psf(focus_movie[0], pixel_size_nm=100.0)


def test_the_table_matches_the_psf_the_beads_were_drawn_with(focus_movie, measured):
    _, truth = focus_movie
    assert measured.source["planes"] == [0, 9]  # a movie in focus: every frame averaged
    assert measured.source["beads"] >= 9
    assert shape_error(measured.table, truth) < 0.02
    assert measured.table[:: measured.oversample, :: measured.oversample].sum() == pytest.approx(1.0)
    # Gaussian-equivalent width of an Airy pattern: ~0.21 lambda / NA = 102 nm before pixel integration
    assert 0.9 < measured.sigma_px < 1.1


def test_a_z_scan_is_measured_at_its_sharpest_plane():
    planes = tuple(np.arange(-400.0, 401.0, 50.0))
    stack, tables = simulate_beads(planes_nm=planes, seed=4)
    psf = measure_psf(stack, pixel_size_nm=100.0)
    first, last = psf.source["planes"]
    assert planes[first] >= -50 and planes[last] <= 50
    errors = [shape_error(psf.table, t.numpy()) for t in tables]
    assert int(np.argmin(errors)) == planes.index(0.0)
    assert min(errors) < 0.03


def test_offset_and_gain_do_not_matter(focus_movie, measured):
    other = measure_psf(focus_movie[0] * 3.0 + 500.0, pixel_size_nm=100.0)
    assert np.abs(other.table - measured.table).max() < 1e-6 * measured.table.max() + 1e-12
    assert other.sigma_px == pytest.approx(measured.sigma_px, rel=1e-6)


def test_too_few_beads_is_one_clear_error():
    stack, _ = simulate_beads(beads=2, seed=5)
    with pytest.raises(InputError, match="at least 3"):
        measure_psf(stack)
    with pytest.raises(InputError, match="bead"):
        measure_psf(np.full((64, 64), 100.0))


def test_table_model_equals_the_gaussian_model_for_a_gaussian_table():
    """A table of the integrated Gaussian (sigma 1.2 px) read by the table model gives the
    Gaussian model's expected photons and derivatives: offsets, orientation and signs agree."""
    oversample, half = 8, 8 * 9
    offsets = np.arange(-half, half + 1) / oversample
    edges = (offsets[:, None] + np.array([-0.5, 0.5])[None, :]) / (np.sqrt(2) * 1.2)
    column = 0.5 * (erf(edges[:, 1]) - erf(edges[:, 0]))
    table = np.outer(column, column)
    psf = MeasuredPsf(table / table[::oversample, ::oversample].sum(), 100.0, oversample, 1.2)
    theta = torch.tensor([[3.2, 2.9, 1500.0, 12.0, 1.2], [2.6, 3.45, 800.0, 5.0, 1.2]], dtype=torch.float64)
    model = TableModel(psf, torch.device("cpu"), torch.float64)
    mu, jac = model(theta, 7, with_jacobian=True)
    assert torch.allclose(model(theta, 7, with_jacobian=False)[0], mu)
    mu_g, jac_g = gaussian_model(theta, 7, with_jacobian=True)
    assert torch.allclose(mu, mu_g, rtol=0.005)
    for k in range(4):
        assert torch.allclose(jac[:, k], jac_g[:, k], atol=0.01 * float(jac_g[:, k].abs().max()))


def test_the_fit_with_the_measured_psf_gets_the_photons_right(measured):
    """Emitters drawn with the true pupil PSF: a Gaussian model misses the light in the rings (it
    under-counts the photons by several percent); the measured table does not."""
    g = torch.Generator().manual_seed(0)
    n, photons, background = 400, 2000.0, 20.0
    x, y = 7.5 + torch.rand(n, generator=g), 7.5 + torch.rand(n, generator=g)
    t = torch.tensor
    table, sigma = pupil_tables(t([1.4]), t([680.0]), t([0.0]), t([0.0]), 100.0, 8)
    zero = torch.zeros(n, dtype=torch.long)
    expected = render_pupil(x, y, torch.full((n,), photons), zero, table, torch.arange(n), n, 16, 16)
    frames = torch.poisson(expected + background, generator=g).double()
    camera = Camera(em_gain=1.0, e_per_adu=1.0, read_noise_e=0.0, qe=1.0)
    start = [v.double() + 0.2 * torch.randn(n, generator=g).double() for v in (x, y)]
    common = (torch.full((n,), photons), torch.full((n,), background), torch.full((n,), 0.1), camera)
    fits = {
        name: refine(frames, torch.arange(n), *start, *common, float(sigma[0]), psf=psf)
        for name, psf in (("gaussian", None), ("measured", measured))
    }
    for fit in fits.values():
        assert fit["fitted"].float().mean() > 0.95
    n_gauss = fits["gaussian"]["photons"][fits["gaussian"]["fitted"]].mean()
    n_table = fits["measured"]["photons"][fits["measured"]["fitted"]].mean()
    assert n_gauss < 0.96 * photons
    assert abs(n_table / photons - 1) < 0.02

    def rmse(fit):
        ok = fit["fitted"]
        return float(torch.sqrt(((fit["x"] - x)[ok] ** 2 + (fit["y"] - y)[ok] ** 2).mean() / 2))

    assert rmse(fits["measured"]) <= 1.05 * rmse(fits["gaussian"])
    # its Cramer-Rao bound is the error it makes (the Gaussian's overstates it)
    bound = float(fits["measured"]["position_sd"][fits["measured"]["fitted"]].mean())
    assert bound == pytest.approx(rmse(fits["measured"]), rel=0.2)


def test_psf_file_round_trip_and_bad_files(tmp_path, measured):
    path = tmp_path / "psf.json"
    measured.save(path)
    again = MeasuredPsf.load(path)
    assert np.allclose(again.table, measured.table, rtol=1e-5, atol=1e-9)
    assert again.sigma_px == measured.sigma_px and again.source == measured.source
    (tmp_path / "camera.json").write_text(json.dumps(Camera().to_dict()))
    for bad, message in (
        ("camera.json", "kind"),
        ("missing.json", "cannot read"),
    ):
        with pytest.raises(InputError, match=message):
            MeasuredPsf.load(tmp_path / bad)
    values = measured.to_dict()
    values["table"] = values["table"][:-1]
    with pytest.raises(InputError, match="square"):
        MeasuredPsf.from_dict(values)
    with pytest.raises(InputError, match="measured with 100 nm pixels"):
        measured.check_pixel_size(160.0)


def test_a_simulation_drawn_with_the_measured_psf(tmp_path, measured):
    path = tmp_path / "psf.json"
    measured.save(path)
    config = SimulationConfig(psf_model="measured", psf_file=str(path), density_per_um2=1.0)
    movie = simulate_movie(config, 3, seed=0)
    assert len(movie.truth) > 0
    assert np.allclose(movie.truth.sigma, measured.sigma_px)
    with pytest.raises(InputError, match="both"):
        SimulationConfig(psf_model="measured")
    with pytest.raises(InputError, match="measured with 100 nm pixels"):
        SimulationConfig(psf_model="measured", psf_file=str(path), camera=Camera(pixel_size_nm=160.0))


def test_commands_measure_draw_and_fit_a_psf(tmp_path, focus_movie, capsys):
    beads = tmp_path / "beads.tif"
    tifffile.imwrite(beads, focus_movie[0].astype(np.float32))
    psf = tmp_path / "psf.json"
    assert main(["calibrate", "--beads", str(beads), "--out", str(psf)]) == 0
    assert "PSF measured from" in capsys.readouterr().out
    assert MeasuredPsf.load(psf).source["planes"] == [0, 9]

    movie = tmp_path / "movie"
    args = ["--frames", "4", "--size", "32", "--photons", "2000", "4000", "--seed", "2", "--quiet"]
    assert main(["simulate", str(movie), "--psf", str(psf), *args]) == 0
    out = tmp_path / "locs.csv"
    camera = ["--camera", str(movie / "camera.json")]
    assert main(["predict", str(movie / "frames.tif"), "--out", str(out), "--psf", str(psf), *camera]) == 0
    assert "measured from beads" in capsys.readouterr().err
    assert out.stat().st_size > 0

    # one clear error, no output: a PSF of other pixels, a bad file, no input
    bad = tmp_path / "bad.csv"
    wrong_pixels = ["--pixel-size-nm", "160"]
    for extra, message in (
        (["--psf", str(psf), *wrong_pixels], "measured with 100 nm pixels"),
        (["--psf", str(movie / "camera.json")], '"kind": "psf"'),
        (["--psf", str(psf), "--model", "classical"], "classical baseline fits a Gaussian"),
    ):
        assert main(["predict", str(movie / "frames.tif"), "--out", str(bad), *camera, *extra]) == 2
        assert message in capsys.readouterr().err
        assert not bad.exists()
    assert main(["calibrate"]) == 2
    assert "one of them" in capsys.readouterr().err


def test_training_draws_the_measured_psf_and_keeps_its_width(tmp_path, measured):
    from _tiny import tiny_train_config
    from napari_var_emitter.model.checkpoint import load_checkpoint
    from napari_var_emitter.train import TrainConfig, _simulation, iter_train

    path = tmp_path / "psf.json"
    measured.save(path)
    cfg = tiny_train_config(tmp_path, steps=2, psf_file=str(path))
    assert _simulation(cfg, random.Random(1)).psf_model == "measured"
    for _ in iter_train(cfg):
        pass
    assert load_checkpoint(cfg.out, "cpu").psf_sigma_nm == pytest.approx(measured.sigma_nm)
    with pytest.raises(InputError, match="measured with 100 nm pixels"):
        TrainConfig(psf_file=str(path), camera=Camera(pixel_size_nm=160.0))
