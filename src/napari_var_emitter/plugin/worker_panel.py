"""A background job's buttons, progress bar and status line, shared by both dock widgets.

The job is a generator run in napari's ``thread_worker`` (``create_worker``): the viewer stays
responsive, each yielded event moves the progress bar, Cancel stops at the next yield. Whatever
ends the job ends in the status line: the widget's own message when it returns, "cancelled", or
"failed: ..." (also shown as a notification). A run refused before it starts says why in the status
line too (:meth:`WorkerPanel.refuse`).
"""

from __future__ import annotations

from collections.abc import Callable, Generator

from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget


class WorkerFailure(Exception):
    """A ``RuntimeError`` from inside a worker, carried to the UI (its ``__cause__`` is the original)."""


def relay_errors(generator: Generator):
    """Run ``generator`` (yielding what it yields, returning what it returns); a ``RuntimeError``
    from it becomes :class:`WorkerFailure` with the same message.

    superqt's ``GeneratorWorker`` (napari's ``create_worker``) takes a ``RuntimeError`` raised by
    the generator for "the worker was deleted": it emits neither ``errored`` nor ``finished``, so a
    widget would wait for ever and the user would hear nothing. PyTorch raises ``RuntimeError`` for
    many real failures (out of memory, a device error)."""
    try:
        return (yield from generator)
    except RuntimeError as exc:
        raise WorkerFailure(f"{type(exc).__name__}: {exc}") from exc


class WorkerPanel(QWidget):
    """Run and Cancel buttons (and any others the widget adds), a progress bar and a status line."""

    def __init__(
        self, title: str, run_label: str, failed: str = "failed", parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.title = title  # names the widget in notifications
        self.failed = failed  # how the status line starts when the job fails
        self.worker = None
        self.run_button = QPushButton(run_label)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.buttons = QHBoxLayout()
        self.buttons.addWidget(self.run_button)
        self.buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(self.buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        self.cancel_button.clicked.connect(self.cancel)
        self._on_progress = self._on_returned = self._on_aborted = self._on_finished = None

    @property
    def running(self) -> bool:
        return self.worker is not None

    def refuse(self, message: str) -> None:
        """A run that cannot start: the reason in the status line and as a notification."""
        self.status.setText(f"not started: {message}")
        show_error(f"{self.title}: {message}")

    def start(
        self,
        job: Callable[..., Generator],
        *args,
        total: int,
        message: str,
        on_progress: Callable | None = None,
        on_returned: Callable | None = None,
        on_aborted: Callable | None = None,
        on_finished: Callable | None = None,
    ) -> bool:
        """Run the generator ``job(*args)`` in a worker; False (and a notice) if one is running."""
        if self.worker is not None:
            show_info(f"{self.title}: already running")
            return False
        self._on_progress, self._on_returned = on_progress, on_returned
        self._on_aborted, self._on_finished = on_aborted, on_finished
        self.progress.setRange(0, max(int(total), 1))
        self.progress.setValue(0)
        self.status.setText(message)
        self.worker = create_worker(job, *args, _ignore_errors=True)
        self.worker.yielded.connect(self._progressed)
        self.worker.returned.connect(self._returned)
        self.worker.errored.connect(self._errored)
        self.worker.aborted.connect(self._aborted)
        self.worker.finished.connect(self._finished)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.worker.start()
        return True

    def cancel(self) -> None:
        if self.worker is not None:
            self.status.setText("cancelling...")
            self.worker.quit()

    # --- the worker's signals, on the UI thread -------------------------------------------------
    def _progressed(self, event) -> None:
        if self._on_progress is not None:
            self._on_progress(event)

    def _returned(self, value) -> None:
        self.progress.setValue(self.progress.maximum())
        if self._on_returned is not None:
            self._on_returned(value)

    def _errored(self, exc: Exception) -> None:
        # napari's GeneratorWorker does not relay worker errors to the notifications by itself
        # (its notifying mixin is never initialised under PyQt6): do it here.
        self.status.setText(f"{self.failed}: {exc}")
        show_error(f"{self.title} failed: {exc}")

    def _aborted(self) -> None:
        self.status.setText("cancelled")
        if self._on_aborted is not None:
            self._on_aborted()

    def _finished(self) -> None:
        self.worker = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if self._on_finished is not None:
            self._on_finished()


class PanelWidget(QWidget):
    """A dock widget whose job runs in its :class:`WorkerPanel` (``self.panel``)."""

    panel: WorkerPanel

    @property
    def running(self) -> bool:
        return self.panel.running

    @property
    def worker(self):
        return self.panel.worker
