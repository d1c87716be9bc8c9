"""A tiny model configuration for fast tests, a randomised network of it, and an untrained model."""

import torch

from napari_var_emitter.model import ModelConfig, TrueVAREmitterPredictor
from napari_var_emitter.model.checkpoint import EmitterModel

TINY = dict(
    embed_dim=16, conv_dim=8, num_heads=2, num_layers=1, encoder_channels=8, token_dim=4, vocab_size=8
)


def random_tiny_net(num_layers: int = 2, **overrides) -> TrueVAREmitterPredictor:
    """A tiny network whose zero-initialised heads and gates are randomised, so that every path
    carries signal (seeded: the same network every call)."""
    torch.manual_seed(0)
    model = TrueVAREmitterPredictor(ModelConfig(**{**TINY, "num_layers": num_layers, **overrides})).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def tiny_model() -> EmitterModel:
    """An untrained tiny model with threshold 0.3 (seeded: the same weights every call)."""
    torch.manual_seed(0)
    return EmitterModel(net=TrueVAREmitterPredictor(ModelConfig(**TINY)), threshold=0.3)


# Training settings of the tiny network on 32 x 32 frames: a run trains in seconds on the CPU.
TINY_TRAIN = dict(
    model=TINY,
    frame_size=32,
    val_frames=2,
    batch_size=2,
    steps=4,
    val_every=2,
    warmup_steps=1,
    device="cpu",
)


def tiny_train_config(tmp_path, **overrides):
    """A TrainConfig of TINY_TRAIN writing ``tmp_path / "m.pt"``; ``overrides`` replace any setting."""
    from napari_var_emitter.train import TrainConfig

    return TrainConfig(**{**TINY_TRAIN, "out": str(tmp_path / "m.pt"), **overrides})
