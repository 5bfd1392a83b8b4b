"""A resumable run folder: one JSON file per finished cell; a rerun skips what is there.

Every experiment script keeps its finished cells in a `RunFolder`. A cell is written whole
(write, then rename), so processes sharing the folder never read half a cell and a killed run
keeps every cell it finished. A record is reused only when it matches the run: its noise
stream is `cells.NOISE_STREAM` and, where the folder is given a `config`, its stored
configuration equals it. Records that do not match are left on disk, listed in `stale`, and
never mixed into a table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from . import cells as _cells
from .cells import Cell, PendingCell, file_name, noise_stream_of, same_config, stamp
from .claims import Claims, ProcessLock


def write_json_atomic(path: Path, data: Any, indent: int | None = 2) -> None:
    """Write `data` as JSON to `path` whole: a reader sees the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=indent))
    os.replace(tmp, path)


class RunFolder:
    """The finished cells of one run, ``<root>/<file_name(key)>.json``.

    config: the configuration every reused cell must have been computed with, stored in each
        record under `config_field` (None: the folder holds one configuration, which the
        script checks itself, e.g. with a settings file).
    config_field: the record field holding the configuration ("key" in the scripts written
        before this harness, whose cell name is then the file name).
    legacy_log: an append-only JSON-lines log of an older layout (one record per line, keyed by
        its "key" field): read as finished cells, never written.
    """

    def __init__(self, root: Path, *, config: Mapping[str, Any] | None = None, config_field: str = "key",
                 legacy_log: Path | None = None) -> None:
        self.root = Path(root)
        self.config = dict(config) if config is not None else None
        self.config_field = config_field
        self.legacy_log = legacy_log
        #: key -> why, for the records found but not reused at the last `load`.
        self.stale: dict[str, str] = {}

    # ------------------------------------------------------------------ reading
    def path(self, key: str) -> Path:
        return self.root / f"{file_name(key)}.json"

    def _key_of(self, rec: Mapping[str, Any], path: Path) -> str:
        # Cells keyed by a string carry it; cells whose "key" is their configuration are named by the file.
        key = rec.get("key")
        return key if isinstance(key, str) else path.stem

    def _why_not(self, rec: Mapping[str, Any]) -> str | None:
        # Read at each call, not bound at import: a bump (or a test's) takes effect everywhere.
        if noise_stream_of(rec) != _cells.NOISE_STREAM:
            return f"noise stream {noise_stream_of(rec)}, this run {_cells.NOISE_STREAM}"
        if self.config is not None and not same_config(rec.get(self.config_field), self.config):
            return "another configuration"
        return None

    def records(self) -> Iterable[tuple[str, dict]]:
        """(key, record) of every cell on disk, matching or not (the log first, files after)."""
        if self.legacy_log is not None and self.legacy_log.is_file():
            for line in self.legacy_log.read_text().splitlines():
                if line.strip():
                    rec = json.loads(line)
                    yield rec["key"], rec
        if self.root.is_dir():
            for path in sorted(self.root.glob("*.json")):
                try:
                    rec = json.loads(path.read_text())
                except (OSError, json.JSONDecodeError):
                    continue  # removed meanwhile, or not a cell
                if isinstance(rec, dict):
                    yield self._key_of(rec, path), rec

    def load(self) -> dict[str, dict]:
        """key -> record of every finished cell this run reuses."""
        done: dict[str, dict] = {}
        self.stale = {}
        for key, rec in self.records():
            why = self._why_not(rec)
            if why is None:
                done[key] = rec
                self.stale.pop(key, None)
            elif key not in done:
                self.stale[key] = why
        return done

    def get(self, key: str) -> dict | None:
        path = self.path(key)
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return self.load().get(key) if self.legacy_log is not None else None
        return rec if self._why_not(rec) is None else None

    def empty(self) -> bool:
        """No cell on disk at all (a fresh clone's run folder), matching or not."""
        return next(iter(self.records()), None) is None

    # ------------------------------------------------------------------ writing
    def store(self, key: str, record: dict) -> dict:
        """Write a newly computed cell (stamped with the noise stream and, if any, the config)."""
        rec = stamp(record)
        if self.config is not None:
            rec[self.config_field] = self.config
        elif not isinstance(rec.get("key"), str):
            rec["key"] = key
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path(key), rec)
        return rec

    def adopt(self, records: Mapping[str, dict]) -> list[str]:
        """Take finished cells computed elsewhere (a committed report, another run) as they are,
        only into an empty folder: in a used one, a cell deleted to have it recomputed must stay
        deleted. A record that does not match this run is not taken. Returns the keys taken."""
        if not self.empty():
            return []
        self.root.mkdir(parents=True, exist_ok=True)
        taken = []
        for key, rec in records.items():
            if isinstance(rec, dict) and self._why_not(rec) is None:
                write_json_atomic(self.path(key), rec)
                taken.append(key)
        return taken

    def add(self, key: str, record: dict) -> None:
        """Add one record as it is (an imported cell); it is not restamped."""
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path(key), record)

    # ------------------------------------------------------------------ computing
    def compute_once(self, key: str, compute: Callable[[], dict], claims: Claims,
                     log: Callable[[str], None] = print) -> dict | None:
        """The cell `key`: read back when finished; else computed here under a claim and stored.
        None when another process holds the claim (it computes the cell)."""
        stored = self.get(key)
        if stored is not None:
            return stored
        if not claims.claim(key):
            owner = ProcessLock(claims.path(key)).owner()
            log(f"cell {key}: computed by process {owner}; skipped here")
            return None
        try:
            stored = self.get(key)  # finished while this process waited for the claim
            if stored is not None:
                return stored
            t0 = time.perf_counter()
            result = compute()
            result["wall_s"] = time.perf_counter() - t0
            return self.store(key, result)
        finally:
            claims.release(key)


def run_queue(cells: list[Cell], folder: RunFolder, claims: Claims, compute: Callable[[Cell, dict], dict], *,
              after_cell: Callable[[Cell, dict], None] | None = None, before_pass: Callable[[], None] | None = None,
              busy_elsewhere: Callable[[], bool] | None = None, log: Callable[[str], None] = print,
              poll_s: float = 20.0) -> None:
    """Compute every unfinished cell of `cells`, in priority order, sharing the queue with the
    other processes of the folder: each cell is claimed while it is computed; after each cell the
    queue restarts from the top (the highest-priority cell that can run now). `compute(cell,
    done)` may raise `PendingCell` (the cell waits for another); the loop then waits while a
    cell it needs is claimed elsewhere (`busy_elsewhere`: also in another folder), and ends when
    nothing is left that can run."""
    while True:
        ran = waiting = False
        if before_pass is not None:
            before_pass()
        done = folder.load()
        for cell in cells:
            if cell.key in done:
                continue
            if claims.claimed_by_other(cell.key) or not claims.claim(cell.key):
                waiting = True
                continue
            done = folder.load()  # read again under the claim: another process may have finished it
            if cell.key in done:
                claims.release(cell.key)
                continue
            try:
                rec = compute(cell, done)
            except PendingCell as why:
                claims.release(cell.key)
                waiting = waiting or any(claims.claimed_by_other(c.key) for c in cells) or (
                    busy_elsewhere is not None and busy_elsewhere())
                log(f"{cell.key}: waits ({why})")
                continue
            rec["finished_at"] = time.time()
            rec["worker"] = os.getpid()
            rec = folder.store(cell.key, rec)
            claims.release(cell.key)
            if after_cell is not None:
                after_cell(cell, rec)
            ran = True
            break
        if ran:
            continue
        if not waiting:
            return
        time.sleep(poll_s)  # cells of other processes are in flight


def start_workers(script: Path, argv: list[str], workers: int) -> list[subprocess.Popen]:
    """Start `workers - 1` more processes of `script` with `argv` (one worker each, no progress
    bars) to share the run folder's queue with this one; wait for them once this one is done."""
    cmd = [sys.executable, str(Path(script).resolve()), *argv, "--workers", "1", "--no-progress"]
    return [subprocess.Popen(cmd) for _ in range(workers - 1)]
