"""``napari-var-emitter simulate OUT_DIR``: a seeded SMLM movie with its ground truth."""

from __future__ import annotations

import argparse

from ..errors import InputError
from .common import add_camera_flags, camera_from, say


def add(sub) -> None:
    p = sub.add_parser(
        "simulate", help="simulate an SMLM movie: frames.tif, truth.csv, camera/simulation JSON"
    )
    p.add_argument(
        "out_dir", metavar="OUT_DIR", help="folder to write frames.tif, truth.csv and the JSON files to"
    )
    p.add_argument("--frames", type=int, default=100, help="number of frames")
    p.add_argument(
        "--size", type=int, nargs="+", default=[64], metavar=("H", "W"), help="frame size H [W] px"
    )
    p.add_argument("--density", type=float, default=0.3, help="emitters ON per frame per square micrometre")
    p.add_argument(
        "--photons",
        type=float,
        nargs=2,
        default=(1000.0, 8000.0),
        metavar=("LO", "HI"),
        help="photons per emitter per frame when fully on, uniform in this range (default 1000 8000)",
    )
    p.add_argument("--psf-sigma-nm", type=float, default=120.0, help="Gaussian PSF sigma [nm]")
    p.add_argument(
        "--psf",
        default=None,
        metavar="PSF.json",
        help="draw the emitters with a PSF measured from beads (calibrate --beads) instead of a Gaussian",
    )
    p.add_argument(
        "--background",
        type=float,
        nargs=2,
        default=(20.0, 100.0),
        metavar=("LO", "HI"),
        help="background photons per pixel per frame (uniform per movie)",
    )
    p.add_argument(
        "--structure",
        choices=("uniform", "filaments"),
        default="uniform",
        help="emitters placed uniformly, or along curved filaments as on microtubules",
    )
    p.add_argument("--seed", type=int, default=0, help="the same seed gives the same movie")
    p.add_argument("--quiet", action="store_true", help="no summary line on stderr")
    add_camera_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..simulation import SimulationConfig, simulate_movie, write_movie

    if len(args.size) not in (1, 2):
        raise InputError(f"--size takes H or H W, got {len(args.size)} numbers")
    h, w = (args.size[0], args.size[0]) if len(args.size) == 1 else tuple(args.size)
    config = SimulationConfig(
        frame_size=(h, w),
        density_per_um2=args.density,
        photons=tuple(args.photons),
        psf_sigma_nm=(args.psf_sigma_nm, args.psf_sigma_nm),
        psf_model="measured" if args.psf else "gaussian",
        psf_file=args.psf,
        background_photons=tuple(args.background),
        structure=args.structure,
        camera=camera_from(args),
    )
    movie = simulate_movie(config, args.frames, seed=args.seed)
    out = write_movie(movie, args.out_dir)
    say(args, f"{args.frames} frames of {h}x{w} px, {len(movie.truth)} emitters -> {out}")
    return 0
