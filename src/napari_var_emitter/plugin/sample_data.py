"""napari sample data "Simulated SMLM movie": a small seeded simulation with its ground truth."""

from __future__ import annotations

import numpy as np

from ..camera import Camera
from .layers import locs_to_points, points_kwargs

SAMPLE_NAME = "Simulated SMLM movie"
SAMPLE_FRAME_SIZE = 64  # pixels per side
SAMPLE_FRAMES = 30
SAMPLE_SEED = 2016


def simulated_movie(
    n_frames: int = SAMPLE_FRAMES, frame_size: int = SAMPLE_FRAME_SIZE, seed: int = SAMPLE_SEED
):
    """The sample's ``Movie`` (frames ``(T, H, W)`` ADU, truth ``Localizations``) and its camera."""
    from ..simulation import SimulationConfig, simulate_movie

    camera = Camera()  # SMLM challenge 2016 camera, 100 nm pixels
    config = SimulationConfig(frame_size=(frame_size, frame_size), structure="filaments", camera=camera)
    return simulate_movie(config, n_frames=n_frames, seed=seed), camera


def make_sample_movie():
    """Layer data: the movie as an Image layer (T, Y, X) in ADU, the truth as Points (t, y, x)."""
    movie, camera = simulated_movie()
    frames = movie.frames
    if hasattr(frames, "detach"):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames, dtype=np.float32)
    low, high = np.percentile(frames, [1.0, 99.9])  # the spots visible, not only the brightest
    image_kwargs = {
        "name": SAMPLE_NAME,
        "colormap": "gray",
        "contrast_limits": (float(low), float(high)),
        "metadata": {"camera": camera.to_dict(), "pixel_size_nm": camera.pixel_size_nm},
    }
    data, features = locs_to_points(movie.truth, ndim=3, pixel_size_nm=camera.pixel_size_nm)
    truth_kwargs = points_kwargs(  # crosses: the predicted emitters are rings
        f"{SAMPLE_NAME} ground truth",
        features,
        size=2.0,
        face_color="cyan",
        border_width=0,
        symbol="cross",
        opacity=0.8,
        metadata={"pixel_size_nm": camera.pixel_size_nm},
    )
    return [(frames, image_kwargs, "image"), (data, truth_kwargs, "points")]
