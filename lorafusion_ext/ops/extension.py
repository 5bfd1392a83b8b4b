"""Loading of the compiled extension `_C`, with one readable error when it cannot load."""

from __future__ import annotations

import importlib
import json
from importlib import resources
from typing import Any

import torch

_REBUILD = (
    "Rebuild it against the installed torch: `pip install --no-build-isolation -e .` "
    "(or `make install`) from the lorafusion_ext source folder."
)


def _read_build_info() -> dict[str, Any] | None:
    try:
        text = resources.files("lorafusion_ext").joinpath("_build_info.json").read_text()
    except (FileNotFoundError, OSError):
        return None
    return json.loads(text)


def load() -> Any:
    """Import `lorafusion_ext._C` (which registers `torch.ops.lorafusion.*`) and return it.

    Raises:
        ImportError: the extension is missing or was built against another torch.
    """
    info = _read_build_info()
    if info is not None and info.get("torch_version") != torch.__version__:
        raise ImportError(
            f"lorafusion_ext was built against torch {info.get('torch_version')} but torch "
            f"{torch.__version__} is installed. {_REBUILD}"
        )
    try:
        return importlib.import_module("lorafusion_ext._C")
    except ImportError as exc:
        raise ImportError(
            f"lorafusion_ext's compiled extension could not be loaded ({exc}). {_REBUILD}"
        ) from exc


def build_info() -> dict[str, Any]:
    """What the extension was built with: torch version, CUDA or not, CUDA archs, CPU flags."""
    ext = load()
    info = _read_build_info() or {}
    return {
        "torch_version": ext.torch_version,
        "with_cuda": bool(ext.with_cuda),
        "cuda_archs": [a for a in str(ext.cuda_archs).replace(";", ",").split(",") if a],
        "cpu_flags": ext.cpu_flags,
        "nvcc": info.get("nvcc", ""),
    }
