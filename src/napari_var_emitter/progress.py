"""Long work is a generator that yields progress events and returns its result: the GUI runs it in a
worker, the command line and the tests run it to the end with :func:`run_to_end`."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TypeVar

Result = TypeVar("Result")


def run_to_end(
    generator: Generator[object, None, Result], on_event: Callable[[object], None] | None = None
) -> Result:
    """Exhaust ``generator``, calling ``on_event(event)`` for each event it yields; return its value."""
    while True:
        try:
            event = next(generator)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(event)
