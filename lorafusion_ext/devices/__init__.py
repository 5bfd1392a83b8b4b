"""Conductance models of analog crossbar devices (pure PyTorch, no compiled code).

* :class:`PCMLikeModel` - AIHWKIT ``PCMLikeNoiseModel`` (programming noise, drift, 1/f read noise).
* :class:`ReRAMModel` - AIHWKIT ``ReRamWan2022NoiseModel`` (Wan et al., Nature 2022).
* :class:`IdealDeviceModel` - no non-idealities (``"none"``).
* :class:`GlobalDriftCompensation`, :class:`PerColumnDriftCompensation` - drift compensation read-outs.

Units: conductances in µS, times in seconds. Typical use::

    model = get_device_model("pcm")
    state = model.program(w_tile, generator=gen)       # once per programming
    w_t = model.drift(state, 86400.0, generator=gen)   # once per inference time
"""

from .base import (
    ZERO_CLIP,
    DeviceModel,
    IdealDeviceModel,
    ProgrammedState,
    device_model_names,
    get_device_model,
    single_pair_to_conductances,
    single_pair_to_weights,
)
from .compensation import (
    READOUT_MIN,
    GlobalDriftCompensation,
    PerColumnDriftCompensation,
    compensation_alpha,
    get_drift_compensation,
)
from .pcm import PCM_DEFAULT_PROG_COEFF, PCMLikeModel
from .reram import RERAM_TIME_POLICIES, WAN2022_COEFFS, ReRAMModel

__all__ = [
    "ZERO_CLIP",
    "READOUT_MIN",
    "DeviceModel",
    "IdealDeviceModel",
    "PCMLikeModel",
    "ReRAMModel",
    "ProgrammedState",
    "GlobalDriftCompensation",
    "PerColumnDriftCompensation",
    "compensation_alpha",
    "get_device_model",
    "get_drift_compensation",
    "device_model_names",
    "single_pair_to_conductances",
    "single_pair_to_weights",
    "PCM_DEFAULT_PROG_COEFF",
    "WAN2022_COEFFS",
    "RERAM_TIME_POLICIES",
]
