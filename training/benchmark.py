"""Fixed, seeded benchmark modelled on the SMLM 2016 challenge; prints one markdown table.

python training/benchmark.py [--frames 100] [--methods classical,picasso,var] [--sets LD-high,...]
                             [--data tests/data] [--csv OUT.csv] [--device auto]
                             [--var-model auto|bundled|M] [--precision auto|fp32|bf16] [--compile]
                             [--batch-size N]

Sets (all 64 x 64 px of 100 nm, uniform emitters, background 50-100 photons per pixel, blinking as
in simulate.py). The training family's: the default EMCCD camera of docs/CONVENTIONS.md, section 2,
Gaussian PSF of sigma 120 nm (FWHM 283 nm), photons uniform over their range:

| set     | density [/um^2] | photons   | seed   |
| LD-high | 0.3             | 1000-8000 | 10_001 |
| LD-low  | 0.3             | 300-1500  | 10_002 |
| HD-high | 2.0             | 1000-8000 | 10_003 |
| HD-low  | 2.0             | 300-1500  | 10_004 |

Other families than the Gaussian one. Recipes with wider batches (``wide_fraction``: the
config_*_wide*.json ones, and the 3-frame model's stages from the third on, training/README.md) draw
from ranges that hold some of these settings, on seeds below 10_000, never these movies:

| set      | density [/um^2] | photons               | PSF                          | camera      | seed   |
| pupil-LD | 0.3             | 100 + Exp, mean 3000  | pupil, NA 1.4, 680 nm, focus | EMCCD x 100 | 10_005 |
| pupil-HD | 2.0             | 100 + Exp, mean 3000  | pupil, NA 1.4, 680 nm, focus | EMCCD x 100 | 10_006 |
| scmos    | 1.0             | 300-3000              | Gaussian, sigma 120 nm       | sCMOS       | 10_007 |
| blobs    | 1.0             | 300-3000              | Gaussian, sigma 120 nm       | EMCCD x 300 | 10_008 |

The pupil PSF is simulation/psf.py's (pixel-integrated); the methods that take a PSF width
(``classical``) are told its Gaussian-equivalent sigma (100 nm); the VAR model's refinement uses
the model's own width, as on every set. The EMCCD at gain 100 keeps the default camera's ADU per
electron (15 e-/ADU, QE 0.9, read noise 74.4 e-). The sCMOS: em_gain 1, 0.5 e-/ADU, QE 0.9,
baseline 100, read noise 1.5 e- with a per-pixel log-normal spread of 0.3 (docs/CONVENTIONS.md,
section 2: the methods are given 1.5 e-). ``blobs`` adds static out-of-focus light to the default
camera's frames: Gaussian blobs of sigma 300-1,000 nm, 0.3 per um^2, each of peak uniform up to 2 x
the background (simulation/scene.py).

Seeds from 10_000 up are reserved for benchmarks: training and tuning must use seeds below 10_000;
``--validation`` runs the same synthetic sets on seeds 5_011-5_018 for choosing between models.
``deepstorm_demo1`` is external validation data (ThunderSTORM simulator, 20 frames, ~6 emitters/um^2;
its camera is not published: we read it as 1 ADU per photon, baseline 100, no EM gain). It is never
used to tune anything.

Methods: ``classical`` (napari_var_emitter.localize.classical), ``picasso`` (picassosr: its own net-gradient
identification + Gaussian MLE fit, ``localize_frames(..., fitting_method="gaussmle")``, skipped if it
does not import), ``var`` (``--var-model``, default ``auto``: the bundled model the command line
would choose for the set, see autoselect.py; chosen before the clock starts, like loading; via
predict.py, progressive mode, with the maximum-likelihood refinement of refine.py and its
confirmation of dim candidates),
``var-noconfirm`` (the same without the fit's confirmation: the threshold alone decides),
``var-noref`` (the network's own positions, no refinement), ``var-sr`` (super-resolution mode) and
``var-auto`` (the camera and the PSF width measured from the frames, as ``predict --camera auto``)
and ``var-beads`` (pupil-PSF sets: the fit models the PSF measured from simulated beads, as
``predict --psf``); skipped with a note if the model is unavailable.
``calib.`` is the RMS of (error / predicted uncertainty) over matched pairs and axes (1 = calibrated);
``grid max/min`` the max/min count ratio of sub-pixel positions over 10 bins (1 = no pixel-grid bias).
Metrics: metrics.evaluate, Hungarian matching within 250 nm; RMSE/CRLB (n: matched pairs behind it)
on emitters of over 1,000 photons that are isolated (no other emitter within 1 um, counting those
centred just outside the frame) and whose PSF lies in the frame (3 sigma from its edges).
frames/s: wall time of the localization call including conversion to a Localizations table, after
an untimed warm-up on the same frames (numba JIT, torch first calls, compilation, and the one-time
set-up of each batch shape, the short last batch's too).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_var_emitter.analysis.metrics import evaluate, subpixel_flatness
from napari_var_emitter.camera import Camera
from napari_var_emitter.errors import VarEmitterError
from napari_var_emitter.io.frames import read_frames
from napari_var_emitter.io.localizations import Localizations, read_csv, to_csv
from napari_var_emitter.localize.batching import DEFAULT_BATCH_SIZE
from napari_var_emitter.simulation import SimulationConfig, gaussian_equivalent_sigma_nm, simulate_movie

REPO = Path(__file__).resolve().parents[1]
PSF_SIGMA_NM = 120.0
BACKGROUND = (50.0, 100.0)
BENCHMARK_SEED_BASE = 10_000  # seeds >= this are benchmark-only

SYNTHETIC_SETS = {
    # name: (density per um^2, photons range, seed)
    "LD-high": (0.3, (1000.0, 8000.0), 10_001),
    "LD-low": (0.3, (300.0, 1500.0), 10_002),
    "HD-high": (2.0, (1000.0, 8000.0), 10_003),
    "HD-low": (2.0, (300.0, 1500.0), 10_004),
}
PUPIL = dict(psf_model="pupil", na=(1.4, 1.4), wavelength_nm=(680.0, 680.0))
EXPONENTIAL = dict(photons=(100.0, 3000.0), photon_distribution="exponential")  # floor 100, mean 3000
PUPIL_CAMERA = Camera(em_gain=100.0, e_per_adu=15.0)  # the default camera's ADU per electron at gain 100
# scmos and blobs: 1 emitter per um^2, 300-3,000 photons, the Gaussian PSF; each changes one thing
MEDIUM = dict(density_per_um2=1.0, photons=(300.0, 3000.0), psf_sigma_nm=(PSF_SIGMA_NM, PSF_SIGMA_NM))
SCMOS_CAMERA = Camera(baseline=100.0, e_per_adu=0.5, em_gain=1.0, qe=0.9, read_noise_e=1.5)
OTHER_SETS = {
    # name: (SimulationConfig settings, seed)
    "pupil-LD": (dict(density_per_um2=0.3, **EXPONENTIAL, **PUPIL, camera=PUPIL_CAMERA), 10_005),
    "pupil-HD": (dict(density_per_um2=2.0, **EXPONENTIAL, **PUPIL, camera=PUPIL_CAMERA), 10_006),
    "scmos": (dict(**MEDIUM, camera=SCMOS_CAMERA, pixel_read_noise_spread=0.3), 10_007),
    # out-of-focus light: about 12 static blobs per 64 x 64 frame, each up to twice the background
    "blobs": (dict(**MEDIUM, background_blobs=0.3, background_blob_amplitude=2.0), 10_008),
}
EXTERNAL_SETS = ("deepstorm_demo1",)
ALL_SETS = tuple(SYNTHETIC_SETS) + tuple(OTHER_SETS) + EXTERNAL_SETS
ALL_METHODS = ("classical", "picasso", "var", "var-sr", "var-noref", "var-noconfirm", "var-auto", "var-beads")
# --validation: the same synthetic sets on seeds 5_011..5_018, for choosing between models without
# touching the benchmark's seeds (train.validate uses 5_000 and 5_001).
VALIDATION_SEED_OFFSET = 5_011 - 10_001

# Picasso's net-gradient threshold is in ADU; we give it in photons (x ADU per photon of the camera).
# 400 photons: chosen for the best Jaccard on LD-high/LD-low simulations of seed 7 (< 10_000).
PICASSO_MIN_NG_PHOTONS = 400.0


@dataclass
class BenchSet:
    name: str
    frames: np.ndarray  # (T, H, W) ADU
    truth: Localizations
    camera: Camera
    psf_sigma_nm: float
    unseen: Localizations | None = None  # emitters centred outside the frame (for isolation)


def synthetic_config(name: str) -> tuple[SimulationConfig, int, float]:
    """A synthetic set's simulation, seed (benchmark) and the PSF sigma [nm] the methods are told."""
    if name in SYNTHETIC_SETS:
        density, photons, seed = SYNTHETIC_SETS[name]
        settings = dict(
            density_per_um2=density,
            photons=photons,
            psf_sigma_nm=(PSF_SIGMA_NM, PSF_SIGMA_NM),
            camera=Camera(),
        )
    else:
        settings, seed = OTHER_SETS[name]
    config = SimulationConfig(frame_size=(64, 64), background_photons=BACKGROUND, **settings)
    sigma_nm = PSF_SIGMA_NM
    if config.psf_model == "pupil":  # in focus, no aberration
        sigma_nm = gaussian_equivalent_sigma_nm(config.na[0], config.wavelength_nm[0], pixel_size_nm=100.0)
    return config, seed, sigma_nm


def make_set(name: str, n_frames: int, external_data: Path, validation: bool = False) -> BenchSet:
    if name in SYNTHETIC_SETS or name in OTHER_SETS:
        config, seed, sigma_nm = synthetic_config(name)
        assert seed >= BENCHMARK_SEED_BASE
        if validation:
            seed += VALIDATION_SEED_OFFSET
        movie = simulate_movie(config, n_frames, seed=seed)
        return BenchSet(name, movie.frames.numpy(), movie.truth, config.camera, sigma_nm, movie.outside)
    if name == "deepstorm_demo1":
        folder = external_data / name
        camera = Camera(
            pixel_size_nm=100.0, baseline=100.0, e_per_adu=1.0, em_gain=1.0, qe=1.0, read_noise_e=0.0
        )
        frames = np.asarray(read_frames(folder / "frames.tif"), dtype=np.float32)
        truth = read_csv(folder / "truth.csv", camera.pixel_size_nm)
        return BenchSet(name, frames, truth, camera, PSF_SIGMA_NM)
    raise SystemExit(f"unknown set {name!r}; choose from {', '.join(ALL_SETS)}")


# --------------------------------------------------------------------------------------------------
# methods: each returns a callable frames -> Localizations, or a reason why it is not available


def method_classical(bench: BenchSet, args):
    from napari_var_emitter.localize import classical

    def run(frames):
        return classical.localize(
            frames, bench.camera, psf_sigma_px=bench.psf_sigma_nm / bench.camera.pixel_size_nm
        )

    return run


def method_picasso(bench: BenchSet, args):
    try:
        import contextlib
        import io as _io
        import warnings

        with contextlib.redirect_stdout(_io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from picasso import localize as plz
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
        return f"picasso does not import ({type(exc).__name__}: {exc})"
    cam = bench.camera
    camera_info = {
        "Baseline": cam.baseline,
        "Sensitivity": cam.e_per_adu,  # electrons per ADU
        "Gain": cam.em_gain,
        "Qe": cam.qe,
        "Pixelsize": cam.pixel_size_nm,
    }
    adu_per_photon = 1.0 / cam.photons_per_adu
    params = {"Min. Net Gradient": args.picasso_min_ng * adu_per_photon, "Box Size": 7}

    def run(frames):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            df = plz.localize_frames(
                np.ascontiguousarray(frames), None, params, camera_info=camera_info, fitting_method="gaussmle"
            )
        # Picasso: pixel centres at integers (as napari), photons in photoelectrons (our photons x qe).
        return Localizations(
            frame=df["frame"].to_numpy(),
            x=df["x"].to_numpy(),
            y=df["y"].to_numpy(),
            photons=df["photons"].to_numpy() / cam.qe,
            background=df["bg"].to_numpy() / cam.qe,
            bkgstd=np.nan,
            sigma=0.5 * (df["sx"].to_numpy() + df["sy"].to_numpy()),
            uncertainty=np.sqrt(0.5 * (df["lpx"].to_numpy() ** 2 + df["lpy"].to_numpy() ** 2)),
            probability=1.0,
            grid_factor=0.0,
        )

    return run


def _var_runner(
    bench: BenchSet, args, mode: str, refine=True, confirm=True, camera_auto=False, measured_psf=None
):
    from napari_var_emitter.localize import PredictOptions, predict, resolve_model

    camera, psf = bench.camera, None
    try:
        if camera_auto:  # measured from the frames before the clock starts, like the model's choice
            from napari_var_emitter.calibration import calibrate

            measured = calibrate(bench.frames, pixel_size_nm=bench.camera.pixel_size_nm, n_bootstrap=0)
            camera = measured.camera()
            psf = measured.psf_sigma_nm if np.isfinite(measured.psf_sigma_nm) else None
            print(f"{bench.name}: camera measured, {camera}, PSF sigma {psf} nm", file=sys.stderr)
        options = PredictOptions(
            model=args.var_model,
            camera=camera,
            psf_sigma_nm=psf,
            psf=measured_psf,
            mode=mode,
            device=args.device,
            refine=refine,
            confirm=confirm,
            precision=args.precision,
            compile=args.compile,
            batch_size=args.batch_size,
            threshold=args.threshold,
        )
        resolved = resolve_model(args.var_model, bench.frames, camera, device=args.device)
    except (ImportError, VarEmitterError, OSError) as exc:
        return f"VAR model not available ({exc})"
    if resolved.choice is not None:
        print(f"{bench.name}: {resolved.choice.describe()}", file=sys.stderr)

    def run(frames):
        return predict(frames, resolved.model, options=options).localizations

    return run


def method_var(bench: BenchSet, args):
    """The VAR model (--var-model: auto, bundled, or a file), progressive mode: the finest level."""
    return _var_runner(bench, args, "progressive")


def method_var_noref(bench: BenchSet, args):
    """The VAR model's own positions, without the maximum-likelihood refinement (ablation)."""
    return _var_runner(bench, args, "progressive", refine=False)


def method_var_noconfirm(bench: BenchSet, args):
    """The VAR model with refinement but without the fit's confirmation of dim candidates (ablation)."""
    return _var_runner(bench, args, "progressive", confirm=False)


def method_var_auto(bench: BenchSet, args):
    """The VAR model with the camera and PSF width measured from the frames (``--camera auto``)."""
    return _var_runner(bench, args, "progressive", camera_auto=True)


def method_var_beads(bench: BenchSet, args):
    """The VAR model fitting the PSF measured from beads (``predict --psf``): a simulated bead movie
    (25 beads, 50,000 photons, 10 frames in focus) drawn with the set's pupil PSF, measured by
    ``calibrate --beads`` before the clock starts."""
    from napari_var_emitter.calibration.beads import measure_psf
    from napari_var_emitter.simulation.beads import simulate_beads

    settings = OTHER_SETS.get(bench.name, ({},))[0]
    if settings.get("psf_model") != "pupil":
        return "beads are simulated for the pupil-PSF sets"
    beads, _ = simulate_beads(
        na=settings["na"][0], wavelength_nm=settings["wavelength_nm"][0], planes_nm=(0.0,) * 10
    )
    return _var_runner(
        bench, args, "progressive", measured_psf=measure_psf(beads, bench.camera.pixel_size_nm)
    )


def method_var_sr(bench: BenchSet, args):
    """The same model in super-resolution mode: the chain continued to a 2x finer grid."""
    return _var_runner(bench, args, "super_resolution")


METHODS = {
    "classical": method_classical,
    "picasso": method_picasso,
    "var": method_var,
    "var-sr": method_var_sr,
    "var-noref": method_var_noref,
    "var-noconfirm": method_var_noconfirm,
    "var-auto": method_var_auto,
    "var-beads": method_var_beads,
}


# --------------------------------------------------------------------------------------------------


def run_one(method: str, bench: BenchSet, args) -> dict | str:
    """One method on one set: the metrics row (or why the method is not available)."""
    runner = METHODS[method](bench, args)
    if isinstance(runner, str):
        return runner
    # untimed warm-up on the same frames: JIT, compilation, model to device, and the one-time set-up
    # of every batch shape the timed run will meet (a short last batch, the sparse level's row counts)
    runner(bench.frames)
    start = time.perf_counter()
    locs = runner(bench.frames)
    elapsed = time.perf_counter() - start
    if args.save_locs is not None:
        args.save_locs.mkdir(parents=True, exist_ok=True)
        to_csv(locs, args.save_locs / f"{method}_{bench.name}.csv", bench.camera.pixel_size_nm)
    report = evaluate(
        locs,
        bench.truth,
        bench.camera.pixel_size_nm,
        tolerance_nm=250.0,
        method=args.match,
        excess_noise=bench.camera.excess_noise,
        crlb_min_photons=1000.0,
        unseen=bench.unseen,
        frame_shape=bench.frames.shape[-2:],
    )
    return {
        "method": method
        if not method.startswith("var") or not args.var_label
        else f"{args.var_label}{method[3:]}",
        "set": bench.name,
        "frames": len(bench.frames),
        "n_truth": report.n_truth,
        "n_pred": report.n_pred,
        "JI": report.jaccard,
        "RMSE_nm": report.rmse_nm,
        "E": report.efficiency,
        "recall": report.recall,
        "precision": report.precision,
        "bias_x_nm": report.bias_x_nm,
        "bias_y_nm": report.bias_y_nm,
        "RMSE_over_CRLB": report.rmse_over_crlb,
        "n_CRLB": report.n_crlb,
        "calibration": report.calibration,
        "flatness": subpixel_flatness(locs, bins=10) if len(locs) else float("nan"),
        "frames_per_s": len(bench.frames) / elapsed,
    }


def markdown_table(rows: list[dict]) -> str:
    head = ["method", "set", "JI", "RMSE [nm]", "E", "recall", "precision", "bias x/y [nm]"]
    head += ["RMSE/CRLB (n)", "calib.", "grid max/min", "frames/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def f(v, nd=1):
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"

    for r in rows:
        cells = [r["method"], r["set"], f(r["JI"]), f(r["RMSE_nm"]), f(r["E"]), f(r["recall"])]
        cells += [f(r["precision"]), f"{f(r['bias_x_nm'], 2)} / {f(r['bias_y_nm'], 2)}"]
        cells += [
            f"{f(r['RMSE_over_CRLB'], 2)} ({r['n_CRLB']})",
            f(r["calibration"], 2),
            f(r["flatness"], 2),
            f(r["frames_per_s"], 0),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100, help="frames per synthetic set")
    parser.add_argument(
        "--methods", default="classical,picasso,var", help="comma-separated: " + ",".join(ALL_METHODS)
    )
    parser.add_argument("--sets", default=",".join(ALL_SETS), help="comma-separated: " + ",".join(ALL_SETS))
    data = REPO / "tests" / "data"
    parser.add_argument(
        "--data", type=Path, default=data, help="folder holding deepstorm_demo1/ (tests/data)"
    )
    parser.add_argument("--match", choices=("hungarian", "greedy"), default="hungarian")
    parser.add_argument("--device", default="auto", help="device for the VAR model")
    parser.add_argument(
        "--picasso-min-ng",
        type=float,
        default=PICASSO_MIN_NG_PHOTONS,
        help="Picasso minimum net gradient, in photons (converted to ADU with the camera)",
    )
    parser.add_argument(
        "--var-model",
        default="auto",
        help="auto (the command line's default: 3 frames for movies), bundled (one frame), "
        "bundled:window-3 or a checkpoint, for the var rows",
    )
    parser.add_argument("--var-label", default="", help="name the var rows (e.g. var-noref for an ablation)")
    parser.add_argument("--precision", default="auto", help="VAR model: auto, fp32 or bf16")
    parser.add_argument("--compile", action="store_true", help="VAR model: torch.compile (CPU: ~30 s once)")
    parser.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="VAR: frames per pass, at most"
    )
    parser.add_argument("--threshold", type=float, default=None, help="VAR model: detection threshold")
    parser.add_argument(
        "--validation",
        action="store_true",
        help="the synthetic sets on validation seeds (5011-5018), for model selection; no external set",
    )
    parser.add_argument("--csv", type=Path, default=None, help="also save the rows as CSV")
    parser.add_argument(
        "--save-locs",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write each method's localizations on each set as DIR/METHOD_SET.csv (to compare "
        "two versions of the code: the same files, byte for byte, are the same localizations)",
    )
    args = parser.parse_args(argv)

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    for m in methods:
        if m not in METHODS:
            parser.error(f"unknown method {m!r}; choose from {', '.join(ALL_METHODS)}")
    for s in sets:
        if s not in ALL_SETS:
            parser.error(f"unknown set {s!r}; choose from {', '.join(ALL_SETS)}")

    rows, notes = [], []
    for name in sets:
        if name in EXTERNAL_SETS and not (args.data / name).is_dir():
            notes.append(f"{name}: skipped, {args.data / name} not found (--data)")
            continue
        if args.validation and name in EXTERNAL_SETS:
            continue
        bench = make_set(name, args.frames, args.data, validation=args.validation)
        for method in methods:
            result = run_one(method, bench, args)
            if isinstance(result, str):
                if result not in notes:
                    notes.append(f"{method}: skipped, {result}")
                continue
            rows.append(result)
            print(
                f"  {method} on {name}: JI {result['JI']:.1f}, {result['frames_per_s']:.0f} frames/s",
                file=sys.stderr,
            )
    print(markdown_table(rows))
    for note in dict.fromkeys(notes):
        print(f"\nNote: {note}")
    if args.csv is not None and rows:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
