"""Exclusive locks between experiment processes that share a work folder (`--workers`): which
process computes a cell, and whether the process that claimed one is still alive."""

from __future__ import annotations

import os
import time
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (one owned by another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ProcessLock:
    """An exclusive lock between processes sharing `--work`: a file holding the owner's pid,
    created with O_EXCL; a lock whose owner has died is taken over."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.held = False

    def owner(self) -> int | None:
        try:
            return int(self.path.read_text() or 0) or None
        except (FileNotFoundError, ValueError):
            return None

    def try_acquire(self) -> bool:
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pid = self.owner()
                if pid is not None and pid_alive(pid):
                    return False
                if pid is None and time.time() - self._mtime() < 5.0:
                    return False  # being written by its creator
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            self.held = True
            return True

    def acquire(self, poll_s: float = 10.0) -> None:
        while not self.try_acquire():
            time.sleep(poll_s)

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def _mtime(self) -> float:
        try:
            return self.path.stat().st_mtime
        except FileNotFoundError:
            return 0.0
