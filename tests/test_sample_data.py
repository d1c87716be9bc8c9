"""Sample data "Simulated SMLM movie" opened in a real viewer."""

import numpy as np

from napari_var_emitter.camera import Camera


def test_sample_opens_in_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-var-emitter", "simulated_smlm_movie")
    assert len(viewer.layers) == 2
    movie, truth = viewer.layers
    assert movie.name == "Simulated SMLM movie"
    assert type(movie).__name__ == "Image"
    assert movie.data.ndim == 3 and movie.data.shape[1:] == (64, 64)
    assert 20 <= movie.data.shape[0] <= 40
    assert Camera.from_dict(movie.metadata["camera"]) == Camera()
    assert movie.metadata["pixel_size_nm"] == 100.0
    # ADU of the SMLM 2016 camera: around the baseline, with emitters above it
    data = np.asarray(movie.data)
    assert np.median(data) > 100 and data.max() > np.median(data) + 50

    assert type(truth).__name__ == "Points"
    assert truth.data.shape[1] == 3 and len(truth.data) > 50
    t, y, x = truth.data.T
    assert np.all(t == np.round(t)) and t.min() >= 0 and t.max() < movie.data.shape[0]
    assert y.min() >= -0.5 and y.max() <= 63.5 and x.min() >= -0.5 and x.max() <= 63.5
    photons = truth.features["photons"].to_numpy()
    assert np.all(photons > 0)


def test_sample_is_seeded():
    from napari_var_emitter.plugin.sample_data import make_sample_movie

    first, second = make_sample_movie(), make_sample_movie()
    np.testing.assert_array_equal(first[0][0], second[0][0])
    np.testing.assert_array_equal(first[1][0], second[1][0])
