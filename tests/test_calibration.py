"""calibrate: the camera (docs/CONVENTIONS.md section 2) and PSF width measured from the frames alone.

Simulated movies (the package's EMCCD/sCMOS noise model, blinking emitters on filaments) have a known
camera; the real AF647 frames have none, so there the checks are stability across frame subsets and
physically plausible values.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from napari_var_emitter.calibration import MAX_FRAMES, Calibration, calibrate, check_camera
from napari_var_emitter.camera import Camera
from napari_var_emitter.errors import InputError
from napari_var_emitter.simulation import SimulationConfig, simulate_movie

REAL_FRAMES = Path(__file__).parent / "data" / "real_af647_sdt" / "frames.tif"
SECTION_2 = ("pixel_size_nm", "baseline", "e_per_adu", "em_gain", "qe", "read_noise_e")
EMCCD = Camera(baseline=250.0, e_per_adu=12.0, em_gain=150.0)  # 12.5 ADU per photoelectron
SCMOS = Camera(baseline=100.0, e_per_adu=0.5, em_gain=1.0, read_noise_e=1.6)  # 2 ADU per photoelectron
PSF_NM = 130.0
BACKGROUND = 30.0  # photons per pixel


def _movie(
    camera: Camera, seed: int, size: int = 128, n_frames: int = 100, background: float = BACKGROUND, **scene
) -> np.ndarray:
    """Blinking emitters on filaments, uint16 ADU (T, Y, X)."""
    config = SimulationConfig(
        frame_size=(size, size),
        structure="filaments",
        background_photons=(background, background),
        psf_sigma_nm=(PSF_NM, PSF_NM),
        camera=camera,
        **scene,
    )
    return simulate_movie(config, n_frames, seed=seed).frames.numpy().astype(np.uint16)


def _adu_per_electron(camera: Camera) -> float:
    return camera.em_gain / camera.e_per_adu


@pytest.fixture(scope="module")
def emccd_frames() -> np.ndarray:
    return _movie(EMCCD, seed=0)


@pytest.fixture(scope="module")
def emccd_cal(emccd_frames) -> Calibration:
    return calibrate(emccd_frames, pixel_size_nm=100.0, n_bootstrap=50)


@pytest.fixture(scope="module")
def real_frames() -> np.ndarray:
    return tifffile.imread(REAL_FRAMES)


# --------------------------------------------------------------------------------------------------
# Simulated cameras


def test_emccd_with_blinking_filaments(emccd_cal):
    cal = emccd_cal
    assert cal.adu_per_electron == pytest.approx(_adu_per_electron(EMCCD), rel=0.25)
    assert abs(cal.baseline - EMCCD.baseline) < 10.0
    # the median of round, isolated spots is within 1-2 % here; spots picked by brightness alone
    # (pairs of emitters seen as one) read 5-12 % wide
    assert cal.psf_sigma_nm == pytest.approx(PSF_NM, rel=0.05)
    assert cal.background_photons == pytest.approx(BACKGROUND, rel=0.15)
    assert cal.camera_type == "emccd" and cal.excess_noise == 2.0
    # one background level cannot tell EMCCD from sCMOS: said so, not hidden
    assert cal.camera_type_source == "assumed"
    assert any("--camera-type" in note for note in cal.notes)
    # the uncertainties are finite and cover the error
    se = cal.uncertainty
    assert abs(cal.baseline - EMCCD.baseline) < 4 * se["baseline"] < 80
    assert abs(cal.adu_per_electron - _adu_per_electron(EMCCD)) < 4 * se["adu_per_electron"]
    assert 0 < se["psf_sigma_nm"] < 10
    camera = cal.camera()  # conventional split: em_gain 100, e_per_adu from the measured ratio
    assert camera.em_gain == 100.0
    assert camera.em_gain / camera.e_per_adu == pytest.approx(cal.adu_per_electron)
    assert camera.baseline == pytest.approx(cal.baseline)


def test_scmos_with_camera_type_given():
    scmos_structured_frames = _movie(SCMOS, seed=1, background_variation=0.5)
    cal = calibrate(scmos_structured_frames, camera_type="scmos", pixel_size_nm=100.0, n_bootstrap=50)
    assert cal.camera_type == "scmos" and cal.camera_type_source == "given" and cal.excess_noise == 1.0
    assert cal.adu_per_electron == pytest.approx(_adu_per_electron(SCMOS), rel=0.25)
    assert abs(cal.baseline - SCMOS.baseline) < 10.0
    assert cal.psf_sigma_nm == pytest.approx(PSF_NM, rel=0.15)
    camera = cal.camera()
    assert camera.em_gain == 1.0 and camera.e_per_adu == pytest.approx(SCMOS.e_per_adu, rel=0.25)
    # a range of background levels measures the read noise (3.2 ADU here)
    assert cal.read_noise_adu == pytest.approx(SCMOS.read_noise_e / SCMOS.e_per_adu, abs=2.0)


def test_camera_type_measured_from_a_range_of_background_levels():
    # the third moment's slope over the levels, against the variance's, gives k: 1.5 EMCCD, 1 sCMOS
    for camera, expected, seed in ((EMCCD, "emccd", 7), (SCMOS, "scmos", 8)):
        frames = _movie(camera, seed=seed, background=60.0, background_variation=0.5)
        cal = calibrate(frames, n_bootstrap=0, fit_psf=False)
        assert (cal.camera_type, cal.camera_type_source) == (expected, "measured")


def test_no_emitters_no_crash_and_psf_unknown():
    frames = _movie(EMCCD, seed=3, size=64, density_per_um2=0.0)
    cal = calibrate(frames, n_bootstrap=20)
    assert math.isnan(cal.psf_sigma_px) and cal.n_psf_spots == 0
    assert any("PSF width is unknown" in note for note in cal.notes)
    assert cal.to_dict()["psf_sigma_nm"] is None
    assert cal.adu_per_electron == pytest.approx(_adu_per_electron(EMCCD), rel=0.25)
    assert abs(cal.baseline - EMCCD.baseline) < 20.0


def test_dark_frames_give_per_pixel_offsets(tmp_path):
    rng = np.random.default_rng(4)
    pattern = np.round(rng.normal(0.0, 6.0, (64, 64)))  # sCMOS fixed-pattern offsets
    frames = _movie(SCMOS, seed=4, size=64) + pattern
    dark_config = SimulationConfig(
        frame_size=(64, 64), density_per_um2=0.0, background_photons=(0.0, 0.0), camera=SCMOS
    )
    dark = simulate_movie(dark_config, 50, seed=5).frames.numpy() + pattern
    cal = calibrate(frames, dark=dark, camera_type="scmos", n_bootstrap=20)
    assert cal.offset_map.shape == (64, 64) and cal.variance_map.shape == (64, 64)
    assert np.corrcoef(cal.offset_map.ravel(), pattern.ravel())[0, 1] > 0.9
    assert cal.baseline == pytest.approx(SCMOS.baseline + pattern.mean(), abs=1.0)
    assert cal.read_noise_adu == pytest.approx(SCMOS.read_noise_e / SCMOS.e_per_adu, rel=0.1)
    assert cal.adu_per_electron == pytest.approx(_adu_per_electron(SCMOS), rel=0.1)


def test_long_memory_mapped_movie_is_sampled(tmp_path, emccd_frames):
    path = tmp_path / "movie.npy"
    movie = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=(1000, 64, 64))
    for start in range(0, 1000, 100):
        movie[start : start + 100] = emccd_frames[:, :64, :64]
    movie.flush()
    cal = calibrate(np.load(path, mmap_mode="r"), n_bootstrap=20, fit_psf=False)
    assert cal.n_frames <= MAX_FRAMES
    assert cal.adu_per_electron == pytest.approx(_adu_per_electron(EMCCD), rel=0.25)


# --------------------------------------------------------------------------------------------------
# Dense frames: too few spot-free pixels, the noise measured from a spatial high-pass


@pytest.fixture(scope="module")
def dense_frames() -> np.ndarray:
    return _movie(EMCCD, seed=11, size=64, density_per_um2=3.0)


def test_dense_emitters_are_measured_from_the_high_pass(dense_frames):
    # from the spot-free pixels alone (86 % of the pixels are near spots) this offset read 60 ADU and the
    # gain 27 % too high
    cal = calibrate(dense_frames, n_bootstrap=20)
    assert any(note.startswith("dense frames") for note in cal.notes), cal.notes
    assert abs(cal.baseline - EMCCD.baseline) < 25.0
    assert cal.adu_per_electron == pytest.approx(_adu_per_electron(EMCCD), rel=0.1)
    assert cal.background_photons == pytest.approx(BACKGROUND, rel=0.25)
    # the third moment is not measured: the type is assumed, and said so
    assert (cal.camera_type, cal.camera_type_source) == ("emccd", "assumed")
    assert abs(cal.baseline - EMCCD.baseline) < 4 * cal.uncertainty["baseline"] < 60


def test_dense_frames_with_noise_correlated_along_rows(dense_frames):
    # charge smeared into the next pixel along each row: correlation a / (1 + a^2) = 0.19, and the
    # pixels' variance slope (1 + a^2) / (1 + a)^2 of the unsmeared one
    a = 0.2
    smeared = (dense_frames[:, :, :-1] + a * dense_frames[:, :, 1:]) / (1 + a)
    cal = calibrate(smeared, n_bootstrap=0, fit_psf=False)
    assert any(
        "correlated (0.19 along rows" in note or "correlated (0.20 along rows" in note for note in cal.notes
    )
    slope = 2 * _adu_per_electron(EMCCD) * (1 + a * a) / (1 + a) ** 2
    assert cal.variance_slope == pytest.approx(slope, rel=0.1)
    assert abs(cal.baseline - EMCCD.baseline) < 25.0


def test_noise_that_does_not_grow_with_the_light_is_refused(dense_frames):
    # blurred frames plus noise of one variance everywhere: no photon noise to measure the camera by
    rng = np.random.default_rng(12)
    flat = ndimage.gaussian_filter(dense_frames.astype(float), (0, 1.5, 1.5)) + rng.normal(
        0, 20, dense_frames.shape
    )
    with pytest.raises(InputError, match="does not grow measurably with the light.*--baseline"):
        calibrate(flat, fit_psf=False)


def test_an_offset_too_uncertain_in_dense_frames_is_refused():
    # one dense frame: the few levels the emitters make leave the offset +- 100 ADU
    one = _movie(EMCCD, seed=11, size=100, n_frames=1, density_per_um2=3.0)
    with pytest.raises(InputError, match="too dense to measure the camera offset.*--baseline.*--dark"):
        calibrate(one, fit_psf=False)


# --------------------------------------------------------------------------------------------------
# Real camera frames (no ground truth)


def test_real_frames_stable_across_subsets_and_plausible(real_frames):
    first, second = (calibrate(half, n_bootstrap=50) for half in (real_frames[:5], real_frames[5:]))
    for key in ("baseline", "variance_slope", "adu_per_electron"):
        a, b = getattr(first, key), getattr(second, key)
        error = math.hypot(first.uncertainty[key], second.uncertainty[key])
        assert abs(a - b) <= max(2 * error, 0.2 * abs(a)), key
    assert second.psf_sigma_px == pytest.approx(first.psf_sigma_px, rel=0.2)

    cal = calibrate(real_frames, n_bootstrap=0)
    # The offset lies below the background; photon transfer over background pixels that assumes no
    # read noise put it near 175 ADU with a slope near 9.3; this fit measures about 10 ADU of read
    # noise, which moves the offset up (about 205 ADU, slope about 17): the bands hold both readings.
    assert real_frames.min() < cal.baseline < np.median(real_frames) - 10
    assert 150 <= cal.baseline <= 215
    assert 5 <= cal.variance_slope <= 30
    assert 0.7 <= cal.psf_sigma_px <= 2.0 and cal.n_psf_spots >= 10
    assert cal.camera_type in ("emccd", "scmos") and cal.camera_type_source in ("measured", "assumed")


def test_single_real_frame(real_frames):
    one = calibrate(real_frames[0], n_bootstrap=30)
    assert one.n_frames == 1
    assert 150 <= one.baseline <= 215 and 5 <= one.variance_slope <= 30


# --------------------------------------------------------------------------------------------------
# check_camera


def test_check_camera_accepts_the_right_camera(emccd_frames, emccd_cal):
    assert check_camera(emccd_frames, EMCCD) == []
    assert check_camera(emccd_cal, EMCCD) == []
    assert check_camera(emccd_cal, emccd_cal.camera()) == []


@pytest.mark.parametrize("factor", [10.0, 0.1])
def test_check_camera_flags_a_wrong_gain(emccd_frames, factor):
    wrong = Camera(baseline=250.0, e_per_adu=12.0 * factor, em_gain=150.0)
    warnings = check_camera(emccd_frames, wrong)
    assert len(warnings) == 1
    assert "variance slope" in warnings[0] and "--camera auto" in warnings[0]
    assert "--e-per-adu 1" in warnings[0]  # about 12, the right value for em_gain 150


def test_check_camera_flags_a_wrong_baseline(emccd_frames, emccd_cal):
    low_percentile = float(np.percentile(emccd_frames, 1))
    above = check_camera(emccd_cal, Camera(baseline=low_percentile + 20, e_per_adu=12.0, em_gain=150.0))
    assert any("1st percentile" in w and "--baseline 2" in w for w in above)
    below = check_camera(emccd_frames, Camera(baseline=100.0, e_per_adu=12.0, em_gain=150.0))
    assert len(below) == 1 and "far below" in below[0] and "--camera auto" in below[0]


def test_check_camera_on_real_frames(real_frames):
    assert any("1st percentile" in w for w in check_camera(real_frames, Camera(baseline=400.0)))


# --------------------------------------------------------------------------------------------------
# Output and bad input


def test_to_dict_is_json_and_holds_a_camera(emccd_cal):
    values = json.loads(json.dumps(emccd_cal.to_dict(), allow_nan=False))
    for key in ("baseline", "adu_per_electron", "excess_noise", "read_noise_e", "psf_sigma_nm"):
        assert isinstance(values[key], float), key
    assert values["background_photons"] == pytest.approx(emccd_cal.background_photons)
    assert values["camera_type"] == "emccd" and values["camera_type_source"] == "assumed"
    assert set(values["uncertainty"]) >= {"baseline", "adu_per_electron", "psf_sigma_nm"}
    assert Camera.from_dict({k: values[k] for k in SECTION_2}) == emccd_cal.camera()


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (np.full((10, 64, 64), 300, np.uint16), "constant"),
        (np.full((10, 64, 64), np.nan), "no finite values"),
        (np.zeros((10, 8, 8), np.uint16), "at least 16 x 16"),
        (np.arange(2 * 32 * 32).reshape(2, 32, 32), "at least 10000 finite, unsaturated pixels"),
        (np.zeros((2, 2, 64, 64)), "expected a frame"),
        (np.array([["a"] * 32] * 32), "real numbers"),
    ],
)
def test_bad_frames_raise_one_clear_error(frames, message):
    with pytest.raises(InputError, match=message):
        calibrate(frames)


def test_a_camera_cannot_be_checked_on_frames_that_cannot_be_measured():
    with pytest.raises(InputError, match="constant"):
        check_camera(np.full((10, 64, 64), 300, np.uint16), Camera())


def test_symmetric_noise_cannot_place_the_offset():
    frames = np.round(np.random.default_rng(6).normal(500.0, 10.0, (20, 64, 64)))
    with pytest.raises(InputError, match="not skewed"):
        calibrate(frames)


def test_bad_arguments_raise(emccd_frames):
    with pytest.raises(InputError, match="camera_type"):
        calibrate(emccd_frames, camera_type="cmos")
    with pytest.raises(InputError, match="qe"):
        calibrate(emccd_frames, qe=1.5)
    with pytest.raises(InputError, match="do not match"):
        calibrate(emccd_frames, dark=np.zeros((5, 32, 32)))
