"""An Airy PSF's ring is not an emitter: prediction on a pupil-PSF movie, with and without the
side-lobe test of the confirmation step (localize/refine.py, ``side_lobes``)."""

import pytest

from napari_var_emitter.analysis.metrics import evaluate
from napari_var_emitter.localize import PredictOptions, load_model, predict
from napari_var_emitter.localize import refine as refine_module
from napari_var_emitter.simulation import SimulationConfig, simulate_movie

CONFIG = SimulationConfig(  # bright, in-focus Airy spots (NA 1.4, 680 nm), sparse: rings in the open
    frame_size=(64, 64),
    density_per_um2=0.3,
    photons=(4000.0, 10000.0),
    psf_model="pupil",
    na=(1.4, 1.4),
    wavelength_nm=(680.0, 680.0),
    background_photons=(50.0, 60.0),
)


@pytest.fixture(scope="module")
def scored():
    movie = simulate_movie(CONFIG, 24, seed=31)
    model = load_model()
    options = PredictOptions(camera=CONFIG.camera)

    def run():
        locs = predict(movie.frames.numpy(), model, options=options).localizations
        return evaluate(locs, movie.truth, CONFIG.camera.pixel_size_nm)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(refine_module, "LOBE_RATIO", 0.0)  # nothing is a side lobe
        without = run()
    return without, run()


def test_side_lobes_are_dropped_and_emitters_kept(scored):
    without, with_test = scored
    assert without.fp >= 5  # the ring of a bright spot is found without the test
    assert with_test.fp <= 0.5 * without.fp  # seed 31: 35 -> 3
    assert with_test.tp >= 0.99 * without.tp  # seed 31: 249 -> 247 of 254 emitters
