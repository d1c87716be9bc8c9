"""Model configuration and presets.

A saved model carries its ``ModelConfig``; loading checks it against the code (STYLE item 2).
The scale pyramid is defined relative to the input: ``patch_nums`` are the grid sizes for a
``train_size`` input, so the seed's (10, 20, 40, 80) for 160 px mean strides 16, 8, 4, 2, and a
64 px frame gets grids 4, 8, 16, 32. ``extra_levels`` continue the chain, each 2x finer, for
super-resolution (``autoregressive_inference``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from ..errors import CheckpointError

ACTIVATIONS = ("gelu", "relu")
# Sizes a config may ask for (checked on construction, before any weight is allocated).
CONFIG_LIMITS = {
    "train_size": (1, 4096),
    "extra_levels": (0, 4),
    "attn_levels": (0, 16),
    "embed_dim": (1, 4096),
    "conv_dim": (1, 4096),
    "num_heads": (1, 128),
    "num_layers": (0, 128),
    "conv_blocks": (1, 64),
    "encoder_channels": (1, 4096),
    "encoder_blocks": (0, 64),
    "vocab_size": (2, 65536),
    "token_dim": (1, 4096),
    "num_phi": (1, 64),
    "frame_window": (1, 31),
}
MAX_PATCH_NUMS = 12
MAX_PHOTON_SCALE = 1e9


@dataclass(frozen=True)
class ModelConfig:
    # 1. the scale pyramid
    patch_nums: tuple[int, ...] = (8, 16, 32, 64)
    train_size: int = 64
    extra_levels: int = 1
    attn_levels: int = 2  # the first levels use global block-causal attention, the rest local conv blocks
    # 2. widths and depths
    embed_dim: int = 48  # token width of the attention levels
    conv_dim: int = 32  # channel width of the conv levels
    num_heads: int = 4
    num_layers: int = 2  # AdaLNSelfAttn blocks over the attention levels
    conv_blocks: int = 2  # AdaLN conv blocks per conv level (weights shared across conv levels)
    encoder_channels: int = 32
    encoder_blocks: int = 2
    # 3. the token chain (VAR's quantizer and Phi convs)
    vocab_size: int = 16
    token_dim: int = 16
    num_phi: int = 4
    chain: bool = True  # False: ablation without the next-scale chain (only image features per level)
    # 4. input
    frame_window: int = 1  # consecutive frames seen at once (odd); the middle one is predicted
    photon_scale: float = 100.0
    # 5. the nonlinearity of the full-resolution convolutions (encoder, conv levels)
    activation: str = "gelu"  # "gelu" (exact) or "relu" (much cheaper on a CPU)

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_nums", tuple(int(p) for p in self.patch_nums))
        for name, (low, high) in CONFIG_LIMITS.items():
            if not low <= getattr(self, name) <= high:
                raise CheckpointError(f"{name} = {getattr(self, name)} is out of range [{low}, {high}]")
        if not math.isfinite(self.photon_scale) or not 0 < self.photon_scale <= MAX_PHOTON_SCALE:
            raise CheckpointError(
                f"photon_scale = {self.photon_scale} is out of range (0, {MAX_PHOTON_SCALE:g}]"
            )
        pn = self.patch_nums
        if len(pn) > MAX_PATCH_NUMS:
            raise CheckpointError(f"at most {MAX_PATCH_NUMS} patch_nums, got {len(pn)}")
        if len(pn) < 1 or any(p <= 0 for p in pn) or self.train_size <= 0:
            raise CheckpointError(f"patch_nums must be positive, got {pn}")
        for p in pn:
            stride = self.train_size / p
            if stride < 1 or abs(math.log2(stride) - round(math.log2(stride))) > 1e-9:
                raise CheckpointError(
                    f"train_size / patch_num must be a power of two >= 1, got {self.train_size}/{p}"
                )
        if list(pn) != sorted(set(pn)):
            raise CheckpointError(f"patch_nums must increase strictly, got {pn}")
        if not 0 <= self.attn_levels <= len(pn):
            raise CheckpointError(f"attn_levels must be in [0, {len(pn)}], got {self.attn_levels}")
        if self.embed_dim % self.num_heads:
            raise CheckpointError(
                f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}"
            )
        if self.activation not in ACTIVATIONS:
            raise CheckpointError(
                f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}"
            )
        if self.frame_window < 1 or self.frame_window % 2 == 0:
            raise CheckpointError(f"frame_window must be odd and >= 1, got {self.frame_window}")
        for name in (
            "embed_dim",
            "conv_dim",
            "num_heads",
            "conv_blocks",
            "encoder_channels",
            "vocab_size",
            "token_dim",
            "num_phi",
        ):
            if getattr(self, name) < 1:
                raise CheckpointError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.extra_levels < 0 or self.num_layers < 0 or self.encoder_blocks < 0 or self.photon_scale <= 0:
            raise CheckpointError(
                "extra_levels, num_layers, encoder_blocks must be >= 0 and photon_scale > 0"
            )

    @property
    def strides(self) -> tuple[float, ...]:
        """Input pixels per cell for every level, progressive then super-resolution."""
        base = [self.train_size / p for p in self.patch_nums]
        return tuple(base + [base[-1] / 2 ** (k + 1) for k in range(self.extra_levels)])

    @property
    def num_levels(self) -> int:
        return len(self.patch_nums) + self.extra_levels

    @property
    def pad_multiple(self) -> int:
        """Inputs are padded to a multiple of the coarsest stride."""
        return int(self.strides[0])

    def to_dict(self) -> dict:
        d = asdict(self)
        d["patch_nums"] = list(self.patch_nums)
        return d

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        if not isinstance(values, dict):
            raise CheckpointError("model config must be a mapping")
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise CheckpointError(f"unknown model config key(s): {', '.join(sorted(unknown))}")
        for key, value in values.items():
            if key == "patch_nums":
                if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) for v in value):
                    raise CheckpointError("model config patch_nums must be a list of integers")
            elif key in ("chain",):
                if not isinstance(value, bool):
                    raise CheckpointError(f"model config {key} must be true or false")
            elif key == "activation":
                continue  # a name, checked with the sizes by __post_init__
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                raise CheckpointError(f"model config {key} must be a number, got {value!r}")
            elif key != "photon_scale" and not float(value).is_integer():
                raise CheckpointError(f"model config {key} must be an integer, got {value!r}")
        ints = {
            k: (int(v) if k not in ("photon_scale", "chain", "patch_nums", "activation") else v)
            for k, v in values.items()
        }
        return cls(**ints)  # __post_init__ checks every size against CONFIG_LIMITS


PRESETS: dict[str, ModelConfig] = {
    # Small, fast, accurate: chosen by measurement on a 2-core CPU (see training/README.md).
    "default": ModelConfig(),
    # Half the full-resolution width and ReLU: for CPUs (tried: training/NOT-ADOPTED.md).
    "fast": ModelConfig(encoder_channels=16, conv_dim=24, token_dim=8, activation="relu"),
    # The seed's sizes: 10/20/40/80 for a 160 px input, width 768, 12 heads, 24 layers, 8192 codes.
    "seed": ModelConfig(
        patch_nums=(10, 20, 40, 80),
        train_size=160,
        extra_levels=2,
        attn_levels=2,
        embed_dim=768,
        conv_dim=96,
        num_heads=12,
        num_layers=24,
        conv_blocks=4,
        encoder_channels=64,
        encoder_blocks=4,
        vocab_size=8192,
        token_dim=32,
    ),
}


def preset(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise CheckpointError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    values = PRESETS[name].to_dict()
    values.update(overrides)
    return ModelConfig.from_dict(values)
