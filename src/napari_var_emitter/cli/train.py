"""``napari-var-emitter train --out MODEL.pt``: train or fine-tune on simulated movies."""

from __future__ import annotations

import argparse
import time

from ..errors import InputError
from .common import add_camera_flags, camera_from, say


def add(sub) -> None:
    from ..train import TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", help="train (or fine-tune) the VAR model on simulated movies for your camera")
    p.add_argument("--out", required=True, help="checkpoint to write (rewritten at each validation)")
    p.add_argument("--preset", default=d.preset, help="model preset: default or seed")
    p.add_argument(
        "--init-from",
        default=None,
        help='"bundled", "bundled:window-3" (movies) or a checkpoint to fine-tune',
    )
    p.add_argument("--resume", action="store_true", help="continue the run saved at --out")
    p.add_argument("--steps", type=int, default=d.steps, help=f"optimizer steps (default {d.steps})")
    p.add_argument(
        "--batch-size",
        type=int,
        default=d.batch_size,
        help=f"simulated frames per step (default {d.batch_size})",
    )
    p.add_argument(
        "--lr", type=float, default=d.lr, help=f"peak learning rate, cosine decay (default {d.lr:g})"
    )
    p.add_argument(
        "--val-every", type=int, default=d.val_every, help="validate and save the checkpoint every N steps"
    )
    pair = dict(type=float, nargs=2, metavar=("LO", "HI"))
    p.add_argument("--psf-sigma-nm", default=d.psf_sigma_nm, help="Gaussian PSF sigma range [nm]", **pair)
    p.add_argument(
        "--psf",
        default=None,
        metavar="PSF.json",
        help="a PSF measured from beads (calibrate --beads): the movies are drawn with it, not a Gaussian",
    )
    p.add_argument("--photons", default=d.photons, help="photons per emitter per frame, range", **pair)
    p.add_argument(
        "--density",
        type=float,
        nargs=2,
        default=d.density_per_um2,
        metavar=("LO", "HI"),
        help="emitters per square micrometre, drawn per batch",
    )
    p.add_argument(
        "--background", default=d.background_photons, help="background photons per pixel, range", **pair
    )
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the training batches")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"), help="where to train")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    add_camera_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..train import TrainConfig, iter_train

    if args.steps < 1 or args.batch_size < 1 or not args.lr > 0:
        raise InputError("--steps and --batch-size must be >= 1 and --lr > 0")
    cfg = TrainConfig(
        preset=args.preset,
        camera=camera_from(args),
        psf_sigma_nm=tuple(args.psf_sigma_nm),
        psf_file=args.psf,
        photons=tuple(args.photons),
        density_per_um2=tuple(args.density),
        background_photons=tuple(args.background),
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        val_every=args.val_every,
        seed=args.seed,
        device=args.device,
        out=args.out,
        init_from=args.init_from,
        resume=args.resume,
    )
    start = time.perf_counter()
    for event in iter_train(cfg):
        if event.val:
            metrics = " ".join(f"{k}={v:.3g}" for k, v in event.val.items())
            say(args, f"step {event.step}/{event.total_steps} loss {event.loss:.3f} {metrics}")
    say(args, f"saved {args.out} after {cfg.steps} steps in {time.perf_counter() - start:.0f} s")
    return 0
