"""The ``napari-var-emitter`` command (docs/CONVENTIONS.md, command line).

Each subcommand is a module with ``add(subparsers)``, which builds its parser, and ``run(args)``,
which does the work and returns the exit code.

Any :class:`VarEmitterError` (bad input, bad model file, bad table) or ``OSError`` ends the command
with one line ``napari-var-emitter: error: <message>`` on stderr and exit code 2; output files are
written atomically, so a failed run leaves none behind.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import VarEmitterError
from . import calibrate, drift, evaluate, frc, predict, simulate, train

PROG = "napari-var-emitter"
EXIT_ERROR = 2
SUBCOMMANDS = (predict, calibrate, simulate, evaluate, train, drift, frc)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="SMLM emitter localization with a VAR model")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in SUBCOMMANDS:
        command.add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except VarEmitterError as exc:
        message = str(exc)
    except OSError as exc:
        message = f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or an exhausted machine (e.g. out of memory): still one line
        message = f"internal error ({type(exc).__name__}): {exc}"
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
