"""An OS-level lock on a run directory, so two processes never write the same run.

``fcntl.flock`` is held by the open file: the kernel drops it when the process
exits, however it exits (SIGKILL included), so a lock left behind by a killed
run never blocks the next one. The holder's PID is written into the file so
the refusal can name it. (The ``filelock`` package opens its file with
``O_TRUNC``, which would erase the holder's PID before we could read it.)
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from tuneforge.errors import RunDirError


class RunLock:
    """An exclusive, non-blocking lock on ``path``; :meth:`release` (or process exit) frees it."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: Path) -> "RunLock":
        """Take the lock or fail at once.

        Raises:
            RunDirError: another process holds it (the message names its PID).
        """
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"process {holder}" if holder else "another process"
            raise RunDirError(
                f"run directory {path.parent} is in use by {who} (lock {path}); wait for it to finish, "
                "or start a new run with --set name=<new name>"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def holder_pid(path: Path) -> int | None:
    """The PID holding the lock at ``path``, or ``None`` when nobody holds it (or there is no file)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(fd) or -1
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None
