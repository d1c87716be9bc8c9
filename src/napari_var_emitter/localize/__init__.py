"""Frames -> localizations: the prediction pipeline and its stages (detection, tiling, refinement,
pooling, model choice), the classical baseline and the Dask path."""
