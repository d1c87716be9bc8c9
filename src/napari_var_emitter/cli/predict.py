"""``napari-var-emitter predict FRAMES --out LOCS.csv``: a thin shell over the prediction pipeline.

Its flags are :class:`..localize.options.PredictOptions`' fields, with their defaults and help
texts; the options are validated there, before anything is read.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from pathlib import Path

from ..camera import Camera
from ..errors import InputError, VarEmitterError
from ..localize.options import PredictOptions
from ..measured_psf import MeasuredPsf
from .common import ProgressBar, add_camera_flags, camera_from, given_camera_values, say

# PredictOptions fields as flags: (field, flag, kind); "on" fields are on by default, "--no-X" turns
# them off; "flag" fields are off by default; the others take a value.
FLAGS = (
    ("model", "--model", "value"),
    ("mode", "--mode", "value"),
    ("sr_factor", "--sr-factor", "value"),
    ("device", "--device", "value"),
    ("threshold", "--threshold", "value"),
    ("psf_sigma_nm", "--psf-sigma-nm", "value"),
    ("psf", "--psf", "value"),
)
THROUGHPUT_FLAGS = (
    ("batch_size", "--batch-size", "value"),
    ("batch_pixels", "--batch-pixels", "value"),
    ("tile_size", "--tile-size", "value"),
    ("tile_margin", "--tile-margin", "value"),
    ("precision", "--precision", "value"),
    ("compile", "--compile", "flag"),
    ("refine", "--no-refine", "on"),
    ("confirm", "--no-confirm", "on"),
    ("pool", "--no-pool", "on"),
    ("sparse", "--no-sparse", "on"),
    ("local_attention", "--local-attention", "flag"),
)
TYPES = {"sr_factor": int, "threshold": float, "psf_sigma_nm": float, "batch_size": int}
TYPES.update({"batch_pixels": int, "tile_size": int, "tile_margin": int})


def _add_options(group, flags) -> None:
    for name, flag, kind in flags:
        text = PredictOptions.help(name).replace("%", "%%")
        if kind == "on":
            group.add_argument(flag, dest=name, action="store_false", help=f"turns this off: {text}")
        elif kind == "flag":
            group.add_argument(flag, dest=name, action="store_true", help=text)
        else:
            default = PredictOptions.default(name)
            group.add_argument(
                flag,
                dest=name,
                type=TYPES.get(name, str),
                default=default,
                choices=PredictOptions.choices(name),
                metavar=_metavar(name),
                help=text if default is None else f"{text} (default: {default})",
            )


def _metavar(name: str) -> str | None:
    from dataclasses import fields

    for f in fields(PredictOptions):
        if f.name == name:
            return f.metadata.get("metavar")
    return None


def add(sub) -> None:
    p = sub.add_parser("predict", help="localize emitters in camera frames and write a localization table")
    p.add_argument(
        "frames",
        metavar="FRAMES",
        help="camera frames (T, Y, X) or one frame, in ADU: TIFF, OME-TIFF or BigTIFF; a Zarr store; "
        "Nikon .nd2 or Zeiss .czi (the formats extra); a pixel size recorded in the file is used "
        "unless given",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="LOCS.csv",
        help="output: .csv (ThunderSTORM, docs/CONVENTIONS.md; written as the frames are done) "
        "or .hdf5 (Picasso)",
    )
    _add_options(p, FLAGS)
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary line on stderr")
    _add_options(p.add_argument_group("throughput and pipeline stages (VAR)"), THROUGHPUT_FLAGS)
    group = p.add_argument_group("Dask cluster")
    group.add_argument(
        "--dask-scheduler",
        default=None,
        metavar="ADDRESS",
        help="run frame ranges on this Dask distributed scheduler (e.g. tcp://host:8786); the workers "
        "must read FRAMES and --model at the same paths",
    )
    group.add_argument("--chunk-frames", type=int, default=512, help="frames per Dask task")
    add_camera_flags(p, auto=True)
    p.set_defaults(run=run)


def options_from(args: argparse.Namespace, camera: Camera, psf_sigma_nm: float | None) -> PredictOptions:
    """The PredictOptions of the parsed flags (checked there), with the camera and PSF width chosen."""
    if args.tile_size is not None and args.tile_size < 0:
        raise InputError(f"--tile-size must be >= 0 (0: never tile), got {args.tile_size}")
    values = {name: getattr(args, name) for name, _, _ in FLAGS + THROUGHPUT_FLAGS}
    values["tile_size"] = args.tile_size or None  # 0: never
    values["pool"] = None if args.pool else False  # default: on for models that see several frames
    values["psf_sigma_nm"] = psf_sigma_nm
    values["psf"] = MeasuredPsf.load(args.psf) if args.psf else None
    return PredictOptions(camera=camera, **values)


def choose_camera(
    args: argparse.Namespace, frames, recorded: dict | None = None
) -> tuple[Camera, str, float | None, str]:
    """(camera, where it came from, PSF sigma in nm or None, where that came from): ``--camera auto``
    measures both from the frames (:mod:`..calibration`); flags given on the command line win.
    ``recorded``: camera values the frames' file records (:func:`..io.formats.frames_metadata`),
    which take the place of the defaults (not of a camera file's values)."""
    psf, psf_source = args.psf_sigma_nm, "given" if args.psf_sigma_nm is not None else ""
    recorded = dict(recorded or {})
    if args.camera == "auto":
        from ..calibration import calibrate

        given = given_camera_values(args)
        kwargs = {k: v for k, v in {**recorded, **given}.items() if k in ("pixel_size_nm", "baseline", "qe")}
        measured = calibrate(frames, n_bootstrap=0, **kwargs)
        camera, source = camera_from(args, measured.camera()), "measured from the frames"
        if psf is None and not args.psf and math.isfinite(measured.psf_sigma_nm):
            psf, psf_source = float(measured.psf_sigma_nm), "measured from the frames"
    else:
        base = None if args.camera else Camera.from_dict({**Camera().to_dict(), **recorded})
        camera = camera_from(args, base)
        source = f"from {args.camera}" if args.camera else "given" if given_camera_values(args) else "default"
    if given_camera_values(args) and args.camera:
        source += ", flags given beside it"
    return camera, source, psf, psf_source


def from_the_file(args: argparse.Namespace, recorded: dict) -> str:
    """The camera values of the frames' file that the run used, in words ("" for none): those no
    flag and no camera file gave (``--camera auto`` measures all but the pixel size)."""
    if args.camera and args.camera != "auto":
        return ""
    used = {k: v for k, v in recorded.items() if getattr(args, k, None) is None}
    if args.camera == "auto":
        used = {k: v for k, v in used.items() if k in ("pixel_size_nm", "baseline", "qe")}
    names = {"pixel_size_nm": ("pixel size", " nm"), "em_gain": ("EM gain", "")}
    words = [f"{names.get(k, (k, ''))[0]} {v:g}{names.get(k, (k, ''))[1]}" for k, v in used.items()]
    return f"{', '.join(words)} from the file" if words else ""


def camera_warnings(frames, camera: Camera) -> list[str]:
    """Where ``camera`` disagrees with the frames (none where they cannot be measured)."""
    from ..calibration import check_camera

    try:
        return check_camera(frames, camera)
    except VarEmitterError:  # too small, constant, ...: the prediction says what it finds
        return []


def run(args: argparse.Namespace) -> int:
    from ..io.formats import frames_metadata
    from ..io.frames import as_frames
    from ..io.localizations import Localizations
    from ..io.stream import close_frames, csv_stream, open_frames
    from ..io.tables import table_format, write_localizations
    from ..localize.models import resolve_model
    from ..localize.pipeline import predict, psf_sigma_nm

    out = Path(args.out)
    if not out.parent.is_dir() and str(out.parent) != "":
        raise InputError(f"output folder {out.parent} does not exist")
    kind = table_format(out)  # an unknown suffix is refused before any work
    if args.chunk_frames < 1:
        raise InputError(f"--chunk-frames must be >= 1, got {args.chunk_frames}")
    frames = open_frames(args.frames)
    bar = ProgressBar(enabled=None if not args.quiet else False)
    parts: list[Localizations] = []
    try:
        as_frames(frames[:1])  # checks dtype, shape and size before loading the model
        n_frames, height, width = frames.shape
        recorded = frames_metadata(args.frames)
        camera, camera_source, psf, psf_source = choose_camera(args, frames, recorded)
        options = options_from(args, camera, psf)
        start = time.perf_counter()
        with contextlib.ExitStack() as stack:
            write = (
                stack.enter_context(csv_stream(out, options.camera.pixel_size_nm))
                if kind == "csv"
                else parts.append
            )
            if args.dask_scheduler:
                from ..localize.cluster import predict_on_cluster

                close_frames(frames)
                result, resolved = predict_on_cluster(
                    args.frames,
                    args.dask_scheduler,
                    options,
                    chunk_frames=args.chunk_frames,
                    sink=write,
                    progress=bar.update,
                )
            else:
                resolved = resolve_model(options.model, frames, options.camera, device="cpu")
                if camera_source != "measured from the frames":
                    for warning in camera_warnings(frames, camera):
                        print(f"warning: {' '.join(warning.split())}", file=sys.stderr)
                result = predict(frames, resolved.model, options=options, sink=write, progress=bar.update)
            where = resolved.describe(result.device)
            used_psf = psf_sigma_nm(resolved.model, options, camera)
            psf_from = psf_source or ("the model's" if resolved.model is not None else "default")
            if options.psf is not None and options.psf_sigma_nm is None:
                psf_from = f"measured from beads, {args.psf}; the fit models that PSF"
            where += (
                f"; camera {camera_source}: baseline {camera.baseline:.4g} ADU, "
                f"{camera.e_per_adu:.4g} e-/ADU, EM gain {camera.em_gain:g}; "
                f"PSF sigma {used_psf:.0f} nm ({psf_from})"
            )
            if from_the_file(args, recorded):
                where += f"; {from_the_file(args, recorded)}"
            n_locs = write.rows if kind == "csv" else sum(len(p) for p in parts)
            if kind != "csv":
                write_localizations(
                    Localizations.concatenate(parts),
                    out,
                    pixel_size_nm=options.camera.pixel_size_nm,
                    frame_shape=(height, width),
                    n_frames=n_frames,
                )
        elapsed = time.perf_counter() - start
    finally:
        bar.close()
        close_frames(frames)
    say(
        args,
        f"{n_locs} localizations in {n_frames} frames, {elapsed:.2f} s "
        f"({n_frames / max(elapsed, 1e-9):.0f} frames/s, {where}) -> {out}",
    )
    return 0
