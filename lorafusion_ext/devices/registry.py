"""The device-model registry: name -> model class (`get_device_model`, `device_model_names`).

Above every model and `base` (it imports them; none imports it), so a new model is one module
plus one line here (docs/extending.md).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Tuple

from .base import DeviceModel, IdealDeviceModel
from .hermes import HermesModel
from .pcm import CustomDriftPCMLikeModel, PCMLikeModel
from .reram import ReRAMModel
from .reram_cmo import ReRamCMOModel
from .state_independent import StateIndependentModel


def _registry() -> Dict[str, type]:
    return {
        "pcm": PCMLikeModel,
        "pcm_custom_drift": CustomDriftPCMLikeModel,
        "state_independent": StateIndependentModel,
        "hermes": HermesModel,
        "reram": ReRAMModel,
        "reram_cmo": ReRamCMOModel,
        "none": IdealDeviceModel,
    }


def device_model_names() -> Tuple[str, ...]:
    """Names accepted by :func:`get_device_model`."""
    return tuple(_registry())


def get_device_model(name: str, **overrides: Any) -> DeviceModel:
    """Build a device model by name with optional parameter overrides.

    Args:
        name: ``"pcm"`` (:class:`PCMLikeModel`), ``"pcm_custom_drift"``
            (:class:`CustomDriftPCMLikeModel`), ``"state_independent"`` (:class:`StateIndependentModel`),
            ``"hermes"`` (:class:`HermesModel`), ``"reram"`` (:class:`ReRAMModel`), ``"reram_cmo"``
            (:class:`ReRamCMOModel`) or ``"none"`` (:class:`IdealDeviceModel`); case-insensitive.
        **overrides: constructor fields of that model, e.g. ``g_max=40.0``.

    Raises:
        ValueError: unknown name (the message lists the known ones), an override that is not a field
            of the model, or an out-of-range value (raised by the model's validation).
    """
    registry = _registry()
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in registry:
        raise ValueError(
            f"unknown device model {name!r}; known device models: {sorted(registry)}"
        )
    cls = registry[key]
    fields = [f.name for f in dataclasses.fields(cls) if f.init]
    bad = sorted(set(overrides) - set(fields))
    if bad:
        raise ValueError(
            f"device model {key!r} has no parameter(s) {bad}; its parameters are {fields}"
        )
    return cls(**overrides)
