"""A `HardwareConfig` packed as the compiled crossbar op's keyword arguments.

`HardwareConfig.op_params()` names the crossbar's parameters (plain config, no compiled code);
this module orders them as the compiled extension reads them (`lorafusion/params.h`, exported
as `lorafusion_ext._C.crossbar_param_names`). It sits in `ops/` because it needs the compiled
library: importing the config alone must not load it.
"""

from __future__ import annotations

from typing import Any, Mapping

from lorafusion_ext.hardware import HardwareConfig
from lorafusion_ext.ops import extension

_PARAM_NAMES: tuple[str, ...] = ()


def crossbar_param_names() -> tuple[str, ...]:
    """The packing order of crossbar_mvm's `params`, from the compiled extension (read once)."""
    global _PARAM_NAMES
    if not _PARAM_NAMES:
        _PARAM_NAMES = tuple(extension.load().crossbar_param_names)
    return _PARAM_NAMES


def pack_params(hw: HardwareConfig, overrides: Mapping[str, Any]) -> list[float]:
    """`hw.op_params()` with `overrides` replacing named values, as the list of floats the
    compiled op reads, in `crossbar_param_names()` order.

    Raises:
        ValueError: an override names no crossbar parameter.
        RuntimeError: Python and the compiled extension name different parameters (a stale build).
    """
    # Plain Python on purpose: torch.compile traces it (no caches, no imports once loaded).
    values = hw.op_params()
    for name, value in overrides.items():
        if name not in values:
            raise ValueError(f"op_kwargs: unknown crossbar parameter {name!r}; expected one of {sorted(values)}")
        values[name] = value
    names = crossbar_param_names()
    if len(names) != len(values) or any(n not in values for n in names):
        raise RuntimeError(
            "lorafusion_ext: HardwareConfig.op_params() names "
            f"{sorted(set(values) ^ set(names))} differ between Python and the compiled extension; "
            "rebuild the extension (pip install --no-build-isolation -e .)"
        )
    return [float(values[n]) for n in names]


def op_kwargs(hw: HardwareConfig, **overrides: float | int | bool) -> dict[str, Any]:
    """Keyword arguments of `torch.ops.lorafusion.crossbar_mvm` (and its backward) for `hw`:
    ``{"params": [...]}``, `hw.op_params()` packed in the extension's order. `overrides`
    replace named values, e.g. ``per_input_tile=True``."""
    return {"params": pack_params(hw, overrides)}
