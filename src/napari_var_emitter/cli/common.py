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


def add_camera_flags(parser: argparse.ArgumentParser) -> None:
    d = Camera()
    group = parser.add_argument_group("camera (docs/CONVENTIONS.md; defaults: SMLM challenge 2016 EMCCD)")
    for name in CAMERA_FIELDS:
        flag = "--" + name.replace("_", "-")
        group.add_argument(flag, type=float, default=getattr(d, name), help=CAMERA_HELP[name])


def add_table_pixel_size(parser: argparse.ArgumentParser) -> None:
    """``--pixel-size-nm`` of a table read from CSV (in nm); Picasso files carry their own."""
    parser.add_argument(
        "--pixel-size-nm",
        type=float,
        default=100.0,
        help="pixel size [nm] that converts a CSV table's nm to pixels (Picasso files carry theirs)",
    )


def camera_from(args: argparse.Namespace) -> Camera:
    return Camera(**{name: getattr(args, name) for name in CAMERA_FIELDS})


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
