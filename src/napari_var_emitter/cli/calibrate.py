"""``napari-var-emitter calibrate FRAMES``: the camera and PSF width measured from the frames alone.

Prints the measurement in words (each value with its standard error, the camera as flags, notes),
or with ``--json`` one JSON object (docs/CONVENTIONS.md, section 5); ``--out camera.json`` saves
that object, which ``--camera camera.json`` then reads.
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
        help="camera frames (T, Y, X) or one frame, in ADU (the formats of predict)",
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
    p.add_argument("--out", default=None, metavar="camera.json", help="also save the JSON object here")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..calibration import calibrate
    from ..io.atomic import write_text
    from ..io.stream import close_frames, open_frames

    if args.out and not args.out.endswith(".json"):
        raise InputError(f"--out must be a .json file, got {args.out}")
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
