"""Conversion between `HardwareConfig` and AIHWKIT-Lightning 2.1's `TorchInferenceRPUConfig`.

AIHWKIT-Lightning's PyTorch forward (`TorchLinear.linear`), per input slice (tile) of at most
`mapping.max_input_size` inputs (the balanced split, as AIHWKIT's and this package's), reads as
this package's crossbar op once its units are normalised:

- the learned input range r per slice clamps the input (`StraightThroughClamp`) and is the
  DAC's full scale: the op's input x / r with a DAC bound of 1 and no noise management, the
  output multiplied by r again. r gets `InputRangeForward`'s gradient only (the clipped-input
  term times r, plus the decay): `InputRange.scaling_gradient = False`;
- `dynamic` ranges (the abs-max of each input row) are the op's abs-max noise management;
- `fast_mode` ranges (running min/max statistics, `act_range_momentum`, the clamp's gradient)
  are `InputRange.fast_mode`;
- the weights' per-channel abs-max (`assumed_wmax`) is the op's "row" mapping; its maximum over
  the slice is the "layer" (one scale per tile) mapping. The ADC bound (r · out_bound · wmax),
  the output noise (out_noise · wmax · r / sqrt(n_slices), in training only) and the weight
  noise (std_dev · wmax) are all relative to one of the two; a config that would need both at
  once is refused;
- `modifier.quantization_type` (weights rounded in training and eval) is `weight_res`;
- `LAYER_GAUSSIAN` (`_PER_CHANNEL`) clipping after each optimizer step is `post_update_step`'s
  clip of the target weights at sigma · std of the layer (of each row): `Mapping_.clip_scope`.

What has no counterpart here is refused with a ValueError that names the field (docs/aihwkit.md,
the Lightning column). The public door is `HardwareConfig.from_aihwkit` / `to_aihwkit(flavour=
"lightning")`, through `interop.aihwkit_config` (the config's one door into interop/).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lorafusion_ext import hardware as hw
from lorafusion_ext.interop.rpu_fields import diff as _diff
from lorafusion_ext.interop.rpu_fields import res_to_bits as _res_to_bits

#: Every field of Lightning's TorchInferenceRPUConfig that `hardware_from_lightning` reads (or,
#: where it changes nothing in Lightning's forward, knowingly passes over).
_FIELDS = {
    "forward.inp_res", "forward.out_noise", "forward.out_noise_per_channel", "forward.out_bound", "forward.out_res",
    "clip.type", "clip.sigma",
    "modifier.std_dev", "modifier.res", "modifier.enable_during_test", "modifier.type", "modifier.noise_type",
    "modifier.quantization_type",
    "mapping.max_input_size",
} | {f"pre_post.input_range.{name}" for name in (
    "fast_mode", "act_range_momentum", "enable", "dynamic", "learn_input_range", "init_value", "init_from_data",
    "init_std_alpha", "decay", "input_min_percentage")}


def _lightning() -> Any:
    try:
        from aihwkit_lightning.simulator import configs
        from aihwkit_lightning.simulator.parameters import enums
    except ImportError as exc:  # pragma: no cover - aihwkit-lightning is installed by `make install`
        raise ImportError("AIHWKIT-Lightning conversion needs aihwkit-lightning "
                          "(pip install --no-deps aihwkit-lightning==2.1.0)") from exc
    return configs, enums


def _modifier_types(mod: Any, enums: Any) -> tuple[Any, Any]:
    """(noise_type, quantization_type) of `modifier`, the deprecated `modifier.type` (Lightning
    < 2) translated as Lightning's own `AnalogLayerBase.deprecation_adjustment` does."""
    WMT, Noise, Quant = enums.WeightModifierType, enums.WeightNoiseInjectionType, enums.WeightQuantizationType
    if mod.type == WMT.NONE:
        return mod.noise_type, mod.quantization_type
    noise = {WMT.ADD_NORMAL: Noise.ADD_NORMAL, WMT.DISCRETIZE_ADD_NORMAL: Noise.ADD_NORMAL,
             WMT.ADD_NORMAL_PER_CHANNEL: Noise.ADD_NORMAL_PER_CHANNEL,
             WMT.DISCRETIZE_ADD_NORMAL_PER_CHANNEL: Noise.ADD_NORMAL_PER_CHANNEL}.get(mod.type, Noise.NONE)
    quant = {WMT.DISCRETIZE: Quant.DISCRETIZE, WMT.DISCRETIZE_ADD_NORMAL: Quant.DISCRETIZE,
             WMT.DISCRETIZE_PER_CHANNEL: Quant.DISCRETIZE_PER_CHANNEL,
             WMT.DISCRETIZE_ADD_NORMAL_PER_CHANNEL: Quant.DISCRETIZE_PER_CHANNEL}.get(mod.type, Quant.NONE)
    return noise, quant


def hardware_from_lightning(cls: Any, rpu: Any) -> Any:
    """The HardwareConfig of an AIHWKIT-Lightning `TorchInferenceRPUConfig` (module docstring).

    Lightning has no device model: the device is HardwareConfig's default (PCM with global drift
    compensation), used by `program()` / `drift()` only; replace it to study another.

    Raises:
        ValueError: naming the field set to a value that is not modelled, or that Lightning's own
            forward rejects.
    """
    configs, enums = _lightning()
    Clip, Noise, Quant = enums.WeightClipType, enums.WeightNoiseInjectionType, enums.WeightQuantizationType
    if type(rpu) is not configs.TorchInferenceRPUConfig:
        raise ValueError(f"rpu_config is a {type(rpu).__name__}; expected AIHWKIT-Lightning's TorchInferenceRPUConfig")
    for path, value in _diff(rpu, type(rpu)(), ""):
        if path not in _FIELDS:
            raise ValueError(f"rpu_config.{path} = {value!r} is not modelled by lorafusion_ext")
    for part in ("forward", "clip", "modifier", "mapping", "pre_post", "pre_post.input_range"):
        obj = rpu
        for name in part.split("."):
            obj = getattr(obj, name)
        extra = set(vars(obj)) - {f.name for f in dataclasses.fields(obj)}
        if extra:
            raise ValueError(f"rpu_config.{part}.{sorted(extra)[0]} is not a field of AIHWKIT-Lightning 2.1's "
                             "TorchInferenceRPUConfig; not modelled by lorafusion_ext")

    f, clip, mod, ir = rpu.forward, rpu.clip, rpu.modifier, rpu.pre_post.input_range
    noise_type, quant_type = _modifier_types(mod, enums)
    if quant_type not in (Quant.NONE, Quant.DISCRETIZE, Quant.DISCRETIZE_PER_CHANNEL):
        raise ValueError(f"rpu_config.modifier.quantization_type = {quant_type!r}; expected NONE, DISCRETIZE or "
                         "DISCRETIZE_PER_CHANNEL")
    if quant_type != Quant.NONE and not mod.res > 0:
        raise ValueError(f"rpu_config.modifier.res = {mod.res!r}; expected > 0 with quantization_type "
                         f"{quant_type.name}")
    if clip.type == Clip.LEARNABLE_PER_CHANNEL:
        raise ValueError(
            "rpu_config.clip.type = LEARNABLE_PER_CHANNEL is not modelled by lorafusion_ext: its learned per-channel "
            "clip (an LSQ-style parameter that also sets the ADC bound and the noise scale) has no counterpart in "
            "the op's weight mapping")
    if clip.type not in (Clip.NONE, Clip.LAYER_GAUSSIAN, Clip.LAYER_GAUSSIAN_PER_CHANNEL):
        raise ValueError(f"rpu_config.clip.type = {clip.type!r}; expected NONE, LAYER_GAUSSIAN or "
                         "LAYER_GAUSSIAN_PER_CHANNEL")
    if ir.enable and ir.fast_mode and ir.dynamic:
        raise ValueError("rpu_config.pre_post.input_range.fast_mode = True with dynamic = True: Lightning's forward "
                         "asserts a learned range there (dynamic layers have none)")
    dynamic = ir.enable and ir.dynamic
    learned = ir.enable and not ir.dynamic
    # Lightning's own forward asserts on these (TorchLinear.linear): refused with its reason.
    if not ir.enable:
        for name in ("inp_res", "out_res", "out_bound", "out_noise"):
            if getattr(f, name) > 0:
                raise ValueError(f"rpu_config.forward.{name} = {getattr(f, name)!r} needs "
                                 "pre_post.input_range.enable = True (Lightning's forward asserts it)")
    if f.out_res > 0 and not f.out_bound > 0:
        raise ValueError(f"rpu_config.forward.out_res = {f.out_res!r} needs forward.out_bound > 0 "
                         "(Lightning's forward asserts it)")

    # Which weight maximum each feature is relative to: per channel ("row") or per slice ("layer").
    needs: dict[str, str] = {}
    if f.out_bound > 0:
        # Lightning's ADC bound is per channel exactly with the per-channel clips (LEARNABLE: refused).
        needs["forward.out_bound"] = "row" if clip.type == Clip.LAYER_GAUSSIAN_PER_CHANNEL else "layer"
    if f.out_noise > 0:
        needs["forward.out_noise_per_channel"] = "row" if f.out_noise_per_channel else "layer"
    if noise_type in (Noise.ADD_NORMAL, Noise.ADD_NORMAL_PER_CHANNEL) and mod.std_dev > 0:
        needs["modifier.noise_type"] = "row" if noise_type == Noise.ADD_NORMAL_PER_CHANNEL else "layer"
    if quant_type != Quant.NONE:
        needs["modifier.quantization_type"] = "row" if quant_type == Quant.DISCRETIZE_PER_CHANNEL else "layer"
    if noise_type not in (Noise.NONE, Noise.ADD_NORMAL, Noise.ADD_NORMAL_PER_CHANNEL):
        raise ValueError(f"rpu_config.modifier.noise_type = {noise_type!r}; expected NONE, ADD_NORMAL or "
                         "ADD_NORMAL_PER_CHANNEL")
    kinds = set(needs.values())
    if len(kinds) > 1:
        said = ", ".join(f"rpu_config.{k} ({'per channel' if v == 'row' else 'per tensor'})" for k, v in needs.items())
        raise ValueError(
            f"{said}: not modelled by lorafusion_ext together: Lightning scales each of them by the weights' "
            "abs-max per channel or per tensor as listed, and the op normalises the weights one way per layer")
    clip_sigma, clip_scope = 0.0, "tile"
    if clip.type != Clip.NONE:
        if not clip.sigma > 0:
            raise ValueError(f"rpu_config.clip.sigma = {clip.sigma!r}; expected > 0 with {clip.type.name} "
                             "(Lightning's clip_weights asserts it)")
        clip_sigma = float(clip.sigma)
        clip_scope = "layer" if clip.type == Clip.LAYER_GAUSSIAN else "channel"
    # The clip acts on the target weights; its remap needs a weight scaling ("layer" when free).
    scaling = kinds.pop() if kinds else ("layer" if clip_sigma > 0 else "none")

    if noise_type != Noise.NONE and mod.std_dev > 0:
        modifier = hw.Modifier("add_normal", float(mod.std_dev))
    else:
        modifier = hw.Modifier("none")
    input_range = None
    if learned and not float(ir.init_from_data).is_integer():
        raise ValueError(f"rpu_config.pre_post.input_range.init_from_data = {ir.init_from_data!r}; expected an integer")
    if learned:
        try:
            input_range = hw.InputRange(
                learn_input_range=bool(ir.learn_input_range), init_value=float(ir.init_value),
                init_from_data=int(ir.init_from_data), init_std_alpha=float(ir.init_std_alpha),
                decay=float(ir.decay), input_min_percentage=float(ir.input_min_percentage),
                manage_output_clipping=False, gradient_scale=1.0, gradient_relative=True, scaling_gradient=False,
                # act_range_momentum is read by the fast mode only: otherwise left at its default.
                fast_mode=bool(ir.fast_mode), act_range_momentum=float(ir.act_range_momentum) if ir.fast_mode else 0.95)
        except ValueError as err:
            raise ValueError(f"rpu_config.pre_post.{err}") from None
    dac_bits = _res_to_bits(f.inp_res, "forward.inp_res")
    adc_bits = _res_to_bits(f.out_res, "forward.out_res")
    return cls(
        dac=hw.DAC(dac_bits, 1.0 if dac_bits is not None else None),
        adc=hw.ADC(adc_bits, float(f.out_bound) if f.out_bound > 0 else None),
        out_noise=max(float(f.out_noise), 0.0),
        weight_res=float(mod.res) if quant_type != Quant.NONE else 0.0,
        out_noise_in_eval=False,
        out_noise_split=True,
        noise_management=hw.NoiseManagement("abs_max" if dynamic else "none"),
        bound_management=hw.BoundManagement("none"),
        mapping=hw.Mapping_(scaling, 1.0, clip_sigma=clip_sigma, remap=clip_sigma > 0,
                            clip_when="update" if clip_sigma > 0 else "conversion", clip_scope=clip_scope),
        tiles=hw.Tiles(rpu.mapping.max_input_size if rpu.mapping.max_input_size > 0 else None, None),
        modifier=modifier,
        input_range=input_range,
    )


def lightning_from_hardware(h: Any) -> Any:
    """The AIHWKIT-Lightning `TorchInferenceRPUConfig` of `h` (the inverse of
    `hardware_from_lightning`; the device, which Lightning does not model, is dropped).

    Raises:
        ValueError: naming the first part of `h` that Lightning cannot express.
    """
    configs, enums = _lightning()
    Clip, Noise = enums.WeightClipType, enums.WeightNoiseInjectionType

    def refuse(what: str, why: str) -> ValueError:
        return ValueError(f"hardware.{what} has no AIHWKIT-Lightning equivalent ({why})")

    ir = h.input_range
    nm = h.noise_management.mode
    if h.bound_management.mode != "none":
        raise refuse(f"bound_management.mode = {h.bound_management.mode!r}", "it has no bound management")
    if nm not in ("none", "abs_max") or (nm == "abs_max" and ir is not None):
        raise refuse(f"noise_management.mode = {nm!r}",
                     "abs-max scaling is its dynamic input range, and only without learned ranges")
    if h.noise_management.threshold != 0:
        raise refuse(f"noise_management.threshold = {h.noise_management.threshold}", "no threshold")
    if ir is not None:
        for name, want in (("manage_output_clipping", False), ("gradient_relative", True), ("gradient_scale", 1.0),
                           ("scaling_gradient", False)):
            if getattr(ir, name) != want:
                raise refuse(f"input_range.{name} = {getattr(ir, name)!r}", f"its range gradient has {name} = {want}")
    ranges = ir is not None or nm == "abs_max"
    if h.dac.bits is not None and (h.dac.bound != 1.0 or not ranges):
        raise refuse(f"dac.bound = {h.dac.bound}",
                     "its DAC quantises the input range: a bound of 1 with learned or dynamic ranges")
    if h.dac.bits is None and h.dac.bound is not None and not ranges:
        raise refuse(f"dac.bound = {h.dac.bound}", "it clamps the input only at its input range")
    for part, name, default in (("dac", "asymmetry", 0.0), ("dac", "noise", 0.0), ("dac", "sto_round", False),
                                ("adc", "asymmetry", 0.0), ("adc", "sto_round", False)):
        if getattr(getattr(h, part), name) != default:
            raise refuse(f"{part}.{name} = {getattr(getattr(h, part), name)!r}", "not part of its forward")
    if (h.adc.bits is not None or h.adc.bound is not None or h.out_noise > 0) and not ranges:
        raise refuse("adc / out_noise", "its ADC and output noise need an input range (learned or dynamic)")
    if h.adc.bits is not None and h.adc.bound is None:
        raise refuse("adc.bound = None", "it quantises the output within its bound")
    if h.out_noise > 0 and (h.out_noise_in_eval or not h.out_noise_split):
        raise refuse(f"out_noise_in_eval = {h.out_noise_in_eval}, out_noise_split = {h.out_noise_split}",
                     "its output noise is drawn in training only, out_noise / sqrt(n_slices) per slice")
    if h.out_scale != 1.0 or h.ir_drop.scale > 0 or h.backward is not None:
        raise refuse("out_scale / ir_drop / backward", "not part of its forward")
    if h.tiles.max_out is not None:
        raise refuse(f"tiles.max_out = {h.tiles.max_out}", "it splits the inputs only")
    m = h.mapping
    if m.learn_out_scaling or m.omega != 1.0 or m.clip_fixed > 0:
        raise refuse("mapping (learn_out_scaling / omega / clip_fixed)", "its weight scale is the abs-max")
    scaling = m.weight_scaling
    per_channel_clip = m.clip_scope == "channel" and m.clip_when == "update"
    if h.adc.bound is not None and scaling != ("row" if per_channel_clip else "layer"):
        raise refuse(f"mapping.weight_scaling = {scaling!r} with an ADC bound",
                     "its bound is relative to the per-channel abs-max with LAYER_GAUSSIAN_PER_CHANNEL clipping, "
                     "to the slice's abs-max otherwise")
    if h.out_noise > 0 and scaling == "none":
        raise refuse("mapping.weight_scaling = 'none' with out_noise", "its output noise scales with the abs-max")
    if h.modifier.kind not in ("none", "add_normal") or h.modifier.per_batch_sample:
        raise refuse(f"modifier = {h.modifier!r}", "its weight noise is ADD_NORMAL(_PER_CHANNEL), one draw per call")
    if h.modifier.kind == "add_normal" and scaling == "none":
        raise refuse("mapping.weight_scaling = 'none' with add_normal", "its weight noise scales with the abs-max")
    Quant = enums.WeightQuantizationType

    rpu = configs.TorchInferenceRPUConfig()
    f = rpu.forward
    f.inp_res = h.dac.resolution if h.dac.bits is not None else -1
    f.out_res = h.adc.resolution if h.adc.bits is not None else -1
    f.out_bound = float(h.adc.bound) if h.adc.bound is not None else 0.0
    f.out_noise = float(h.out_noise)
    f.out_noise_per_channel = scaling == "row"
    if m.clips and m.clip_when == "update":
        if m.clip_scope == "tile":
            raise refuse("mapping.clip_scope = 'tile'", "it clips at sigma * std of the whole layer or of each row")
        rpu.clip.type = Clip.LAYER_GAUSSIAN if m.clip_scope == "layer" else Clip.LAYER_GAUSSIAN_PER_CHANNEL
        rpu.clip.sigma = float(m.clip_sigma)
    # A clip at conversion is already in the weights.
    if h.modifier.kind == "add_normal":
        rpu.modifier.noise_type = Noise.ADD_NORMAL_PER_CHANNEL if scaling == "row" else Noise.ADD_NORMAL
        rpu.modifier.std_dev = float(h.modifier.std)
    if h.weight_res > 0:
        rpu.modifier.quantization_type = Quant.DISCRETIZE_PER_CHANNEL if scaling == "row" else Quant.DISCRETIZE
        rpu.modifier.res = float(h.weight_res)
    rpu.mapping.max_input_size = h.tiles.max_in or -1
    p = rpu.pre_post.input_range
    if ranges:
        p.enable = True
        p.dynamic = ir is None
    if ir is not None:
        p.learn_input_range = ir.learn_input_range
        p.init_value = ir.init_value
        p.init_from_data = ir.init_from_data
        p.init_std_alpha = ir.init_std_alpha
        p.decay = ir.decay
        p.input_min_percentage = ir.input_min_percentage
        p.fast_mode = ir.fast_mode
        p.act_range_momentum = ir.act_range_momentum
    return rpu
