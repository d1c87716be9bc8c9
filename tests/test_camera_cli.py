"""The camera on the command line: ``calibrate``, ``--camera FILE.json``, ``--camera auto`` and the
warning when a camera given by hand disagrees with the frames; on real camera frames (AF647) too."""

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy.spatial import cKDTree

from napari_var_emitter.camera import CAMERA_FIELDS, Camera
from napari_var_emitter.cli import main
from napari_var_emitter.io.localizations import read_csv
from napari_var_emitter.simulation import SimulationConfig, simulate_movie

REAL = Path(__file__).parent / "data" / "real_af647_sdt" / "frames.tif"
CAMERA = Camera(baseline=250.0, e_per_adu=12.0, em_gain=150.0)


@pytest.fixture(scope="module")
def movie_path(tmp_path_factory):
    config = SimulationConfig(
        frame_size=(128, 128), density_per_um2=0.5, structure="filaments", camera=CAMERA
    )
    movie = simulate_movie(config, 100, seed=31)
    path = tmp_path_factory.mktemp("camera") / "movie.tif"
    tifffile.imwrite(path, movie.frames.numpy().astype(np.uint16))
    return path


def _last_line(err: str) -> str:
    return [line for line in err.strip().splitlines() if line][-1]


def test_calibrate_prints_the_conventions_keys_and_saves_a_camera_file(movie_path, tmp_path, capsys):
    out = tmp_path / "camera.json"
    assert main(["calibrate", str(movie_path), "--json", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    for key in ("baseline", "adu_per_electron", "excess_noise", "read_noise_e", "psf_sigma_nm"):
        assert key in printed
    assert "background_photons" in printed and set(CAMERA_FIELDS) <= set(printed)
    assert abs(printed["baseline"] - CAMERA.baseline) < 10
    assert printed["adu_per_electron"] == pytest.approx(CAMERA.em_gain / CAMERA.e_per_adu, rel=0.25)
    assert json.loads(out.read_text()) == printed
    # the file is a camera file: predict reads it, and a flag given beside it wins
    locs = tmp_path / "locs.csv"
    args = ["predict", str(movie_path), "--out", str(locs), "--model", "classical"]
    assert main([*args, "--camera", str(out), "--pixel-size-nm", "160"]) == 0
    line = _last_line(capsys.readouterr().err)
    assert f"camera from {out}, flags given beside it: baseline {printed['baseline']:.4g} ADU" in line
    assert read_csv(locs, 160.0).x.max() < 128  # nm of 160 nm pixels


def test_camera_auto_measures_the_camera_and_the_psf(movie_path, tmp_path, capsys):
    out = tmp_path / "auto.csv"
    assert (
        main(["predict", str(movie_path), "--out", str(out), "--camera", "auto", "--model", "bundled"]) == 0
    )
    err = capsys.readouterr().err
    assert "warning" not in err
    line = _last_line(err)
    assert "camera measured from the frames" in line and "(measured from the frames)" in line


def _flags(camera: Camera) -> list[str]:
    return [f"--{k.replace('_', '-')}={v}" for k, v in camera.to_dict().items()]


@pytest.mark.parametrize("wrong", [dict(e_per_adu=1.2), dict(baseline=600.0)], ids=["10x gain", "baseline"])
def test_a_wrong_camera_is_warned_about_and_the_run_goes_on(movie_path, tmp_path, capsys, wrong):
    out = tmp_path / "wrong.csv"
    args = ["predict", str(movie_path), "--out", str(out), "--model", "classical"]
    assert main([*args, *_flags(Camera(**{**CAMERA.to_dict(), **wrong}))]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "--camera auto" in warnings[0], warnings
    assert out.exists()


def test_the_right_camera_gets_no_warning(movie_path, tmp_path, capsys):
    out = tmp_path / "right.csv"
    assert main(["predict", str(movie_path), "--out", str(out), "--model", "classical", *_flags(CAMERA)]) == 0
    assert "warning:" not in capsys.readouterr().err


def test_real_frames_with_the_measured_camera(tmp_path, capsys):
    """Real AF647 frames, camera unpublished: with --camera auto the model finds the molecules one
    sees (10-35 per frame on average; the molecules bleach, from ~34 in the first frame to ~8 in the
    last) where a plausible but wrong guess finds hundreds, and it agrees with a Gaussian fit of the
    bright isolated spots to within tens of nm."""
    var, fit, guess = tmp_path / "var.csv", tmp_path / "fit.csv", tmp_path / "guess.csv"
    assert main(["predict", str(REAL), "--out", str(var), "--camera", "auto", "--model", "bundled"]) == 0
    assert main(["predict", str(REAL), "--out", str(fit), "--camera", "auto", "--model", "classical"]) == 0
    guessed = ["--baseline", "200", "--e-per-adu", "1", "--em-gain", "1"]
    assert main(["predict", str(REAL), "--out", str(guess), "--model", "bundled", *guessed]) == 0
    err = capsys.readouterr().err
    assert any(line.startswith("warning:") for line in err.splitlines())  # the guess is flagged
    ours, theirs, wrong = (read_csv(p, 100.0) for p in (var, fit, guess))
    per_frame = np.bincount(ours.frame, minlength=10)
    assert 10 <= per_frame.mean() <= 35 and per_frame.min() >= 5 and per_frame.max() <= 40, per_frame
    assert len(wrong) > 5 * len(ours)  # the plausible guess: hundreds of false emitters per frame
    # bright isolated spots of the Gaussian fit: no other fit within 1 um
    pairs = 0
    distances = []
    for t in range(10):
        a, b = ours.in_frame(t), theirs.in_frame(t)
        b = b.subset(b.photons > np.percentile(theirs.photons, 50))
        if not len(a) or not len(b):
            continue
        crowded = cKDTree(np.c_[b.x, b.y]).query(np.c_[b.x, b.y], k=2)[0][:, 1] < 10
        d, _ = cKDTree(np.c_[a.x, a.y]).query(np.c_[b.x, b.y][~crowded])
        distances += list(d * 100.0)
        pairs += int((d < 2).sum())
    distances = np.array(distances)
    assert pairs >= 20
    assert np.mean(distances < 100) > 0.9  # the fitter's bright spots are found by the model
    assert np.median(distances) < 30  # nm


def test_calibration_errors_are_one_line(tmp_path, capsys):
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.full((5, 64, 64), 300, np.uint16))
    assert main(["calibrate", str(flat)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "constant" in err[0]
    out = tmp_path / "x.csv"
    assert main(["predict", str(flat), "--out", str(out), "--camera", "auto"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "constant" in err[0] and not out.exists()
