"""The seed's scripts under training/: their configs parse, and inference runs end to end."""

import json
import sys
from pathlib import Path

import pytest
import torch

TRAINING = Path(__file__).parents[1] / "training"
WEIGHTS = Path(__file__).parents[1] / "src" / "napari_var_emitter" / "weights"
sys.path.insert(0, str(TRAINING))

from inference_true_var import main as inference_main  # noqa: E402
from napari_var_emitter.errors import VarEmitterError  # noqa: E402
from napari_var_emitter.model import preset  # noqa: E402
from train_true_var import config_from_json  # noqa: E402


def test_seed_config_keeps_the_seed_sizes():
    cfg = config_from_json(json.loads((TRAINING / "config_true_var.json").read_text()))
    model = preset(cfg.preset, **cfg.model)
    assert (model.patch_nums, model.train_size, cfg.frame_size) == ((10, 20, 40, 80), 160, 160)
    assert (model.embed_dim, model.num_heads, model.num_layers, model.vocab_size) == (768, 12, 24, 8192)
    assert (cfg.batch_size, cfg.lr, cfg.scale_weights) == (8, 1e-4, (0.5, 0.7, 0.9, 1.0))


def test_default_config_is_the_default_preset():
    cfg = config_from_json(json.loads((TRAINING / "config_default.json").read_text()))
    assert cfg.preset == "default" and cfg.model == {} and cfg.steps == 3000 and cfg.camera.em_gain == 300


@pytest.mark.parametrize(
    "weights, recipe",
    [
        (
            "default.pt",
            [
                "config_default_lean.json",
                "config_default_lean_stage2.json",
                "config_default_lean_stage3.json",
                "config_default_lean_stage4.json",
                "config_default_lean_stage5_blobs.json",
            ],
        ),
        (
            "window3.pt",
            [
                "config_window3_lean_stage1.json",
                "config_window3_lean_stage2.json",
                "config_window3_lean_stage3.json",
                "config_window3_lean_stage4.json",
                "config_window3_lean_stage5.json",
                "config_window3_lean_stage6.json",
                "config_window3_lean_stage7.json",
            ],
        ),
    ],
)
def test_bundled_weights_are_their_documented_recipe(weights, recipe):
    """training/README.md gives the stages of each bundled model: all build the bundled network,
    and the weights' own record (meta) is the last stage's run."""
    checkpoint = torch.load(WEIGHTS / weights, weights_only=True, map_location="cpu")
    stages = [config_from_json(json.loads((TRAINING / name).read_text())) for name in recipe]
    for cfg in stages:
        assert preset(cfg.preset, **cfg.model).to_dict() == checkpoint["model_config"]
    recorded, last = checkpoint["meta"]["train_config"], stages[-1]
    assert (recorded["steps"], recorded["batch_size"], recorded["seed"], recorded["lr"]) == (
        last.steps,
        last.batch_size,
        last.seed,
        last.lr,
    )
    assert recorded.get("wide_fraction", 0.0) == last.wide_fraction  # older records: none
    recorded_laws = [tuple(law) for law in recorded.get("photon_distributions", ())]
    assert recorded_laws == [tuple(law) for law in last.photon_distributions]
    for key in ("pupil_fraction", "background_blobs", "background_blob_amplitude"):  # older records: none
        assert recorded.get(key, getattr(last, key)) == getattr(last, key)
    assert tuple(recorded.get("camera_types", ())) == last.camera_types
    assert recorded["init_from"] is not None  # a later stage starts from the one before


def test_config_mistakes_are_refused():
    with pytest.raises(VarEmitterError, match="unknown training key"):
        config_from_json({"training": {"learnig_rate": 1e-3}})
    with pytest.raises(VarEmitterError, match="target_resolutions"):
        config_from_json(
            {"model": {"patch_nums": [10, 20]}, "training": {"target_resolutions": {"a": [5, 5]}}}
        )


def test_inference_script_both_modes(tmp_path, capsys):
    assert (
        inference_main(["--mode", "both", "--frames", "3", "--device", "cpu", "--out-dir", str(tmp_path)])
        == 0
    )
    out = capsys.readouterr().out
    assert "progressive:" in out and "super_resolution:" in out and "vs truth" in out
    assert (tmp_path / "locs_progressive.csv").exists() and (tmp_path / "locs_super_resolution.csv").exists()
    assert len(list(tmp_path.glob("prob_super_resolution_level*.tif"))) == 5


def test_inference_script_rejects_a_bad_target(tmp_path, capsys):
    code = inference_main(
        [
            "--mode",
            "super_resolution",
            "--target_res",
            "100",
            "--frames",
            "2",
            "--device",
            "cpu",
            "--out-dir",
            str(tmp_path),
        ]
    )
    assert code == 2 and "target_res" in capsys.readouterr().err
