"""Conversion between AIHWKIT 1.1 inference noise models and `hardware.Device`.

`device_from_noise_model` reads an ``rpu_config.noise_model`` into a `Device` (a name of
`lorafusion_ext.devices.get_device_model` and its options); `noise_model_from_device` builds the
AIHWKIT noise model back. Every attribute of the AIHWKIT model is carried over: an attribute this
package does not model, a non-default conductance converter, or a value the device model rejects
raises a ValueError that names the ``rpu_config.noise_model`` field.

Options hold only floats, ints and (nested) tuples, so a `HardwareConfig` stays hashable and
JSON-serialisable.
"""

from __future__ import annotations

import dataclasses

from typing import Any, Callable

from lorafusion_ext.devices import (
    CustomDriftPCMLikeModel,
    HermesModel,
    PCMLikeModel,
    ReRAMModel,
    ReRamCMOModel,
    StateIndependentModel,
    get_device_model,
)
from lorafusion_ext.devices.reram import WAN2022_COEFFS
from lorafusion_ext.hardware import Device

__all__ = ["device_from_noise_model", "noise_model_from_device", "NOISE_MODEL_NAMES"]

#: AIHWKIT class name -> lorafusion_ext device model name.
NOISE_MODEL_NAMES: dict[str, str] = {
    "PCMLikeNoiseModel": "pcm",
    "CustomDriftPCMLikeNoiseModel": "pcm_custom_drift",
    "StateIndependentNoiseModel": "state_independent",
    "HermesNoiseModel": "hermes",
    "ReRamWan2022NoiseModel": "reram",
    "ReRamCMONoiseModel": "reram_cmo",
}

_WHERE = "rpu_config.noise_model"


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def _attr(nmodel: Any, name: str) -> Any:
    if not hasattr(nmodel, name):
        raise ValueError(
            f"{_WHERE}.{name} is not set on this {type(nmodel).__name__} (AIHWKIT 1.1 drops "
            f"{name} when it is passed to the constructor together with explicit coefficients, "
            "and would fail when programming); set the attribute on the noise model"
        )
    return getattr(nmodel, name)


def _check_attributes(nmodel: Any, known: set[str]) -> None:
    """Every attribute of `nmodel` must be one this conversion reads."""
    extra = sorted(set(vars(nmodel)) - known - {"g_converter"})
    if extra:
        raise ValueError(
            f"{_WHERE}.{extra[0]} = {getattr(nmodel, extra[0])!r} is not modelled by lorafusion_ext "
            f"({type(nmodel).__name__}: carried over are {sorted(known)})"
        )


def _check_single_pair(nmodel: Any) -> None:
    from aihwkit.inference.converter.conductance import SinglePairConductanceConverter

    conv = nmodel.g_converter
    if type(conv) is not SinglePairConductanceConverter or float(conv.g_min) != 0.0:
        raise ValueError(
            f"{_WHERE}.g_converter = {conv}; expected SinglePairConductanceConverter with g_min = 0 "
            "(the converter lorafusion_ext's single-pair device models implement)"
        )
    if float(conv.g_max) != float(nmodel.g_max):
        raise ValueError(
            f"{_WHERE}.g_max = {nmodel.g_max!r} differs from g_converter.g_max = {conv.g_max!r}; "
            "expected equal values (AIHWKIT maps weights with the converter's)"
        )


def _pcm_options(nmodel: Any) -> dict[str, Any]:
    _check_single_pair(nmodel)
    return {
        "g_max": float(nmodel.g_max),
        "prog_coeff": _floats(nmodel.prog_coeff),
        "prog_coeff_g_max_reference": float(_attr(nmodel, "prog_coeff_g_max_reference")),
        "t_0": float(nmodel.t_0),
        "t_read": float(nmodel.t_read),
        "prog_noise_scale": float(nmodel.prog_noise_scale),
        "read_noise_scale": float(nmodel.read_noise_scale),
        "drift_scale": float(nmodel.drift_scale),
    }


_PCM_ATTRS = {
    "g_max", "prog_coeff", "prog_coeff_g_max_reference", "t_0", "t_read",
    "prog_noise_scale", "read_noise_scale", "drift_scale",
}


def _from_pcm(nmodel: Any) -> dict[str, Any]:
    _check_attributes(nmodel, _PCM_ATTRS)
    return _pcm_options(nmodel)


def _from_custom_drift(nmodel: Any) -> dict[str, Any]:
    _check_attributes(nmodel, _PCM_ATTRS | {"custom_drift_model"})
    curve = nmodel.custom_drift_model
    keys = ("g_lst", "nu_mean_lst", "nu_std_lst")
    if not isinstance(curve, dict) or sorted(curve) != sorted(keys):
        raise ValueError(
            f"{_WHERE}.custom_drift_model = {curve!r}; expected a dict with exactly the lists {list(keys)}"
        )
    return {**_pcm_options(nmodel), **{k: _floats(curve[k]) for k in keys}}


def _from_state_independent(nmodel: Any) -> dict[str, Any]:
    known = {
        "g_max", "prog_coeff", "prog_noise_scale", "drift_nu_mean", "drift_nu_std", "drift_scale",
        "t_0", "read_noise_scale", "t_read",
    }
    _check_attributes(nmodel, known)
    _check_single_pair(nmodel)
    options = {k: float(getattr(nmodel, k)) for k in known - {"prog_coeff"}}
    options["prog_coeff"] = _floats(nmodel.prog_coeff)
    return options


def _from_hermes(nmodel: Any) -> dict[str, Any]:
    _check_attributes(nmodel, _PCM_ATTRS | {"num_devices"})
    return {**_pcm_options(nmodel), "num_devices": int(nmodel.num_devices)}


def _from_reram(nmodel: Any) -> dict[str, Any]:
    # prog_coeff_g_max_reference: AIHWKIT 1.1 sets it for its default table and never reads it.
    _check_attributes(nmodel, {"g_max", "coeff_dic", "noise_scale", "coeff_g_max_reference",
                               "prog_coeff_g_max_reference"})
    _check_single_pair(nmodel)
    table = {float(t): _floats(c) for t, c in nmodel.coeff_dic.items()}
    if table != WAN2022_COEFFS:
        raise ValueError(
            f"{_WHERE}.coeff_dic = {nmodel.coeff_dic!r} is not modelled through from_aihwkit (only "
            "the Wan et al. 2022 table); build lorafusion_ext.devices.ReRAMModel(coeff_dic=...) instead"
        )
    # Only what differs from ReRAMModel's defaults: a default model stays Device("reram").
    default = ReRAMModel()
    options: dict[str, Any] = {}
    if float(nmodel.g_max) != default.g_max:
        options["g_max"] = float(nmodel.g_max)
    if float(nmodel.noise_scale) != default.noise_scale:
        options["noise_scale"] = float(nmodel.noise_scale)
    reference = float(_attr(nmodel, "coeff_g_max_reference"))
    if reference != float(nmodel.g_max):
        options["coeff_g_max_reference"] = reference
    return options


def _from_reram_cmo(nmodel: Any) -> dict[str, Any]:
    from aihwkit.inference.converter.conductance import SingleDeviceConductanceConverter

    _check_attributes(nmodel, {
        "g_max", "g_min", "coeff_g_max_reference", "coeff_dict", "prog_noise_scale",
        "read_noise_scale", "drift_scale", "decay_dict", "read_dict", "acceptance_range",
    })
    conv = nmodel.g_converter
    if type(conv) is not SingleDeviceConductanceConverter or (float(conv.g_max), float(conv.g_min)) != (
        float(nmodel.g_max), float(nmodel.g_min)
    ):
        raise ValueError(
            f"{_WHERE}.g_converter = {conv}; expected the SingleDeviceConductanceConverter of the "
            f"model's g_max = {nmodel.g_max!r}, g_min = {nmodel.g_min!r}"
        )
    if float(nmodel.coeff_g_max_reference) != float(nmodel.g_max):
        raise ValueError(
            f"{_WHERE}.coeff_g_max_reference = {nmodel.coeff_g_max_reference!r}; expected g_max "
            f"({nmodel.g_max!r}), what ReRamCMONoiseModel sets (a rescaled fit is not modelled)"
        )
    decay, read = nmodel.decay_dict, nmodel.read_dict
    if not isinstance(decay, dict) or sorted(decay) != ["mean", "std"] or len(decay["mean"]) != 1 or len(
        decay["std"]
    ) != 2:
        raise ValueError(
            f"{_WHERE}.decay_dict = {decay!r}; expected {{'mean': [a], 'std': [b, c]}} (AIHWKIT reads "
            "mean[0], std[0] and std[1] only)"
        )
    if not isinstance(read, dict) or sorted(read) != ["K", "t_read"]:
        raise ValueError(f"{_WHERE}.read_dict = {read!r}; expected exactly the keys 'K' and 't_read'")
    return {
        "g_max": float(nmodel.g_max),
        "g_min": float(nmodel.g_min),
        "coeff_dict": tuple(sorted((float(k), _floats(v)) for k, v in nmodel.coeff_dict.items())),
        "acceptance_range": float(nmodel.acceptance_range),
        "prog_noise_scale": float(nmodel.prog_noise_scale),
        "read_noise_scale": float(nmodel.read_noise_scale),
        "drift_scale": float(nmodel.drift_scale),
        "decay_mean": float(decay["mean"][0]),
        "decay_std": _floats(decay["std"]),
        "read_k": float(read["K"]),
        "t_read": float(read["t_read"]),
    }


_READERS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "pcm": _from_pcm,
    "pcm_custom_drift": _from_custom_drift,
    "state_independent": _from_state_independent,
    "hermes": _from_hermes,
    "reram": _from_reram,
    "reram_cmo": _from_reram_cmo,
}


def device_from_noise_model(nmodel: Any, drift_compensation: bool) -> Device:
    """The `Device` of an AIHWKIT noise model (exact class match, not subclasses).

    Raises:
        ValueError: an unknown noise model class, an attribute that is not modelled, a converter
            other than the model's own, or a value the device model rejects (the message names the
            ``rpu_config.noise_model`` field).
    """
    cls = type(nmodel).__name__
    name = NOISE_MODEL_NAMES.get(cls) if type(nmodel).__module__.startswith("aihwkit.") else None
    if name is None:
        raise ValueError(f"{_WHERE} = {cls}; expected one of {sorted(NOISE_MODEL_NAMES)}")
    options = _READERS[name](nmodel)
    try:
        model = get_device_model(name, **options)
    except ValueError as err:
        raise ValueError(f"{_WHERE} ({cls}): {err}") from None
    return Device(name, options=tuple(sorted(_minimal_options(name, options, model).items())),
                  drift_compensation=drift_compensation)


def _differs(a: Any, b: Any) -> bool:
    try:
        return bool(a != b)
    except (TypeError, ValueError, RuntimeError):  # e.g. arrays: treat as different
        return True


def _behaviour(model: Any) -> dict[str, Any]:
    """Every field of a device model, as its `effective_<field>` where it has one."""
    return {f.name: getattr(model, f"effective_{f.name}", getattr(model, f.name))
            for f in dataclasses.fields(model) if f.init}


def _minimal_options(name: str, options: dict[str, Any], model: Any) -> dict[str, Any]:
    """`options` without those our model's defaults already give, so that `Device("pcm")` and a
    default AIHWKIT model round-trip to equal configs; kept whole unless the reduced options build
    a model that behaves the same field for field."""
    target = _behaviour(model)
    kept = dict(options)
    for key in sorted(options):
        trial = {k: v for k, v in kept.items() if k != key}
        try:
            if not any(_differs(a, target[k]) for k, a in _behaviour(get_device_model(name, **trial)).items()):
                kept = trial
        except ValueError:  # the model needs this option (e.g. the custom drift curve)
            continue
    return kept


def noise_model_from_device(device: Device) -> Any:
    """The AIHWKIT noise model of `device` (every field of the device model carried over).

    Raises:
        ValueError: a device model without an AIHWKIT counterpart (``"none"``), or options that
            AIHWKIT's model cannot hold (a ReRAM table other than Wan et al. 2022's).
    """
    if device.name == "none":
        raise ValueError(
            "hardware.device.name = 'none' has no AIHWKIT noise model; expected one of "
            f"{sorted(_READERS)}"
        )
    model = get_device_model(device.name, **dict(device.options))
    if isinstance(model, CustomDriftPCMLikeModel):
        from aihwkit.inference.noise.pcm import CustomDriftPCMLikeNoiseModel

        noise = CustomDriftPCMLikeNoiseModel(
            custom_drift_model={
                "g_lst": list(model.g_lst),
                "nu_mean_lst": list(model.nu_mean_lst),
                "nu_std_lst": list(model.nu_std_lst),
            },
            **_pcm_kwargs(model),
        )
        # AIHWKIT 1.1 keeps a passed reference only by accident; set the effective one explicitly.
        noise.prog_coeff_g_max_reference = model.effective_prog_coeff_g_max_reference
        return noise
    if isinstance(model, PCMLikeModel):
        from aihwkit.inference.noise.pcm import PCMLikeNoiseModel

        noise = PCMLikeNoiseModel(**_pcm_kwargs(model))
        noise.prog_coeff_g_max_reference = model.effective_prog_coeff_g_max_reference
        return noise
    if isinstance(model, StateIndependentModel):
        from aihwkit.inference.noise.custom import StateIndependentNoiseModel

        return StateIndependentNoiseModel(
            g_max=model.g_max, prog_coeff=list(model.prog_coeff), prog_noise_scale=model.prog_noise_scale,
            drift_nu_mean=model.drift_nu_mean, drift_nu_std=model.drift_nu_std,
            drift_scale=model.drift_scale, t_0=model.t_0, read_noise_scale=model.read_noise_scale,
            t_read=model.t_read,
        )
    if isinstance(model, HermesModel):
        from aihwkit.inference.noise.hermes import HermesNoiseModel

        noise = HermesNoiseModel(
            prog_coeff=list(model.prog_coeff), num_devices=model.num_devices, g_max=model.g_max,
            t_read=model.t_read, t_0=model.t_0, prog_noise_scale=model.prog_noise_scale,
            read_noise_scale=model.read_noise_scale, drift_scale=model.drift_scale,
        )
        noise.prog_coeff_g_max_reference = model.prog_coeff_g_max_reference
        return noise
    if isinstance(model, ReRAMModel):
        from aihwkit.inference.noise.reram import ReRamWan2022NoiseModel

        if dict(model.coeff_dic) != WAN2022_COEFFS:
            raise ValueError(
                "hardware.device.options['coeff_dic'] has no ReRamWan2022NoiseModel equivalent here "
                "(only the Wan et al. 2022 table converts)"
            )
        noise = ReRamWan2022NoiseModel(g_max=model.g_max, noise_scale=model.noise_scale)
        noise.coeff_g_max_reference = model.effective_coeff_g_max_reference
        return noise
    if isinstance(model, ReRamCMOModel):
        from aihwkit.inference.noise.reram import ReRamCMONoiseModel

        return ReRamCMONoiseModel(
            coeff_dict={k: list(v) for k, v in model.coeff_dict},
            g_max=model.g_max, g_min=model.g_min, prog_noise_scale=model.prog_noise_scale,
            read_noise_scale=model.read_noise_scale, drift_scale=model.drift_scale,
            decay_dict={"mean": [model.decay_mean], "std": list(model.decay_std)},
            read_dict={"K": model.read_k, "t_read": model.t_read},
            acceptance_range=model.acceptance_range,
        )
    raise ValueError(
        f"hardware.device.name = {device.name!r} has no AIHWKIT noise model; expected one of {sorted(_READERS)}"
    )


def _pcm_kwargs(model: PCMLikeModel) -> dict[str, Any]:
    return {
        "prog_coeff": list(model.prog_coeff), "g_max": model.g_max, "t_read": model.t_read,
        "t_0": model.t_0, "prog_noise_scale": model.prog_noise_scale,
        "read_noise_scale": model.read_noise_scale, "drift_scale": model.drift_scale,
    }
