"""Frames -> localizations: the prediction pipeline and its stages (detection, tiling, refinement,
pooling, model choice), the classical baseline and the Dask path.

The public API::

    from napari_var_emitter.localize import PredictOptions, load_model, predict, resolve_model
"""

from .models import ResolvedModel, load_model, resolve_model
from .options import PredictOptions
from .pipeline import PredictionResult, PredictProgress, ProbabilityMap, iter_predict, predict

__all__ = [
    "PredictOptions",
    "PredictionResult",
    "PredictProgress",
    "ProbabilityMap",
    "ResolvedModel",
    "iter_predict",
    "load_model",
    "predict",
    "resolve_model",
]
