"""``drift`` and ``frc`` on the command line: the same rows with their ids, the drift removed, the
trace beside the output; the resolution as text or JSON; bad input as one line."""

import json

import numpy as np
import pytest

from napari_var_emitter.cli import main
from napari_var_emitter.io.localizations import read_csv, to_csv
from napari_var_emitter.io.tables import read_localizations, write_localizations
from napari_var_emitter.simulation.tables import simulate_filaments

PX_NM = 100.0


@pytest.fixture(scope="module")
def drifting():
    return simulate_filaments(30_000, 5_000, noise_nm=10.0, seed=11)


def _residual_nm(corrected, sim) -> float:
    left_x = corrected.x - (sim.locs.x - sim.drift_x_px[sim.locs.frame])
    left_y = corrected.y - (sim.locs.y - sim.drift_y_px[sim.locs.frame])
    return float(np.sqrt(np.var(left_x) + np.var(left_y))) * PX_NM


def test_drift_keeps_every_row_its_id_and_its_other_columns(drifting, tmp_path, capsys):
    # a ThunderSTORM table after filtering: ids with gaps, and a column this package does not know
    source = tmp_path / "locs.csv"
    to_csv(drifting.locs, source, PX_NM)
    lines = source.read_text().splitlines()
    header = lines[0] + ',"chi2"'
    rows = [f"{3 * k + 7}," + line.split(",", 1)[1] + f",{k % 5}" for k, line in enumerate(lines[1:])]
    source.write_text("\n".join([header, *rows]) + "\n")
    out = tmp_path / "fixed.csv"

    assert main(["drift", str(source), "--out", str(out)]) == 0
    assert "30000 localizations corrected" in capsys.readouterr().err
    before, after = source.read_text().splitlines(), out.read_text().splitlines()
    assert after[0] == before[0] and len(after) == len(before)
    for old, new in zip(before[1:], after[1:], strict=True):
        a, b = old.split(","), new.split(",")
        assert a[:2] == b[:2] and a[4:] == b[4:]  # id, frame and every column but x, y
    corrected = read_csv(out, PX_NM)
    assert _residual_nm(drifting.locs, drifting) > 40.0
    assert _residual_nm(corrected, drifting) < 10.0
    trace = (tmp_path / "fixed.drift.csv").read_text().splitlines()
    assert trace[0] == "frame,dx [nm],dy [nm]" and len(trace) == 1 + 5_000


def test_drift_of_picasso_files_and_the_fiducial_mode(tmp_path):
    sim = simulate_filaments(15_000, 3_000, noise_nm=10.0, n_fiducials=3, seed=12)
    source = write_localizations(sim.locs, tmp_path / "locs.hdf5", pixel_size_nm=PX_NM)[0]
    out = tmp_path / "fixed.hdf5"
    assert main(["drift", str(source), "--out", str(out), "--fiducials", "--quiet"]) == 0
    corrected, meta = read_localizations(out)
    assert meta["format"] == "picasso" and len(corrected) == len(sim.locs)
    np.testing.assert_array_equal(corrected.frame, sim.locs.frame)
    assert _residual_nm(corrected, sim) < 10.0


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda tmp: to_csv(simulate_filaments(1_000, 500, seed=1).locs, tmp / "few.csv", PX_NM), "too few"),
        (lambda tmp: tmp / "no.csv", "no such file"),
    ],
)
def test_drift_refuses_bad_input_in_one_line(make, fragment, tmp_path, capsys):
    source = make(tmp_path)
    out = tmp_path / "out.csv"
    assert main(["drift", str(source), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err
    assert not out.exists() and not (tmp_path / "out.drift.csv").exists()


def test_frc_prints_the_resolution_and_its_curve(tmp_path, capsys):
    still = simulate_filaments(30_000, 5_000, noise_nm=10.0, drift=False, seed=13)
    noisy = simulate_filaments(30_000, 5_000, noise_nm=30.0, drift=False, seed=13)
    resolution = {}
    for name, sim in (("still", still), ("noisy", noisy)):
        path = to_csv(sim.locs, tmp_path / f"{name}.csv", PX_NM)
        assert main(["frc", str(path), "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert len(result["frc"]) == len(result["frequencies_per_nm"]) > 10
        resolution[name] = result["resolution_nm"]
    assert 15.0 < resolution["still"] < 120.0 and resolution["noisy"] > 1.5 * resolution["still"]
    assert main(["frc", str(tmp_path / "still.csv")]) == 0
    assert capsys.readouterr().out.startswith(f"resolution {resolution['still']:.1f} nm")
