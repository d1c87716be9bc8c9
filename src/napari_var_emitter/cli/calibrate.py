"""``napari-var-emitter calibrate FRAMES``: the camera and PSF width measured from the frames alone.

Prints the measurement in words (each value with its standard error, the camera as flags, notes),
or with ``--json`` one JSON object (docs/CONVENTIONS.md, section 5); ``--out camera.json`` saves
that object, which ``--camera camera.json`` then reads.

``calibrate --beads BEADS.tif --out psf.json``: the PSF measured from an image stack of beads
(:mod:`..calibration.beads`), which ``predict --psf psf.json`` fits and ``simulate``/``train`` draw
(``--psf psf.json``).
"""

from __future__ import annotations

import argparse
import json

from ..errors import InputError


def add(sub) -> None:
    from ..calibration import CAMERA_TYPES

    p = sub.add_parser(
        "calibrate", help="measure the camera (offset, gain, noise) and the PSF width from frames"
    )
    p.add_argument(
        "frames",
        metavar="FRAMES",
        nargs="?",
        help="camera frames (T, Y, X) or one frame, in ADU (the formats of predict)",
    )
    p.add_argument(
        "--beads",
        default=None,
        metavar="BEADS.tif",
        help="instead of FRAMES: an image or z-stack of isolated beads (the formats of predict); "
        "measures the PSF (a pixelated model, in focus) for predict --psf, simulate --psf, train --psf",
    )
    p.add_argument(
        "--camera-type",
        choices=CAMERA_TYPES,
        default=None,
        help="the camera's kind, where known: an EMCCD's noise grows twice as fast as an sCMOS's at "
        "the same gain, which the data tell apart only when the background spans several levels",
    )
    p.add_argument(
        "--pixel-size-nm",
        type=float,
        default=None,
        help="pixel size [nm] (default: the file's, else 100)",
    )
    p.add_argument("--qe", type=float, default=None, help="quantum efficiency (default 0.9)")
    p.add_argument("--baseline", type=float, default=None, help="the camera's offset [ADU], where known")
    p.add_argument(
        "--dark",
        default=None,
        metavar="DARK.tif",
        help="frames taken with no light: per-pixel offset and noise",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of words")
    p.add_argument(
        "--out",
        default=None,
        metavar="camera.json",
        help="also save the JSON object here (with --beads: the PSF)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..calibration import calibrate
    from ..io.atomic import write_text
    from ..io.stream import close_frames, open_frames

    if args.out and not args.out.endswith(".json"):
        raise InputError(f"--out must be a .json file, got {args.out}")
    if (args.frames is None) == (args.beads is None):
        raise InputError("give camera frames (FRAMES) or a bead stack (--beads BEADS.tif), one of them")
    if args.beads:
        return _beads(args)
    frames = open_frames(args.frames)
    dark = open_frames(args.dark) if args.dark else None
    kwargs = {k: getattr(args, k) for k in ("pixel_size_nm", "baseline") if getattr(args, k) is not None}
    if "pixel_size_nm" not in kwargs:
        from ..io.formats import frames_metadata

        kwargs.update({k: v for k, v in frames_metadata(args.frames).items() if k == "pixel_size_nm"})
    if args.qe is not None:
        kwargs["qe"] = args.qe
    try:
        result = calibrate(frames, camera_type=args.camera_type, dark=dark, **kwargs)
    finally:
        close_frames(frames)
        if dark is not None:
            close_frames(dark)
    text = json.dumps(result.to_dict(), indent=None if args.json else 2)
    if args.out:
        write_text(args.out, text + "\n")
    print(text if args.json else "\n".join(result.lines()))
    return 0


def _beads(args: argparse.Namespace) -> int:
    from ..calibration.beads import measure_psf
    from ..io.formats import frames_metadata
    from ..io.frames import as_frames
    from ..io.stream import close_frames, open_frames

    pixel_size = args.pixel_size_nm or frames_metadata(args.beads).get("pixel_size_nm", 100.0)
    stack = open_frames(args.beads)
    try:
        psf = measure_psf(as_frames(stack[:]), pixel_size_nm=float(pixel_size))
    finally:
        close_frames(stack)
    if args.out:
        psf.save(args.out)
    summary = {k: v for k, v in psf.to_dict().items() if k != "table"}
    if args.json:
        print(json.dumps(summary))
        return 0
    src = psf.source
    planes = src["planes"]
    print(
        f"PSF measured from {src['beads']} beads, planes {planes[0]}..{planes[1]} of {src['of_planes']} "
        f"(in focus), {psf.pixel_size_nm:g} nm pixels"
    )
    print(f"  Gaussian-equivalent sigma: {psf.sigma_nm:.1f} nm ({psf.sigma_px:.3f} px)")
    print(f"  model: pixel table, {psf.oversample} samples per pixel, radius {psf.radius_px} px")
    print(f"  misfit: {100 * src['residual']:.2f} % of the beads' peak (RMS)")
    if args.out:
        print(f"  saved: {args.out} (predict --psf, simulate --psf, train --psf)")
    return 0
