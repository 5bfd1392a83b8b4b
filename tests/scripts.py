"""The repository's scripts (experiments, benchmarks, build helpers) as modules, for the tests:
one loader instead of a copy of it in each test file."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "python" / "experiments"


def load_file(name: str, path: Path | str) -> ModuleType:
    """The Python file `path` as the module `name` (registered in ``sys.modules``, where
    dataclasses resolve their annotations)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"load_file: {path} is not a Python file")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def load_experiment(name: str) -> ModuleType:
    """`python/experiments/<name>.py`, with its folder on ``sys.path`` (the scripts' shared
    packages, harness, sweep and the others, import as top-level packages)."""
    if str(EXPERIMENTS) not in sys.path:
        sys.path.insert(0, str(EXPERIMENTS))
    return load_file(name, EXPERIMENTS / f"{name}.py")
