"""How close the camera measured from the frames comes to the true one, on simulated movies.

python training/bench_calibration.py [--frames 100] [--size 128] [--bootstrap 20]

Each row is one seeded movie (emitters blinking on filaments, exponential photons with a mean of
3,000, density 0.5 /um^2 unless said) of a camera and PSF the calibration is not told: EMCCD cameras
with a pupil PSF (NA 1.4, 680 nm) or a Gaussian one, at backgrounds from 20 to 256 photons per pixel,
and an sCMOS camera (its type given, as `calibrate --camera-type scmos` would). Printed: the offset
error (ADU) with the calibration's own standard error, the gain error (ADU per photoelectron, %), the
PSF width against the Gaussian equivalent (%), the camera type found, and seconds per movie.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from napari_var_emitter.calibration import calibrate
from napari_var_emitter.camera import Camera
from napari_var_emitter.simulation import SimulationConfig, simulate_movie
from napari_var_emitter.simulation.psf import gaussian_equivalent_sigma_nm

PUPIL = dict(psf_model="pupil", na=(1.4, 1.4), wavelength_nm=(680.0, 680.0))
EXPONENTIAL = dict(photons=(100.0, 3000.0), photon_distribution="exponential")
CASES = [
    # (label, camera, background photons, extra SimulationConfig settings, camera type given, seed)
    ("EMCCD gain 100, pupil", Camera(em_gain=100.0, e_per_adu=15.0), (50.0, 100.0), PUPIL, None, 41),
    (
        "EMCCD gain 200, pupil, dim background",
        Camera(baseline=400.0, em_gain=200.0, e_per_adu=20.0),
        (20.0, 40.0),
        PUPIL,
        None,
        49,
    ),
    (
        "EMCCD gain 50, pupil",
        Camera(baseline=150.0, em_gain=50.0, e_per_adu=8.0),
        (100.0, 200.0),
        PUPIL,
        None,
        43,
    ),
    (
        "EMCCD gain 50, pupil, bright background",
        Camera(baseline=150.0, em_gain=50.0, e_per_adu=8.0),
        (256.0, 256.0),
        PUPIL,
        None,
        47,
    ),
    (
        "EMCCD (SMLM 2016), pupil, 1 /um^2",
        Camera(),
        (50.0, 100.0),
        dict(PUPIL, density_per_um2=1.0),
        None,
        48,
    ),
    (
        "EMCCD (SMLM 2016), Gaussian 120 nm",
        Camera(),
        (50.0, 100.0),
        dict(psf_sigma_nm=(120.0, 120.0)),
        None,
        50,
    ),
    (
        "sCMOS, Gaussian 120 nm",
        Camera(baseline=100.0, e_per_adu=0.5, em_gain=1.0, read_noise_e=1.5),
        (50.0, 100.0),
        dict(psf_sigma_nm=(120.0, 120.0)),
        "scmos",
        51,
    ),
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument(
        "--bootstrap", type=int, default=20, help="bootstrap resamples for the standard errors"
    )
    args = parser.parse_args(argv)
    columns = ("movie", "background [photons]", "offset error [ADU] (its s.e.)", "gain error")
    columns += ("PSF vs Gaussian equivalent", "type", "s")
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|---|")
    for label, camera, background, extra, kind, seed in CASES:
        settings = dict(density_per_um2=0.5, structure="filaments", **EXPONENTIAL)
        settings.update(extra)
        config = SimulationConfig(
            frame_size=(args.size, args.size), background_photons=background, camera=camera, **settings
        )
        frames = simulate_movie(config, args.frames, seed=seed).frames.numpy().astype(np.uint16)
        start = time.perf_counter()
        measured = calibrate(frames, camera_type=kind, n_bootstrap=args.bootstrap)
        seconds = time.perf_counter() - start
        if config.psf_model == "pupil":
            psf_true = gaussian_equivalent_sigma_nm(config.na[0], config.wavelength_nm[0])
        else:
            psf_true = config.psf_sigma_nm[0]
        gain = camera.em_gain / camera.e_per_adu
        error = measured.uncertainty.get("baseline", float("nan"))
        print(
            f"| {label} | {background[0]:g}-{background[1]:g} | {measured.baseline - camera.baseline:+.1f} "
            f"({error:.1f}) | {100 * (measured.adu_per_electron / gain - 1):+.1f} % | "
            f"{100 * (measured.psf_sigma_nm / psf_true - 1):+.1f} % | {measured.camera_type} "
            f"({measured.camera_type_source}) | {seconds:.1f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
