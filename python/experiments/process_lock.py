"""Exclusive locks between experiment processes that share a work folder (`--workers`): which
process computes a cell, or which claimed a cell (`ProcessLock`)."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path


class ProcessLock:
    """An exclusive lock between processes sharing `--work`: `flock` on a file that holds the
    owner's pid (for people reading the folder). The kernel drops the lock when its process
    dies, so a lock left by a crash or a restart is free again; no pid is trusted, so a reused
    pid cannot keep a cell locked. Released locks are unlinked, so a finished run leaves none."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def owner(self) -> int | None:
        """The pid written by the lock's last holder (informational), or None."""
        try:
            return int(self.path.read_text() or 0) or None
        except (FileNotFoundError, ValueError):
            return None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        while True:
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            # The holder before us may have unlinked this file on release: a lock on a file that
            # is no longer at `path` excludes nobody, so take the one that is there now.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            self._fd = fd
            return True

    def acquire(self, poll_s: float = 10.0) -> None:
        while not self.try_acquire():
            time.sleep(poll_s)

    def release(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # while still holding it: see try_acquire
            os.close(self._fd)
            self._fd = None
