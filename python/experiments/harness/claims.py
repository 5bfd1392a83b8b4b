"""Exclusive locks between experiment processes that share a run folder (`--workers`): which
process computes a cell (`Claims`), or trains a shared adapter (`ProcessLock`)."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from .cells import file_name


class ProcessLock:
    """An exclusive lock between processes sharing a run folder: `flock` on a file that holds the
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


class Claims:
    """Which process computes which cell, between processes sharing one run folder: a
    `ProcessLock` per cell key in `folder`, held while the cell is computed."""

    def __init__(self, folder: Path, suffix: str = "") -> None:
        self.folder = Path(folder)
        self.suffix = suffix  # of the claim files (".lock" beside cell files of the same name)
        self._held: dict[Path, ProcessLock] = {}

    def path(self, key: str) -> Path:
        return self.folder / (file_name(key) + self.suffix)

    def claim(self, key: str) -> bool:
        """Take the cell for this process; False when another live process holds it."""
        path = self.path(key)
        if path in self._held:
            return True
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = ProcessLock(path)
        if not lock.try_acquire():
            return False
        self._held[path] = lock
        return True

    def claimed_by_other(self, key: str) -> bool:
        """Whether another live process holds the cell (a claim file left by a dead one does not)."""
        path = self.path(key)
        if path in self._held or not path.exists():
            return False
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # fails only while another process holds it
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def release(self, key: str) -> None:
        lock = self._held.pop(self.path(key), None)
        if lock is not None:
            lock.release()
