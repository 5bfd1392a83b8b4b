"""Conversion between `HardwareConfig` and AIHWKIT's `TorchInferenceRPUConfig`.

Only the subset of AIHWKIT that lorafusion_ext models converts; any other field set to a
non-default value raises a ValueError that names it, so a config is never silently changed.

The public door is `HardwareConfig.from_aihwkit` / `to_aihwkit`, which import this module
lazily, on call: the package's one documented import circle (docs/architecture.md, "The
Python layers"). AIHWKIT-Lightning configs pass through the same door, on to
`interop.lightning_config`.
"""

from __future__ import annotations

from typing import Any

from lorafusion_ext import hardware as hw
from lorafusion_ext.interop.aihwkit_noise import device_from_noise_model, noise_model_from_device
from lorafusion_ext.interop.rpu_fields import diff as _diff
from lorafusion_ext.interop.rpu_fields import res_to_bits as _res_to_bits

_IGNORED = {
    # Fields that do not change the torch tile's inference forward or that we model elsewhere
    # (`backward` is read by _backward_from_io).
    "backward",
    "update",
    "runtime",
    "device",
    "forward.bm_test_negative_bound",
    "forward.ir_drop_g_ratio",
    "forward.v_offset_w_min",
    "mapping.weight_scaling_lr_compensation",
    "modifier.coeffs",
    "modifier.g_max",
    "modifier.pcm_t0",
    "modifier.dorefa_clip",
    "modifier.assumed_wmax",
}


#: The backward IOParameters fields the backward read models (`HardwareConfig.backward`).
_BACKWARD_FIELDS = ("is_perfect", "inp_res", "inp_bound", "out_res", "out_bound", "out_noise", "noise_management",
                    "bound_management", "nm_thres", "max_bm_factor", "max_bm_res")


def _backward_from_io(io: Any) -> "hw.Periphery | None":
    """`rpu_config.backward` (IOParameters) as the backward read's periphery: None when it is
    perfect (AIHWKIT's default for inference configs: the ideal backward).

    AIHWKIT's C++ tiles (RPUCuda's forward/backward pass) read the backward vector by vector, so
    ITERATIVE bound management is `iterative_per_row` here.

    Raises:
        ValueError: naming every field set to a value the backward read does not model.
    """
    from aihwkit.simulator.parameters.enums import BoundManagementType, NoiseManagementType
    from aihwkit.simulator.parameters.io import IOParameters

    if io.is_perfect:
        return None
    if not isinstance(io, IOParameters):
        raise ValueError(f"rpu_config.backward is a {type(io).__name__}; expected IOParameters")
    others = [(path, value) for path, value in _diff(io, type(io)(), "") if path not in _BACKWARD_FIELDS]
    if others:
        names = ", ".join(f"rpu_config.backward.{path} = {value!r}" for path, value in others)
        raise ValueError(f"{names}: not modelled by lorafusion_ext's backward read (it models "
                         f"{', '.join('backward.' + f for f in _BACKWARD_FIELDS[1:])})")
    bm = {BoundManagementType.NONE: "none", BoundManagementType.ITERATIVE: "iterative_per_row"}.get(io.bound_management)
    if bm is None:
        raise ValueError(f"rpu_config.backward.bound_management = {io.bound_management!r}; expected NONE or ITERATIVE")
    nm = {
        NoiseManagementType.NONE: "none",
        NoiseManagementType.ABS_MAX: "abs_max",
        NoiseManagementType.MAX: "max",
        NoiseManagementType.CONSTANT: "constant",
    }.get(io.noise_management)
    if nm is None:
        raise ValueError(
            f"rpu_config.backward.noise_management = {io.noise_management!r}; expected NONE, ABS_MAX, MAX or CONSTANT")
    try:
        return hw.Periphery(
            dac=hw.DAC(_res_to_bits(io.inp_res, "backward.inp_res"), float(io.inp_bound) if io.inp_bound > 0 else None),
            adc=hw.ADC(_res_to_bits(io.out_res, "backward.out_res"), float(io.out_bound) if io.out_bound > 0 else None),
            out_noise=float(io.out_noise),
            noise_management=hw.NoiseManagement(nm, float(io.nm_thres)),
            bound_management=hw.BoundManagement(bm, float(io.max_bm_factor), float(io.max_bm_res)),
        )
    except ValueError as err:
        raise ValueError(f"rpu_config.backward: {err}") from None


def hardware_from_rpu_config(cls: Any, rpu: Any) -> Any:
    if hw.is_lightning(rpu):
        # AIHWKIT-Lightning's config, through this module: the config's one door into interop/.
        from lorafusion_ext.interop.lightning_config import hardware_from_lightning

        return hardware_from_lightning(cls, rpu)
    from aihwkit.inference.compensation.drift import GlobalDriftCompensation
    from aihwkit.simulator.configs import TorchInferenceRPUConfig, TorchInferenceRPUConfigIRDropT
    from aihwkit.simulator.parameters.enums import (
        BoundManagementType,
        NoiseManagementType,
        WeightClipType,
        WeightModifierType,
        WeightRemapType,
    )

    if type(rpu) not in (TorchInferenceRPUConfig, TorchInferenceRPUConfigIRDropT):
        raise ValueError(f"rpu_config is a {type(rpu).__name__}; expected a TorchInferenceRPUConfig or "
                         "TorchInferenceRPUConfigIRDropT")
    ir_drop = _ir_drop_from_rpu_config(rpu) if type(rpu) is TorchInferenceRPUConfigIRDropT else hw.IRDrop()
    modelled = {
        "forward.inp_res", "forward.inp_bound", "forward.out_res", "forward.out_bound",
        "forward.out_noise", "forward.bound_management", "forward.noise_management",
        "forward.nm_thres", "forward.max_bm_factor", "forward.max_bm_res",
        "forward.inp_asymmetry", "forward.out_asymmetry", "forward.inp_noise",
        "forward.inp_sto_round", "forward.out_sto_round", "forward.out_scale",
        "mapping.weight_scaling_omega", "mapping.weight_scaling_columnwise",
        "mapping.learn_out_scaling", "mapping.out_scaling_columnwise",
        "mapping.max_input_size", "mapping.max_output_size",
        "modifier.type", "modifier.std_dev", "modifier.res", "modifier.per_batch_sample", "modifier.sto_round", "clip.type", "clip.sigma", "clip.fixed_value", "remap.type",
        "noise_model", "drift_compensation",
    } | {f"pre_post.input_range.{name}" for name in _INPUT_RANGE_FIELDS} | {"pre_post.input_range.enable"}
    if type(rpu) is TorchInferenceRPUConfigIRDropT:
        modelled |= set(_IR_DROP_FIELDS)
    for path, value in _diff(rpu, type(rpu)(), ""):
        if path in modelled or any(path == p or path.startswith(p + ".") for p in _IGNORED):
            continue
        if path.startswith("noise_model") or path.startswith("drift_compensation"):
            continue
        raise ValueError(f"rpu_config.{path} = {value!r} is not modelled by lorafusion_ext")

    f = rpu.forward
    # AIHWKIT's torch tile runs ITERATIVE_WORST_CASE exactly as ITERATIVE (AnalogMVM.matmul
    # only tells NONE from the rest).
    bm = {
        BoundManagementType.NONE: "none",
        BoundManagementType.ITERATIVE: "iterative_global",
        BoundManagementType.ITERATIVE_WORST_CASE: "iterative_global",
    }.get(f.bound_management)
    if bm is None:
        raise ValueError(
            f"rpu_config.forward.bound_management = {f.bound_management!r}; expected NONE, ITERATIVE or "
            "ITERATIVE_WORST_CASE (AIHWKIT's torch tile rejects SHIFT)"
        )
    nm = {
        NoiseManagementType.NONE: "none",
        NoiseManagementType.ABS_MAX: "abs_max",
        NoiseManagementType.MAX: "max",
        NoiseManagementType.CONSTANT: "constant",
    }.get(f.noise_management)
    if nm is None:
        raise ValueError(
            f"rpu_config.forward.noise_management = {f.noise_management!r}; expected NONE, ABS_MAX, MAX or "
            "CONSTANT (AIHWKIT's torch tile rejects the others)"
        )

    m = rpu.mapping
    omega = m.weight_scaling_omega or 0.0
    scaling = "none" if omega <= 0 else ("row" if m.weight_scaling_columnwise else "layer")
    mod = rpu.modifier
    if mod.type == WeightModifierType.ADD_NORMAL:
        if not mod.rel_to_actual_wmax:
            raise ValueError("rpu_config.modifier.rel_to_actual_wmax = False is not modelled by lorafusion_ext")
        modifier = hw.Modifier("add_normal", float(mod.std_dev), per_batch_sample=bool(mod.per_batch_sample))
    elif mod.type == WeightModifierType.DISCRETIZE:
        if not mod.rel_to_actual_wmax:
            raise ValueError("rpu_config.modifier.rel_to_actual_wmax = False is not modelled by lorafusion_ext")
        if not mod.res > 0:
            raise ValueError(f"rpu_config.modifier.res = {mod.res!r}; expected > 0 with DISCRETIZE")
        if mod.per_batch_sample:
            raise ValueError(
                "rpu_config.modifier.per_batch_sample = True with DISCRETIZE is not modelled by lorafusion_ext "
                "(AIHWKIT's torch tile cannot discretize per sample: its view to [batch, out, in] fails)")
        modifier = hw.Modifier("discretize", res=float(mod.res), sto_round=bool(mod.sto_round))
    elif mod.type == WeightModifierType.MULT_NORMAL:
        modifier = hw.Modifier("mult_normal", float(mod.std_dev), per_batch_sample=bool(mod.per_batch_sample))
    elif mod.type in (WeightModifierType.NONE, WeightModifierType.COPY):
        modifier = hw.Modifier("none")
    else:
        raise ValueError(
            f"rpu_config.modifier.type = {mod.type!r}; expected NONE, COPY, ADD_NORMAL, MULT_NORMAL or DISCRETIZE "
            "(AIHWKIT's torch tile rejects the others)"
        )
    # AIHWKIT clips and remaps in post_update_step (after each optimizer step), never at
    # conversion: clip_when="update".
    clip = rpu.clip
    clip_sigma, clip_fixed = 0.0, 0.0
    if clip.type == WeightClipType.LAYER_GAUSSIAN:
        clip_sigma = float(clip.sigma)
        clip_fixed = float(clip.fixed_value) if clip.fixed_value > 0 else 0.0
        if clip_sigma <= 0:
            raise ValueError(f"rpu_config.clip.sigma = {clip.sigma!r}; expected > 0 with LAYER_GAUSSIAN")
    elif clip.type == WeightClipType.FIXED_VALUE:
        if not clip.fixed_value > 0:
            raise ValueError(f"rpu_config.clip.fixed_value = {clip.fixed_value!r}; expected > 0 with FIXED_VALUE")
        clip_fixed = float(clip.fixed_value)
    elif clip.type != WeightClipType.NONE:
        raise ValueError(
            f"rpu_config.clip.type = {clip.type!r}; expected NONE, FIXED_VALUE or LAYER_GAUSSIAN "
            "(AIHWKIT's torch tile does not implement AVERAGE_CHANNEL_MAX)"
        )
    remap_types = (WeightRemapType.NONE, WeightRemapType.CHANNELWISE_SYMMETRIC, WeightRemapType.LAYERWISE_SYMMETRIC)
    if rpu.remap.type not in remap_types:
        raise ValueError(
            f"rpu_config.remap.type = {rpu.remap.type!r}; expected NONE, CHANNELWISE_SYMMETRIC or LAYERWISE_SYMMETRIC"
        )
    remap = rpu.remap.type != WeightRemapType.NONE
    # The remap makes every tile row (channelwise) or every tile (layerwise) max |w| 1, which is
    # what the mapping per row (per tile) at omega 1 gives when it is recomputed from the remapped
    # weights: so each remap is modelled with that mapping from the start.
    columnwise = rpu.remap.type == WeightRemapType.CHANNELWISE_SYMMETRIC
    if remap and not (bool(m.weight_scaling_columnwise) == columnwise and omega == 1.0):
        raise ValueError(
            f"rpu_config.remap.type = {rpu.remap.type.name} is modelled with mapping.weight_scaling_omega = 1 "
            f"and mapping.weight_scaling_columnwise = {columnwise} (got {omega!r}, {m.weight_scaling_columnwise!r}): "
            f"a remap makes every {'tile row' if columnwise else 'tile'}'s max |w| 1"
        )

    device = device_from_noise_model(rpu.noise_model, rpu.drift_compensation is not None)
    if rpu.drift_compensation is not None and type(rpu.drift_compensation) is not GlobalDriftCompensation:
        raise ValueError(
            f"rpu_config.drift_compensation = {type(rpu.drift_compensation).__name__}; "
            "expected GlobalDriftCompensation or None"
        )

    return cls(
        dac=hw.DAC(_res_to_bits(f.inp_res, "forward.inp_res"), float(f.inp_bound) if f.inp_bound > 0 else None,
                   asymmetry=float(f.inp_asymmetry), noise=max(float(f.inp_noise), 0.0),
                   sto_round=bool(f.inp_sto_round)),
        adc=hw.ADC(_res_to_bits(f.out_res, "forward.out_res"), float(f.out_bound) if f.out_bound > 0 else None,
                   asymmetry=float(f.out_asymmetry), sto_round=bool(f.out_sto_round)),
        out_noise=float(f.out_noise),
        out_scale=float(f.out_scale),
        noise_management=hw.NoiseManagement(nm, float(f.nm_thres)),
        bound_management=hw.BoundManagement(bm, float(f.max_bm_factor), float(f.max_bm_res)),
        mapping=hw.Mapping_(
            scaling,
            float(omega) if omega > 0 else 1.0,
            clip_sigma=clip_sigma,
            remap=remap,
            clip_fixed=clip_fixed,
            clip_when="update" if (remap or clip_sigma > 0 or clip_fixed > 0) else "conversion",
            learn_out_scaling=bool(m.learn_out_scaling),
            out_scaling_columnwise=bool(m.out_scaling_columnwise),
        ),
        tiles=hw.Tiles(m.max_input_size or None, m.max_output_size or None),
        modifier=modifier,
        device=device,
        ir_drop=ir_drop,
        backward=_backward_from_io(rpu.backward),
        input_range=_input_range_from_rpu_config(rpu),
    )


#: InputRangeParameter fields that HardwareConfig.input_range (InputRange) carries, same names.
_INPUT_RANGE_FIELDS = (
    "learn_input_range", "init_value", "init_from_data", "init_std_alpha", "decay", "input_min_percentage",
    "manage_output_clipping", "output_min_percentage", "gradient_scale", "gradient_relative",
)


def _input_range_from_rpu_config(rpu: Any) -> Any:
    """HardwareConfig.input_range of `rpu.pre_post.input_range` (None when not enabled; its other
    fields then change nothing). A `calibration_info` is refused like any field not modelled."""
    p = rpu.pre_post.input_range
    if not p.enable:
        return None
    values = {name: getattr(p, name) for name in _INPUT_RANGE_FIELDS}
    for name in ("init_value", "init_std_alpha", "decay", "input_min_percentage", "output_min_percentage",
                 "gradient_scale"):
        values[name] = float(values[name])
    if isinstance(values["init_from_data"], float) and values["init_from_data"].is_integer():
        values["init_from_data"] = int(values["init_from_data"])
    try:
        return hw.InputRange(**values)
    except ValueError as err:
        raise ValueError(f"rpu_config.pre_post.{err}") from None


#: IOParametersIRDropT fields read by _ir_drop_from_rpu_config (the others are refused there).
_IR_DROP_FIELDS = (
    "forward.ir_drop", "forward.ir_drop_rs", "forward.ir_drop_segments", "forward.ir_drop_time_step_resolution_scale",
    "forward.ir_drop_v_read", "forward.ir_drop_integration_sum", "forward.adc_quantization", "forward.adc_frequency",
    "forward.mv_type", "forward.split_mode_bit_shift", "forward.apply_xdep_pcm_read_noise",
    "forward.xdep_pcm_read_noise_scale",
)


def _ir_drop_from_rpu_config(rpu: Any) -> Any:
    """HardwareConfig.ir_drop of a TorchInferenceRPUConfigIRDropT (ONE_PASS only)."""
    from aihwkit.inference.converter.conductance import SinglePairConductanceConverter
    from aihwkit.simulator.parameters.enums import AnalogMVType

    f = rpu.forward
    if f.mv_type != AnalogMVType.ONE_PASS:
        raise ValueError(f"rpu_config.forward.mv_type = {f.mv_type!r} is not modelled by lorafusion_ext "
                         "(IR drop: ONE_PASS only; SPLIT_MODE and BIT_WISE are not)")
    if f.apply_xdep_pcm_read_noise:
        raise ValueError("rpu_config.forward.apply_xdep_pcm_read_noise = True is not modelled by lorafusion_ext")
    conv = getattr(rpu.noise_model, "g_converter", None)
    if f.ir_drop > 0 and type(conv) is not SinglePairConductanceConverter:
        raise ValueError(f"rpu_config.noise_model.g_converter = {type(conv).__name__}: IR drop is modelled with "
                         "SinglePairConductanceConverter only")
    if not f.ir_drop > 0:
        return hw.IRDrop()  # no IR drop: its other fields change nothing
    if not f.inp_res > 0:
        raise ValueError(f"rpu_config.forward.inp_res = {f.inp_res!r}: IR drop needs a DAC (inp_res > 0)")
    if f.adc_quantization and not f.adc_frequency > 0:
        raise ValueError(f"rpu_config.forward.adc_frequency = {f.adc_frequency!r} with adc_quantization = True; "
                         "expected a frequency > 0 (AIHWKIT divides by it)")
    res = f.inp_res if f.inp_res < 1.0 else 1.0 / f.inp_res  # AnalogMVMIRDropT._get_res
    steps = int(((f.inp_bound / res + 2) / 2) * f.ir_drop_time_step_resolution_scale)
    if steps < 2:
        raise ValueError(f"rpu_config.forward.ir_drop_time_step_resolution_scale = "
                         f"{f.ir_drop_time_step_resolution_scale!r} gives {steps} time step(s) of the input pulse; "
                         "lorafusion_ext models at least 2")
    return hw.IRDrop(
        scale=float(f.ir_drop), rs=float(f.ir_drop_rs), segments=int(f.ir_drop_segments),
        time_step_scale=float(f.ir_drop_time_step_resolution_scale), v_read=float(f.ir_drop_v_read),
        integration="sum" if f.ir_drop_integration_sum else "trapz",
        adc_frequency=float(f.adc_frequency) if f.adc_quantization else 0.0,
        g_max=float(conv.g_max) if conv is not None else 25.0, g_min=float(conv.g_min) if conv is not None else 0.0,
    )


def rpu_config_from_hardware(h: Any, flavour: str = "aihwkit") -> Any:
    if flavour == "lightning":
        from lorafusion_ext.interop.lightning_config import lightning_from_hardware

        return lightning_from_hardware(h)
    if flavour != "aihwkit":
        raise ValueError(f"to_aihwkit: flavour = {flavour!r}; expected 'aihwkit' or 'lightning'")
    from aihwkit.inference.compensation.drift import GlobalDriftCompensation
    from aihwkit.simulator.configs import TorchInferenceRPUConfig
    from aihwkit.simulator.parameters.enums import (
        BoundManagementType,
        NoiseManagementType,
        WeightModifierType,
    )

    if h.out_noise > 0 and (not h.out_noise_in_eval or h.out_noise_split):
        raise ValueError(
            f"hardware.out_noise_in_eval = {h.out_noise_in_eval}, out_noise_split = {h.out_noise_split} (output "
            "noise of AIHWKIT-Lightning) has no AIHWKIT 1.1 equivalent: its tiles draw out_noise per tile, in "
            "training and eval; use to_aihwkit(flavour='lightning')")
    if h.weight_res > 0:
        raise ValueError(
            f"hardware.weight_res = {h.weight_res} (AIHWKIT-Lightning's weight quantization in training and eval) has "
            "no AIHWKIT 1.1 equivalent (its DISCRETIZE modifier acts in training only); use "
            "to_aihwkit(flavour='lightning')")
    if h.mapping.clip_scope != "tile":
        raise ValueError(
            f"hardware.mapping.clip_scope = {h.mapping.clip_scope!r} (AIHWKIT-Lightning's Gaussian clip) has no AIHWKIT "
            "1.1 equivalent: its clips are per tile; use to_aihwkit(flavour='lightning')")
    if h.input_range is not None and not h.input_range.scaling_gradient:
        raise ValueError(
            "hardware.input_range.scaling_gradient = False (AIHWKIT-Lightning's range gradient) has no AIHWKIT 1.1 "
            "equivalent; use to_aihwkit(flavour='lightning')")
    if h.bound_management.mode == "iterative_per_row":
        raise ValueError(
            "hardware.bound_management.mode = 'iterative_per_row' has no TorchInferenceRPUConfig "
            "equivalent (AIHWKIT's torch tile re-runs the whole batch)"
        )
    from aihwkit.simulator.configs import TorchInferenceRPUConfigIRDropT

    rpu = TorchInferenceRPUConfigIRDropT() if h.ir_drop.scale > 0 else TorchInferenceRPUConfig()
    f = rpu.forward
    if h.ir_drop.scale > 0:
        f.ir_drop = h.ir_drop.scale
        f.ir_drop_rs = h.ir_drop.rs
        f.ir_drop_segments = h.ir_drop.segments
        f.ir_drop_time_step_resolution_scale = h.ir_drop.time_step_scale
        f.ir_drop_v_read = h.ir_drop.v_read
        f.ir_drop_integration_sum = h.ir_drop.integration == "sum"
        f.adc_quantization = h.ir_drop.adc_frequency > 0
        if h.ir_drop.adc_frequency > 0:
            f.adc_frequency = h.ir_drop.adc_frequency
    f.inp_res = h.dac.resolution if h.dac.bits is not None else -1.0
    f.inp_bound = h.dac.bound if h.dac.bound is not None else -1.0
    f.out_res = h.adc.resolution if h.adc.bits is not None else -1.0
    f.out_bound = h.adc.bound if h.adc.bound is not None else -1.0
    f.out_noise = h.out_noise
    f.out_scale = h.out_scale
    f.inp_asymmetry = h.dac.asymmetry
    f.inp_noise = h.dac.noise
    f.inp_sto_round = h.dac.sto_round
    f.out_sto_round = h.adc.sto_round
    f.out_asymmetry = h.adc.asymmetry
    f.nm_thres = h.noise_management.threshold
    f.max_bm_factor = h.bound_management.max_factor
    f.max_bm_res = h.bound_management.max_res
    f.noise_management = {
        "none": NoiseManagementType.NONE,
        "abs_max": NoiseManagementType.ABS_MAX,
        "max": NoiseManagementType.MAX,
        "constant": NoiseManagementType.CONSTANT,
    }[h.noise_management.mode]
    f.bound_management = {
        "none": BoundManagementType.NONE,
        "iterative_global": BoundManagementType.ITERATIVE,
    }[h.bound_management.mode]
    m = rpu.mapping
    m.weight_scaling_omega = 0.0 if h.mapping.weight_scaling == "none" else h.mapping.omega
    m.weight_scaling_columnwise = h.mapping.weight_scaling == "row"
    m.learn_out_scaling = h.mapping.learn_out_scaling
    m.out_scaling_columnwise = h.mapping.out_scaling_columnwise
    m.max_input_size = h.tiles.max_in or 0
    m.max_output_size = h.tiles.max_out or 0
    if h.mapping.clip_when == "update":
        # Conversion-time conditioning is already in the weights; per-step conditioning is
        # AIHWKIT's own post_update_step.
        from aihwkit.simulator.parameters.enums import WeightClipType, WeightRemapType

        if h.mapping.clip_sigma > 0:
            rpu.clip.type = WeightClipType.LAYER_GAUSSIAN
            rpu.clip.sigma = h.mapping.clip_sigma
            rpu.clip.fixed_value = h.mapping.clip_fixed if h.mapping.clip_fixed > 0 else -1.0
        elif h.mapping.clip_fixed > 0:
            rpu.clip.type = WeightClipType.FIXED_VALUE
            rpu.clip.fixed_value = h.mapping.clip_fixed
        if h.mapping.remap:
            rpu.remap.type = (WeightRemapType.CHANNELWISE_SYMMETRIC if h.mapping.weight_scaling == "row"
                              else WeightRemapType.LAYERWISE_SYMMETRIC)
    if h.modifier.kind == "add_normal":
        rpu.modifier.type = WeightModifierType.ADD_NORMAL
        rpu.modifier.std_dev = h.modifier.std
    elif h.modifier.kind == "mult_normal":
        rpu.modifier.type = WeightModifierType.MULT_NORMAL
        rpu.modifier.std_dev = h.modifier.std
    elif h.modifier.kind == "discretize":
        rpu.modifier.type = WeightModifierType.DISCRETIZE
        rpu.modifier.res = h.modifier.res
        rpu.modifier.sto_round = h.modifier.sto_round
    rpu.modifier.per_batch_sample = h.modifier.per_batch_sample
    if h.backward is not None:
        b, p = rpu.backward, h.backward
        if p.bound_management.mode == "iterative_global":
            raise ValueError(
                "hardware.backward.bound_management.mode = 'iterative_global' has no AIHWKIT equivalent (its C++ "
                "tiles read the backward vector by vector: 'iterative_per_row')")
        b.is_perfect = False
        b.inp_res = p.dac.resolution if p.dac.bits is not None else -1.0
        b.inp_bound = p.dac.bound if p.dac.bound is not None else -1.0
        b.out_res = p.adc.resolution if p.adc.bits is not None else -1.0
        b.out_bound = p.adc.bound if p.adc.bound is not None else -1.0
        b.out_noise = p.out_noise
        b.nm_thres = p.noise_management.threshold
        b.max_bm_factor = p.bound_management.max_factor
        b.max_bm_res = p.bound_management.max_res
        b.noise_management = {
            "none": NoiseManagementType.NONE,
            "abs_max": NoiseManagementType.ABS_MAX,
            "max": NoiseManagementType.MAX,
            "constant": NoiseManagementType.CONSTANT,
        }[p.noise_management.mode]
        b.bound_management = {"none": BoundManagementType.NONE,
                              "iterative_per_row": BoundManagementType.ITERATIVE}[p.bound_management.mode]
    if h.input_range is not None:
        p = rpu.pre_post.input_range
        p.enable = True
        for name in _INPUT_RANGE_FIELDS:
            setattr(p, name, getattr(h.input_range, name))
    rpu.noise_model = noise_model_from_device(h.device)
    rpu.drift_compensation = GlobalDriftCompensation() if h.device.drift_compensation else None
    if h.ir_drop.scale > 0:
        conv = getattr(rpu.noise_model, "g_converter", None)
        if conv is None or (float(conv.g_max), float(conv.g_min)) != (h.ir_drop.g_max, h.ir_drop.g_min):
            raise ValueError(
                f"hardware.ir_drop.g_max = {h.ir_drop.g_max}, g_min = {h.ir_drop.g_min} differ from the device's "
                f"conductance converter ({conv}); AIHWKIT's IR drop uses the noise model's g_converter")
    return rpu
