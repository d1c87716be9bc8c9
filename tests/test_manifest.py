"""The npe2 manifest: valid for the installed plugin, and its two copies identical."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def _npe2() -> str:
    found = Path(sys.executable).with_name("npe2")
    if found.exists():
        return str(found)
    found = shutil.which("npe2")
    if found is None:
        pytest.fail("the npe2 command is not installed beside this Python (pip install npe2)")
    return found


def test_top_level_and_package_manifest_are_identical():
    top = ROOT / "napari.yaml"
    packaged = ROOT / "src" / "napari_var_emitter" / "napari.yaml"
    assert top.read_bytes() == packaged.read_bytes(), (
        "napari.yaml and src/napari_var_emitter/napari.yaml differ: edit the top-level one and copy it"
    )


def test_installed_plugin_manifest_validates_with_imports():
    result = subprocess.run(
        [_npe2(), "validate", "--imports", "napari-var-emitter"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_manifest_contributions():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-var-emitter")
    contributions = manifest.contributions
    assert [s.display_name for s in contributions.sample_data] == ["Simulated SMLM movie"]
    assert sorted(w.display_name for w in contributions.widgets) == [
        "Analyze localizations",
        "Predict emitters",
        "Train model",
    ]
    assert [w.layer_types for w in contributions.writers] == [["points"]]
    assert contributions.writers[0].filename_extensions == [".csv", ".hdf5", ".h5"]
    assert contributions.readers[0].filename_patterns == ["*.csv", "*.hdf5", "*.h5"]
    assert contributions.readers[1].filename_patterns == ["*.nd2", "*.czi", "*.zarr"]
    assert all(c.id.startswith("napari-var-emitter.") for c in contributions.commands)
