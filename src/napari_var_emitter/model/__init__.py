"""The VAR emitter model: configuration, network, loss."""

from .config import PRESETS, ModelConfig, preset
from .var import AdaLNSelfAttn, EmitterVectorQuantizer, TrueVAREmitterPredictor

__all__ = [
    "ModelConfig",
    "PRESETS",
    "preset",
    "TrueVAREmitterPredictor",
    "EmitterVectorQuantizer",
    "AdaLNSelfAttn",
]
