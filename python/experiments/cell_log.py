"""The finished-cells log of the resumable experiments: one JSON object per line, keyed by
"key"; a rerun reads it and skips what is there."""

from __future__ import annotations

import json
import os
from pathlib import Path


def load_cells(path: Path) -> dict[str, dict]:
    """key -> record of every finished cell in `path` (empty when the file does not exist)."""
    done: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                done[rec["key"]] = rec
    return done


def append_cell(path: Path, rec: dict) -> None:
    """Append one finished cell, flushed to disk (a killed run keeps every finished cell)."""
    with path.open("a") as f:
        f.write(json.dumps(rec) + "\n")
        f.flush()
        os.fsync(f.fileno())
