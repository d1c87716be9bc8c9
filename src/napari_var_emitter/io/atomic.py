"""Atomic file writes: a temporary file beside the target, flushed to disk, then ``os.replace``.

An interrupted write (an exception, Ctrl-C, SIGKILL, a full disk) leaves the previous file
intact and never a partial file at the target's name. The temporary file is named
``.<name>.<pid>.<random>.tmp`` in the target's folder: it is removed when the write fails, and a
later write to the same target removes the ones whose process is gone (a killed run's).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

SUFFIX = ".tmp"
DEFAULT_MODE = 0o644  # an ordinary file (mkstemp makes it private)


def _prefix(path: Path) -> str:
    return f".{path.name}."


def temporaries(path: str | Path) -> list[Path]:
    """The temporary files of writes to ``path`` (finished or not) that are still on disk."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    prefix = _prefix(path)
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return [folder / n for n in names if n.startswith(prefix) and n.endswith(SUFFIX)]


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # perhaps another thread of ours is writing it
    try:
        os.kill(pid, 0)  # signal 0: a check, nothing is sent
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: someone else's live process
        return True
    return True


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove the temporary files of writes to ``path`` whose process has died; return them."""
    if os.name != "posix":  # os.kill(pid, 0) is not a harmless check elsewhere
        return []
    removed = []
    prefix = _prefix(Path(path))
    for tmp in temporaries(path):
        pid_text = tmp.name[len(prefix) :].split(".", 1)[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def _fsync(path: str | Path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if directory:
            return  # some systems cannot open a folder: nothing more to do
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` in one step.

    The new file keeps the mode of the file it replaces (else 0644). On any exception the
    temporary file is removed and the target is untouched.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(path))
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        mode = DEFAULT_MODE
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{_prefix(path)}{os.getpid()}.", suffix=SUFFIX)
    os.close(fd)
    try:
        yield Path(tmp)
        _fsync(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if os.name == "posix":
        _fsync(folder, directory=True)  # the rename itself reaches the disk


def write_text(path: str | Path, text: str) -> Path:
    """Write a whole text file atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
