"""napari-var-emitter command: simulate -> predict (classical) -> evaluate, and one-line errors."""

import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_var_emitter.cli import build_parser, main
from napari_var_emitter.io.localizations import THUNDERSTORM_HEADER, read_csv


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    rc = main(
        [
            "simulate",
            str(out),
            "--frames",
            "8",
            "--size",
            "48",
            "40",
            "--density",
            "0.3",
            "--photons",
            "2000",
            "5000",
            "--background",
            "40",
            "60",
            "--seed",
            "11",
            "--quiet",
        ]
    )
    assert rc == 0
    return out


def test_simulate_writes_movie(sim_dir):
    frames = tifffile.imread(sim_dir / "frames.tif")
    assert frames.shape == (8, 48, 40) and frames.dtype == np.uint16
    assert (sim_dir / "truth.csv").exists() and (sim_dir / "camera.json").exists()


def test_round_trip(sim_dir, capsys):
    out = sim_dir / "locs.csv"
    rc = main(["predict", str(sim_dir / "frames.tif"), "--out", str(out), "--model", "classical"])
    assert rc == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "localizations in 8 frames" in err[0]
    header = out.read_text().splitlines()[0]
    assert header.startswith(",".join(f'"{h}"' for h in THUNDERSTORM_HEADER))
    locs, truth = read_csv(out, 100.0), read_csv(sim_dir / "truth.csv", 100.0)
    assert len(locs) > 0.7 * len(truth)

    assert main(["evaluate", str(sim_dir / "truth.csv"), str(out), "--match", "greedy"]) == 0
    table = capsys.readouterr().out
    jaccard = float(next(line for line in table.splitlines() if line.startswith("Jaccard")).split()[-1])
    assert jaccard > 60


def test_quiet_predict(sim_dir, capsys):
    out = sim_dir / "quiet.csv"
    assert (
        main(
            [
                "predict",
                str(sim_dir / "frames.tif"),
                "--out",
                str(out),
                "--model",
                "classical",
                "--quiet",
                "--threshold",
                "6",
                "--em-gain",
                "300",
            ]
        )
        == 0
    )
    assert capsys.readouterr().err == ""
    assert out.exists()


def _one_error_line(capsys):
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("napari-var-emitter: error: ")
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_text("not an image"), "TIFF"),
        (lambda p: tifffile.imwrite(p, np.zeros((40, 40, 3), np.uint8), photometric="rgb"), "RGB"),
        (lambda p: tifffile.imwrite(p, np.full((2, 16, 16), np.nan, np.float32)), "NaN"),
        (lambda p: tifffile.imwrite(p, np.zeros((4, 4), np.uint16)), "too small"),
    ],
)
def test_bad_input_one_line_exit_2_no_output(tmp_path, capsys, make, message):
    frames = tmp_path / "in.tif"
    make(frames)
    out = tmp_path / "out.csv"
    rc = main(["predict", str(frames), "--out", str(out), "--model", "classical"])
    assert rc == 2
    assert message in _one_error_line(capsys)
    assert not out.exists()
    assert list(tmp_path.glob(".out.csv*")) == []  # no temporary file left


def test_bad_camera_and_missing_model(sim_dir, tmp_path, capsys):
    out = tmp_path / "out.csv"
    assert main(["predict", str(sim_dir / "frames.tif"), "--out", str(out), "--qe", "2"]) == 2
    assert "qe" in _one_error_line(capsys)
    assert (
        main(
            [
                "predict",
                str(sim_dir / "frames.tif"),
                "--out",
                str(out),
                "--model",
                str(tmp_path / "missing.pt"),
            ]
        )
        == 2
    )
    _one_error_line(capsys)
    assert not out.exists()


def test_evaluate_bad_csv(sim_dir, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert main(["evaluate", str(sim_dir / "truth.csv"), str(bad)]) == 2
    assert "lacks the column" in _one_error_line(capsys)


def test_parser_has_one_builder_per_subcommand():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"predict", "simulate", "evaluate"} <= set(sub.choices)


def test_console_script_subprocess(sim_dir, tmp_path):
    out = tmp_path / "locs.csv"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "napari_var_emitter.cli",
            "predict",
            str(tmp_path / "nope.tif"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == f"napari-var-emitter: error: no such file: {tmp_path / 'nope.tif'}"
    assert not out.exists()


def test_train_writes_a_loadable_checkpoint(tmp_path, capsys):
    from napari_var_emitter.model.checkpoint import load_checkpoint

    out = tmp_path / "m.pt"
    code = main(
        [
            "train",
            "--out",
            str(out),
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--val-every",
            "2",
            "--device",
            "cpu",
            "--em-gain",
            "1",
            "--e-per-adu",
            "2",
            "--qe",
            "0.8",
        ]
    )
    assert code == 0
    model = load_checkpoint(out)
    assert model.camera.em_gain == 1 and model.meta["step"] == 2
    assert "step 2/2" in capsys.readouterr().err


def test_train_bad_settings_exit_2(tmp_path, capsys):
    code = main(["train", "--out", str(tmp_path / "m.pt"), "--steps", "0"])
    assert code == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "m.pt").exists()


def test_evaluate_reads_picasso_files_at_their_own_pixel_size(sim_dir, tmp_path, capsys):
    from napari_var_emitter.io.tables import write_localizations

    truth = read_csv(sim_dir / "truth.csv", 100.0)
    # the same emitters in a Picasso file of 50 nm pixels: positions in those pixels
    half = truth.subset(np.arange(len(truth)))
    half.x, half.y = (truth.x + 0.5) * 2 - 0.5, (truth.y + 0.5) * 2 - 0.5
    write_localizations(half, tmp_path / "locs.hdf5", pixel_size_nm=50.0, frame_shape=(64, 64))
    assert main(["evaluate", str(sim_dir / "truth.csv"), str(tmp_path / "locs.hdf5")]) == 0
    lines = {line[:20].strip(): line[20:].split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert float(lines["Jaccard index [%]"][0]) == 100.0  # every emitter matched, in place
    assert float(lines["RMSE lateral [nm]"][0]) < 1e-3


def test_no_refine_keeps_the_networks_positions(sim_dir, tmp_path):
    args = ["predict", str(sim_dir / "frames.tif"), "--quiet", "--device", "cpu", "--precision", "fp32"]
    assert main([*args, "--out", str(tmp_path / "a.csv"), "--no-confirm"]) == 0
    assert main([*args, "--out", str(tmp_path / "b.csv"), "--no-refine"]) == 0
    a, b = read_csv(tmp_path / "a.csv", 100.0), read_csv(tmp_path / "b.csv", 100.0)
    assert len(a) == len(b) > 0 and not np.allclose(a.x, b.x)


def test_the_fit_confirms_dim_candidates_unless_told_not_to(sim_dir, tmp_path):
    args = ["predict", str(sim_dir / "frames.tif"), "--quiet", "--device", "cpu", "--precision", "fp32"]
    assert main([*args, "--out", str(tmp_path / "a.csv"), "--threshold", "0.9"]) == 0
    assert main([*args, "--out", str(tmp_path / "b.csv"), "--threshold", "0.9", "--no-confirm"]) == 0
    a, b = read_csv(tmp_path / "a.csv", 100.0), read_csv(tmp_path / "b.csv", 100.0)
    assert len(a) > len(b)  # candidates below 0.9 that the fit confirmed


def test_an_unexpected_error_is_one_line(monkeypatch, capsys):
    import napari_var_emitter.cli as cli

    def boom(args):
        raise RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["evaluate"].set_defaults(run=boom)
    assert main(["evaluate", "a.csv", "b.csv"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error (RuntimeError): CUDA out of memory." in err


def test_local_attention_on_a_large_frame(tmp_path):
    out = tmp_path / "sim"
    assert (
        main(["simulate", str(out), "--frames", "2", "--size", "192", "192", "--seed", "3", "--quiet"]) == 0
    )
    args = ["predict", str(out / "frames.tif"), "--quiet", "--device", "cpu", "--model", "bundled"]
    assert main([*args, "--out", str(tmp_path / "global.csv")]) == 0
    assert main([*args, "--out", str(tmp_path / "local.csv"), "--local-attention"]) == 0
    a, b = read_csv(tmp_path / "global.csv", 100.0), read_csv(tmp_path / "local.csv", 100.0)
    assert len(a) > 20 and abs(len(a) - len(b)) <= 0.1 * len(a)  # nearly the same emitters ...
    assert len(a) != len(b) or not np.array_equal(a.x, b.x)  # ... by a different attention
