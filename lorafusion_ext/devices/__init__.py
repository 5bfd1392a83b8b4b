"""Conductance models of analog crossbar devices (pure PyTorch, no compiled code).

* :class:`PCMLikeModel` - AIHWKIT ``PCMLikeNoiseModel`` (programming noise, drift, 1/f read noise).
* :class:`CustomDriftPCMLikeModel` - AIHWKIT ``CustomDriftPCMLikeNoiseModel`` (PCM, user ν curve).
* :class:`StateIndependentModel` - AIHWKIT ``StateIndependentNoiseModel`` (state-independent drift).
* :class:`HermesModel` - AIHWKIT ``HermesNoiseModel`` (PCM of the IBM HERMES chip, 1 or 2 devices).
* :class:`ReRAMModel` - AIHWKIT ``ReRamWan2022NoiseModel`` (Wan et al., Nature 2022).
* :class:`ReRamCMOModel` - AIHWKIT ``ReRamCMONoiseModel`` (CMO/HfOx ReRAM, one device per weight).
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
from .hermes import HERMES_G_MAX, HERMES_PROG_COEFF, HERMES_T_0, HermesModel
from .pcm import PCM_DEFAULT_PROG_COEFF, CustomDriftPCMLikeModel, PCMLikeModel
from .reram import RERAM_TIME_POLICIES, WAN2022_COEFFS, ReRAMModel
from .reram_cmo import CMO_COEFF_DICT, ReRamCMOModel
from .registry import device_model_names, get_device_model
from .state_independent import STATE_INDEPENDENT_DEFAULT_PROG_COEFF, StateIndependentModel

__all__ = [
    "ZERO_CLIP",
    "READOUT_MIN",
    "DeviceModel",
    "IdealDeviceModel",
    "PCMLikeModel",
    "CustomDriftPCMLikeModel",
    "StateIndependentModel",
    "HermesModel",
    "ReRAMModel",
    "ReRamCMOModel",
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
    "STATE_INDEPENDENT_DEFAULT_PROG_COEFF",
    "HERMES_G_MAX",
    "HERMES_T_0",
    "HERMES_PROG_COEFF",
    "CMO_COEFF_DICT",
]
