"""What the widgets' background generators share: errors that always reach the user.

superqt's ``GeneratorWorker`` (napari's ``create_worker``) takes a ``RuntimeError`` raised by the
generator for "the worker was deleted": it emits neither ``errored`` nor ``finished``, so a widget
would wait for ever and the user would hear nothing. PyTorch raises ``RuntimeError`` for many real
failures (out of memory, a device error), so :func:`relay_errors` re-raises those as
:class:`WorkerFailure`, which the worker reports like any other error.
"""

from __future__ import annotations

from collections.abc import Generator


class WorkerFailure(Exception):
    """A ``RuntimeError`` from inside a worker, carried to the UI (its ``__cause__`` is the original)."""


def relay_errors(generator: Generator):
    """Run ``generator`` (yielding what it yields, returning what it returns); a ``RuntimeError``
    from it becomes :class:`WorkerFailure` with the same message."""
    try:
        return (yield from generator)
    except RuntimeError as exc:
        raise WorkerFailure(f"{type(exc).__name__}: {exc}") from exc
