"""Choosing the bundled model from the frames: 3 frames for movies, 1 frame otherwise."""

import math

import numpy as np

from napari_var_emitter.localize import load_model, resolve_model
from napari_var_emitter.localize.autoselect import FRAME_MODEL, MOVIE_MODEL, choose, persistence
from napari_var_emitter.simulation import SimulationConfig, simulate_movie


def test_persistence_counts_emitters_found_again_in_the_next_frame():
    # frame 0: emitters at x = 10, 20, 30; frame 1: the first two again (0.5 px away) and a new one
    frame = np.array([0, 0, 0, 1, 1, 1])
    x = np.array([10.0, 20.0, 30.0, 10.5, 20.0, 50.0])
    y = np.full(6, 5.0)
    share, chance, counted = persistence(frame, x, y, n_frames=2, area_px=100.0 * 100.0)
    assert counted == 3 and share == 2 / 3
    assert chance == 1 - math.exp(-3 / 1e4 * math.pi)  # 3 emitters in frame 1 on 100 x 100 px


def test_a_movie_gets_the_3_frame_model_and_the_same_frames_shuffled_do_not():
    config = SimulationConfig(frame_size=(64, 64), density_per_um2=0.5, photons=(1500.0, 5000.0))
    frames = simulate_movie(config, 24, seed=11).frames.numpy()
    frame_model = load_model(None)
    movie = choose(frames, frame_model, config.camera)
    assert movie.name == MOVIE_MODEL and movie.persistence > 0.5 > movie.chance
    shuffled = choose(frames[np.random.default_rng(1).permutation(24)], frame_model, config.camera)
    assert shuffled.name == FRAME_MODEL and "not a movie" in shuffled.reason
    resolved = resolve_model("auto", frames, config.camera)
    assert resolved.choice.name == MOVIE_MODEL and resolved.model.config.frame_window == 3
    assert resolved.spec == "bundled:window-3"


def test_too_few_frames_or_emitters_keep_the_1_frame_model():
    config = SimulationConfig(frame_size=(32, 32))
    frames = simulate_movie(config, 2, seed=3).frames.numpy()
    frame_model = load_model(None)
    assert choose(frames, frame_model, config.camera).reason == "fewer than 3 frames"
    assert choose(frames[0], frame_model, config.camera).name == FRAME_MODEL
    blank = np.full((10, 32, 32), config.camera.baseline, dtype=np.float32)  # no light at all
    choice = choose(blank, frame_model, config.camera)
    assert choice.name == FRAME_MODEL and "too few" in choice.reason
