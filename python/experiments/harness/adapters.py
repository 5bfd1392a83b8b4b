"""Trained per-task states (LoRA, head: `lorafusion_ext.training.methods.task_state`) kept
beside a run's cells, so that a later experiment reuses a training run of the same recipe
instead of repeating it (the budget sweep's HWA-LoRAs are the LoRAFusion pool members and the
HWA-LoRA page's per-task adapters).

One file per cell, ``<folder>/<cell key as a file name>.pt``, holding the cell key, the config
the run was computed with (the cell's `RunFolder` config) and the state. Reading checks the
config: an adapter of another recipe is refused, never silently used."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import Tensor

from .cells import file_name


def adapter_path(folder: Path, key: str) -> Path:
    """Where the adapter of cell `key` lives under `folder`."""
    return Path(folder) / f"{file_name(key)}.pt"


def save_adapter(folder: Path, key: str, config: dict, state: dict[str, Tensor]) -> Path:
    """Store `state` (CPU tensors) as cell `key`'s adapter, computed with `config`; written whole
    (write, then rename) so that a reader never sees half a file. Returns the path."""
    path = adapter_path(folder, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({"key": key, "config": json.loads(json.dumps(config)),
                "state": {k: v.detach().cpu().clone() for k, v in state.items()}}, tmp)
    os.replace(tmp, path)
    return path


def adapter_config(folder: Path, key: str) -> dict | None:
    """The config cell `key`'s stored adapter was computed with, or None when there is none: a
    reader compares the fields that decide the training with its own before `load_adapter`."""
    path = adapter_path(folder, key)
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True).get("config") or {}


def load_adapter(folder: Path, key: str, config: dict) -> dict[str, Tensor] | None:
    """Cell `key`'s stored state, or None when there is none. Raises ValueError when it exists
    but was computed with another config (it names the fields that differ)."""
    path = adapter_path(folder, key)
    if not path.exists():
        return None
    rec = torch.load(path, map_location="cpu", weights_only=True)
    want = json.loads(json.dumps(config))
    if rec.get("key") != key or rec.get("config") != want:
        have = rec.get("config") or {}
        diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
        raise ValueError(f"load_adapter: {path} holds {rec.get('key')!r} computed with another config "
                         f"(fields {diff}); expected cell {key!r} with {want}")
    return rec["state"]
