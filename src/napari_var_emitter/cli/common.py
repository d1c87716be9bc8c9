"""What the subcommands share: the camera flags, messages on stderr, a progress bar."""

from __future__ import annotations

import argparse
import sys
import time

from ..camera import CAMERA_FIELDS, Camera

# flag help of each camera field (docs/CONVENTIONS.md, camera model)
CAMERA_HELP = {
    "pixel_size_nm": "pixel size [nm]",
    "baseline": "camera offset [ADU]",
    "e_per_adu": "electrons per ADU",
    "em_gain": "EM gain (1 for sCMOS/CCD)",
    "qe": "quantum efficiency (0..1]",
    "read_noise_e": "read noise [e-]",
}


def add_camera_flags(parser: argparse.ArgumentParser, auto: bool = False) -> None:
    """The camera flags of docs/CONVENTIONS.md, section 2, and ``--camera FILE.json`` (with ``auto``:
    ``--camera auto`` too). A flag given on the command line wins over the file."""
    d = Camera()
    group = parser.add_argument_group("camera (docs/CONVENTIONS.md; defaults: SMLM challenge 2016 EMCCD)")
    what = "FILE.json|auto" if auto else "FILE.json"
    measured = "; auto: measured from the frames (see the calibrate command)" if auto else ""
    group.add_argument(
        "--camera",
        default=None,
        metavar=what,
        help=f"a camera file (as simulate and calibrate --out write){measured}; flags given beside it win",
    )
    for name in CAMERA_FIELDS:
        flag = "--" + name.replace("_", "-")
        group.add_argument(
            flag, type=float, default=None, help=f"{CAMERA_HELP[name]} (default {getattr(d, name):g})"
        )


def given_camera_values(args: argparse.Namespace) -> dict[str, float]:
    """The camera flags given on the command line."""
    return {name: getattr(args, name) for name in CAMERA_FIELDS if getattr(args, name, None) is not None}


def camera_from(args: argparse.Namespace, base: Camera | None = None) -> Camera:
    """The camera of ``--camera FILE.json`` (or ``base``, or the defaults), with the flags given on
    the command line in place of its values."""
    if base is None:
        base = Camera.load(args.camera) if getattr(args, "camera", None) not in (None, "auto") else Camera()
    return Camera.from_dict({**base.to_dict(), **given_camera_values(args)})


def add_table_pixel_size(parser: argparse.ArgumentParser, camera_file: bool = False) -> None:
    """``--pixel-size-nm`` of a table read from CSV (in nm; Picasso files carry their own); with
    ``camera_file``, ``--camera FILE.json`` may give it instead."""
    parser.add_argument(
        "--pixel-size-nm",
        type=float,
        default=None,
        help="pixel size [nm] of a CSV table's nm (default 100; Picasso files carry theirs)",
    )
    if camera_file:
        parser.add_argument(
            "--camera", default=None, metavar="FILE.json", help="take the pixel size from a camera file"
        )


def table_pixel_size(args: argparse.Namespace) -> float:
    """``--pixel-size-nm``, else the camera file's (``--camera``), else 100 nm."""
    if args.pixel_size_nm is not None:
        return float(args.pixel_size_nm)
    if getattr(args, "camera", None):
        return Camera.load(args.camera).pixel_size_nm
    return Camera().pixel_size_nm


def say(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr)


class ProgressBar:
    """One redrawn terminal line: frames done/total, a bar, frames/s and the time left.

    Draws only when ``enabled`` (default: the stream is a terminal), at most every
    ``min_interval`` seconds and once at the end; :meth:`close` ends the line.
    """

    def __init__(self, label: str = "predict", stream=None, enabled: bool | None = None, min_interval=0.1):
        self.stream = sys.stderr if stream is None else stream
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(isatty and isatty()) if enabled is None else enabled
        self.label = label
        self.min_interval = min_interval
        self.start = time.monotonic()
        self._last_draw = -float("inf")
        self._drawn = False

    def update(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or (done < total and now - self._last_draw < self.min_interval):
            return
        self._last_draw = now
        self.stream.write("\r" + self.line(done, total, now - self.start))
        self.stream.flush()
        self._drawn = True

    @staticmethod
    def line(done: int, total: int, elapsed: float, width: int = 24) -> str:
        fraction = done / total if total else 1.0
        filled = int(round(width * fraction))
        rate = done / elapsed if elapsed > 0 else 0.0
        left = (total - done) / rate if rate > 0 else float("nan")
        eta = "--:--" if left != left else clock(left)
        return (
            f"{done:,}/{total:,} frames [{'#' * filled}{'.' * (width - filled)}] "
            f"{rate:,.1f} frames/s, {eta} left "
        )

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"
