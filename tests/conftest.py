"""Fixtures shared by the widget tests."""

import pytest


@pytest.fixture
def fresh_session():
    """The widgets' session registry (trained models, camera), empty before and after a test."""
    from napari_var_emitter.plugin.session import SESSION

    SESSION.clear()
    yield SESSION
    SESSION.clear()


class ErrorNotifications:
    """napari error notifications shown since ``mark()`` (or since the fixture was made)."""

    def __init__(self):
        self.mark()

    @staticmethod
    def _records():
        from napari.utils.notifications import notification_manager

        return notification_manager.records

    def mark(self) -> None:
        self.start = len(self._records())

    def messages(self) -> list[str]:
        from napari.utils.notifications import NotificationSeverity

        new = self._records()[self.start :]
        return [str(n.message) for n in new if n.severity == NotificationSeverity.ERROR]


@pytest.fixture
def error_notifications():
    return ErrorNotifications()
