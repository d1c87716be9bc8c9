"""The scripts of training/ (benchmark, speed, GPU check, network, profile, ONNX): tiny real runs."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from napari_var_emitter.io.localizations import Localizations

TRAINING = Path(__file__).parents[1] / "training"
sys.path.insert(0, str(TRAINING))

import bench_speed  # noqa: E402
import benchmark  # noqa: E402
import gpu_check  # noqa: E402

# --------------------------------------------------------------------------------------------------
# benchmark


def test_benchmark_table_with_the_automatic_model_choice(capsys):
    argv = ["--frames", "12", "--sets", "LD-high", "--methods", "classical,var,var-noconfirm"]
    assert benchmark.main(argv) == 0
    out, err = capsys.readouterr()
    rows = [line for line in out.splitlines() if line.startswith("| ") and "LD-high" in line]
    assert [r.split("|")[1].strip() for r in rows] == ["classical", "var", "var-noconfirm"]
    assert "LD-high: model: bundled, 3 frames (a movie:" in err  # a simulated movie: 3 frames
    jaccard = float(rows[1].split("|")[3])
    assert jaccard > 70.0


def test_sets_of_other_families_build_on_their_own_seeds_and_run(capsys, tmp_path):
    from napari_var_emitter.simulation import gaussian_equivalent_sigma_nm

    names = ("pupil-LD", "pupil-HD", "scmos", "blobs")
    seeds = {benchmark.synthetic_config(n)[1] for n in (*benchmark.SYNTHETIC_SETS, *names)}
    assert len(seeds) == 8 and min(seeds) >= benchmark.BENCHMARK_SEED_BASE
    test_sets = [benchmark.make_set(n, 3, tmp_path) for n in names]
    validation_sets = [benchmark.make_set(n, 3, tmp_path, validation=True) for n in names]
    pupil, dense, scmos, blobs = test_sets
    assert pupil.psf_sigma_nm == pytest.approx(gaussian_equivalent_sigma_nm(1.4, 680.0)) == dense.psf_sigma_nm
    assert pupil.psf_sigma_nm == pytest.approx(0.21 * 680.0 / 1.4, rel=0.04)
    assert pupil.camera.em_gain == 100.0 and pupil.camera.em_gain / pupil.camera.e_per_adu == 300.0 / 45.0
    assert (scmos.camera.em_gain, scmos.camera.e_per_adu, scmos.camera.read_noise_e) == (1.0, 0.5, 1.5)
    assert scmos.psf_sigma_nm == 120.0 and len(dense.truth) > 4 * len(pupil.truth)
    assert blobs.camera == benchmark.Camera() and blobs.psf_sigma_nm == 120.0
    assert _background_structure(blobs.frames) > 3 * _background_structure(scmos.frames)  # same density
    for a, b in zip(test_sets, validation_sets, strict=True):
        assert a.frames.shape == b.frames.shape == (3, 64, 64) and not np.array_equal(a.frames, b.frames)
    for validation in ([], ["--validation"]):
        assert (
            benchmark.main(
                ["--frames", "3", "--methods", "classical", "--sets", ",".join(names), *validation]
            )
            == 0
        )
        rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| classical")]
        assert [r.split("|")[2].strip() for r in rows] == list(names)
        assert all(float(r.split("|")[3]) > 30.0 for r in rows)  # JI: the classical fit finds them


def _background_structure(frames_TYX) -> float:
    """Spatial spread of the frames' mean smoothed over 5 px (emitters average out, blobs do not),
    relative to its mean level."""
    from scipy.ndimage import gaussian_filter

    smooth = gaussian_filter(frames_TYX.mean(axis=0), 5.0)
    return float(smooth.std() / smooth.mean())


# --------------------------------------------------------------------------------------------------
# bench_speed


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("bench")


def test_stacks_are_written_once_and_read_streaming(work):
    path = bench_speed.write_stack(bench_speed.stack_path(work, 32, 5), 32, 5)
    first = path.stat().st_mtime_ns
    assert bench_speed.write_stack(path, 32, 5).stat().st_mtime_ns == first  # reused
    from napari_var_emitter.io.stream import RawTiffStack, open_frames

    frames = open_frames(path)
    assert isinstance(frames, RawTiffStack) and frames.shape == (5, 32, 32)
    assert frames[:].mean() > 100  # ADU above the baseline: a simulated movie
    frames.close()


def test_one_case_measures_the_var_model(work):
    path = bench_speed.write_stack(bench_speed.stack_path(work, 32, 5), 32, 5)
    args = SimpleNamespace(device="cpu", batch_size=4, tile_size=256, precision="fp32", var_model=None)
    row = bench_speed.run_case("var", path, args)
    assert row["frames"] == 5 and row["size"] == "32x32"
    assert row["frames_per_s"] > 0 and row["locs_per_frame"] > 0.5
    assert row["peak_rss_mb"] > 50 and row["growth_mb"] >= 0


def test_the_script_prints_a_table_from_fresh_processes(work, tmp_path):
    out, rows = tmp_path / "speed.md", tmp_path / "rows.json"
    argv = ["--methods", "classical", "--sizes", "32", "--size-frames", "4", "--stacks", "4,6"]
    argv += ["--stack-size", "32", "--work", str(work), "--out", str(out), "--json", str(rows)]
    assert bench_speed.main(argv) == 0
    table = out.read_text()
    assert "| frames | size | method | frames/s |" in table
    assert "| 4 | 32x32 | classical |" in table and "| 6 | 32x32 | classical |" in table
    data = json.loads(rows.read_text())
    assert len(data) == 2  # (32 px, 4 frames) is in both sweeps and runs once
    assert all(r["frames_per_s"] > 0 and r["peak_rss_mb"] > 0 for r in data)


def test_the_summary_gives_the_ratios_when_measured():
    def row(method, size, frames, fps, rss=500.0):
        return dict(method=method, size=size, frames=frames, frames_per_s=fps, peak_rss_mb=rss)

    lines = bench_speed._summary_lines(
        [
            row("var", "64x64", 100, 300.0),
            row("picasso", "64x64", 100, 150.0),
            row("var", "256x256", 100, 10.0),
            row("var", "256x256", 10_000, 9.5, rss=2048.0),
        ]
    )
    assert "var / picasso at 64x64, 100 frames: 2.00x" in lines
    assert "peak RSS 2.00 GB" in lines and "100: 10, 10,000: 9.5" in lines


# --------------------------------------------------------------------------------------------------
# gpu_check


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_gpu_check_without_cuda_says_so_in_one_line():
    done = subprocess.run(
        [sys.executable, str(TRAINING / "gpu_check.py")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA GPU" in lines[0], done.stderr
    assert done.stdout == ""


def _locs(x, y, frame):
    return Localizations(frame=np.asarray(frame), x=np.asarray(x, float), y=np.asarray(y, float))


def test_compare_matches_frame_by_frame():
    ref = _locs([1.0, 5.0, 9.0, 3.0], [1.0, 5.0, 9.0, 3.0], [0, 0, 0, 1])
    same = gpu_check.compare(ref, _locs(ref.x + 0.005, ref.y, ref.frame))
    assert same["matched"] == 1.0 and same["max_nm"] == pytest.approx(0.5)
    assert gpu_check.passes(same, "fp32") and gpu_check.passes(same, "bf16")
    # a point in another frame does not match; one missing
    moved = gpu_check.compare(ref, _locs([1.0, 5.0, 3.0], [1.0, 5.0, 3.0], [0, 0, 0]))
    assert moved["n_other"] == 3 and moved["matched"] == pytest.approx(0.5)
    assert not gpu_check.passes(moved, "bf16")
    off = gpu_check.compare(ref, _locs(ref.x + 0.02, ref.y, ref.frame))  # 2 nm
    assert not gpu_check.passes(off, "fp32") and gpu_check.passes(off, "bf16")


def test_gpu_check_dry_run_on_the_cpu(tmp_path):
    out = tmp_path / "gpu.md"
    argv = ["--device", "cpu", "--sizes", "32", "--presets", "default", "--precisions", "fp32"]
    argv += ["--seconds", "0.05", "--compare-frames", "4", "--big-frames", "0", "--batch-pixels", "4096"]
    assert gpu_check.main(argv + ["--out", str(out)]) == 0
    text = out.read_text()
    assert "| 4 | 64 | no | fp32 |" in text and "PASS" in text and "FAIL" not in text
    # the bundled model as predict runs it (sparse finest level), and dense for comparison
    assert "| default | bundled | 32 | fp32 | sparse | 4 |" in text
    assert "| default | bundled | 32 | fp32 | dense | 4 |" in text
    assert "random weights" in text


def test_peak_memory_is_the_processes_own():
    # getrusage's ru_maxrss survives fork and exec: a child would report this process's peak
    code = (
        f"import sys; sys.path.insert(0, {str(TRAINING)!r}); import bench_speed as b; print(b._peak_rss_mb())"
    )
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)
    parent = bench_speed._peak_rss_mb()
    assert 5 < child < parent - 50, (child, parent)


def test_bench_network_times_architecture_variants(capsys):
    import bench_network

    assert bench_network.overrides('attn_levels=1,activation="relu"') == {
        "attn_levels": 1,
        "activation": "relu",
    }
    argv = ["--size", "32", "--batch", "2", "--window", "1", "--repeats", "1"]
    assert bench_network.main([*argv, "--variant", "", "--variant", "conv_blocks=1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and lines[2].startswith("| default |") and lines[3].startswith("| conv_blocks=1 |")
    assert all(float(line.split("|")[2]) > 0 for line in lines[2:])


def test_profile_predict_times_every_stage_and_restores_predict(tmp_path):
    import profile_predict
    from napari_var_emitter.localize import pipeline as predict_module

    before = {name: getattr(predict_module, name) for name in profile_predict.STAGES}
    out = tmp_path / "profile.md"
    argv = ["--device", "cpu", "--sizes", "32", "--batches", "4", "--frames", "8", "--precision", "fp32"]
    assert profile_predict.main([*argv, "--out", str(out)]) == 0
    row = [line for line in out.read_text().splitlines() if line.startswith("| 32 | 4 |")]
    assert len(row) == 1
    cells = [float(c.replace(",", "")) for c in row[0].strip("|").split("|")[2:]]
    assert cells[0] > 0  # frames/s
    names = ["read", "photons", "network", "peaks", "dupes", "refinement"]
    stages = dict(zip(names, cells[1:7], strict=True))
    assert stages["network"] > 0 and stages["refinement"] > 0 and stages["peaks"] > 0
    assert {name: getattr(predict_module, name) for name in profile_predict.STAGES} == before


def test_bench_onnx_agrees_with_torch_in_float32(capsys):
    import bench_onnx

    assert bench_onnx.main(["--model", "bundled", "--batch", "2", "--repeats", "1"]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    rows = [line.split("|")[1:-1] for line in table[1:]]  # [0] is the header
    runtimes = [r[1].strip() for r in rows]
    assert runtimes == [
        "torch, as predict runs it (bf16)" if "bf16" in runtimes[0] else "torch, as predict runs it (fp32)",
        "torch fp32, dense",
        "ONNX Runtime fp32, dense",
        "ONNX Runtime int8 (static), dense",
        "OpenVINO fp32, dense",
        "OpenVINO bf16, dense",
    ]
    assert all(float(r[2]) > 0 for r in rows)
    assert float(rows[2][3]) < 1e-4  # the exported float32 graph computes what torch does
    assert float(rows[4][3]) < 1e-4  # in both runtimes


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_bench_onnx_without_a_runtime_says_so_in_one_line(monkeypatch, capsys, runtime):
    import bench_onnx

    monkeypatch.setitem(sys.modules, runtime, None)  # import fails
    assert bench_onnx.main([]) == 2
    assert capsys.readouterr().err.strip() == bench_onnx.MISSING


def test_bench_beads_measures_every_case(capsys, monkeypatch):
    import bench_beads

    monkeypatch.setattr(bench_beads, "CASES", {"one frame": dict(planes_nm=(0.0,), beads=9)})
    assert bench_beads.main(["--seeds", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[2].startswith("| one frame | 9 |")
    cells = lines[2].split("|")
    assert float(cells[3].split()[0]) < 3.0  # table error [%]


# --------------------------------------------------------------------------------------------------
# recall by photons and neighbours


def test_nearest_neighbours_within_each_frame():
    import bench_recall

    truth = Localizations(
        frame=np.array([0, 0, 0, 1]),
        x=np.array([10.0, 13.0, 30.0, 10.5]),
        y=np.array([10.0, 14.0, 10.0, 10.0]),
        photons=np.array([100.0, 300.0, 50.0, 80.0]),
    )
    distance, ratio = bench_recall.nearest_neighbours(truth)
    np.testing.assert_allclose(distance, [5.0, 5.0, np.hypot(17.0, 4.0), np.inf])  # frame 1: alone
    np.testing.assert_allclose(ratio, [3.0, 1 / 3, 300.0 / 50.0, 0.0])


def test_bench_recall_table_counts_every_true_emitter(capsys):
    import bench_recall

    assert bench_recall.main(["--set", "LD-high", "--frames", "6", "--models", "bundled"]) == 0
    out = capsys.readouterr().out
    total = int(out.split(" true emitters")[0].split(", ")[-1])
    rows = {
        line.split("|")[1].strip(): line.split("|")[2:4] for line in out.splitlines() if line.startswith("| ")
    }
    assert int(rows["all"][0]) == total and 80.0 < float(rows["all"][1]) <= 100.0
    photon_rows = [v for k, v in rows.items() if k.endswith(" photons")]
    distance_rows = [v for k, v in rows.items() if k.endswith("px to the nearest")]
    assert sum(int(n) for n, _ in photon_rows) == total  # every emitter in one photon bin
    assert sum(int(n) for n, _ in distance_rows) == total


def test_bench_gate_opens_the_tiles_whose_halo_holds_an_emitter(capsys):
    import bench_gate

    # pixel 11 lies one pixel short of tile 1's 4 px halo (pixels 12-35); pixel 12 lies in it
    one = bench_gate.tile_shares([0], [11.0], [40.0], 1, (64, 64), tile=16, halo=4)
    two = bench_gate.tile_shares([0], [12.0], [40.0], 1, (64, 64), tile=16, halo=4)
    assert one == (1 / 16, 1 / 16 * 1.5**2)
    assert two == (2 / 16, 2 / 16 * 1.5**2)
    # frames are separate: the same pixel in two of three frames opens one tile in each
    share, _ = bench_gate.tile_shares([0, 2], [5.0, 5.0], [5.0, 5.0], 3, (64, 64), tile=16, halo=0)
    assert share == 2 / (3 * 16)
    assert bench_gate.main(["--frames", "4", "--sets", "LD-high"]) == 0
    assert "| LD-high |" in capsys.readouterr().out
