"""The SMLM movie simulator (torch): blinking emitters, PSF, background and camera noise.

from napari_var_emitter.simulation import SimulationConfig, simulate_movie, write_movie
"""

from .config import Movie, SimBatch, SimulationConfig
from .optics import apply_camera, render_expected
from .psf import gaussian_equivalent_sigma_nm
from .simulate import simulate_batch, simulate_movie, write_movie

__all__ = [
    "Movie",
    "SimBatch",
    "SimulationConfig",
    "apply_camera",
    "gaussian_equivalent_sigma_nm",
    "render_expected",
    "simulate_batch",
    "simulate_movie",
    "write_movie",
]
