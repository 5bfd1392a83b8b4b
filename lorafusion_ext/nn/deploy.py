"""Model walkers: program, drift, unprogram and condition every analog layer of a model.

`program`, `drift`, `fold_drift_compensation` and `unprogram` work on one :class:`AnalogLinear`
or on any ``nn.Module`` that contains analog layers at any depth (a Hugging Face model, a
peft-wrapped model...); each layer's own work (what programming does per tile, the state it
leaves, the randomness) is `lorafusion_ext.nn.tile_state`, whose docstring describes it.
`post_update_steps` and `clip_after_steps` run AIHWKIT's per-step weight conditioning
(`lorafusion_ext.nn.conditioning`) on every analog layer.

Drift before program: a ``RuntimeError`` that says to call ``program()`` first. Auto-programming
(what AIHWKIT's ``drift_weights`` does) would draw a programming sample from an RNG the caller did
not choose, the kind of hidden state this package avoids.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.optim import Optimizer

from lorafusion_ext.devices.base import check_time
from lorafusion_ext.hardware import HardwareConfig, Periphery
from lorafusion_ext.nn.analog_linear import AnalogLinear
from lorafusion_ext.nn.conditioning import post_update_step
from lorafusion_ext.nn.tile_state import (
    check_draws,
    check_foldable,
    check_programmable,
    drift_layer,
    fold_compensation_layer,
    is_programmed,
    program_layer,
    unprogram_layer,
)

__all__ = ["analog_layers", "clip_after_steps", "drift", "fold_drift_compensation", "post_update_steps", "program",
           "set_backward", "set_hardware", "unprogram"]

#: The `HardwareConfig` fields `set_hardware` may change on a built layer: how a read (forward,
#: backward, training step) goes through the tile. The others shape the layer's parameters, its
#: tile layout, how its weights are conditioned or what programming stores (mapping, tiles,
#: device, input_range, weight_res, out_scale, ir_drop): a layer built with them is another layer.
READ_FIELDS = ("dac", "adc", "out_noise", "noise_management", "bound_management", "modifier", "backward",
               "out_noise_in_eval", "out_noise_split")


# ------------------------------------------------------------------------------------------------
# Any module tree
# ------------------------------------------------------------------------------------------------


def analog_layers(model: nn.Module) -> list[tuple[str, AnalogLinear]]:
    """(qualified name, layer) of every AnalogLinear in `model` (itself included), in
    ``named_modules`` order; a shared layer appears once."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model is a {type(model).__name__}; expected a torch.nn.Module")
    return [(name, m) for name, m in model.named_modules() if isinstance(m, AnalogLinear)]


def _layers_or_raise(model: nn.Module, where: str) -> list[tuple[str, AnalogLinear]]:
    layers = analog_layers(model)
    if not layers:
        raise ValueError(
            f"{where}: model ({type(model).__name__}) contains no AnalogLinear layer; convert it "
            "first (AnalogLinear.from_linear / convert_to_analog)"
        )
    return layers


def set_backward(model: nn.Module, backward: Periphery | None) -> nn.Module:
    """Set the backward read (`HardwareConfig.backward`, docs/numerics.md "The backward read")
    of every analog layer of `model` (an analog pool's tiles included): a `Periphery`, or None
    for the ideal straight-through backward. Returns `model`.

    Raises:
        ValueError: `backward` is not a Periphery or None, or `model` has no AnalogLinear (no
            analog tile to read the gradient through), naming `backward`.
    """
    if backward is not None and not isinstance(backward, Periphery):
        raise ValueError(f"set_backward: backward = {backward!r}; expected a Periphery or None")
    layers = analog_layers(model)
    if not layers and backward is not None:
        raise ValueError(f"set_backward: backward = {backward!r} on a model ({type(model).__name__}) with no "
                         "AnalogLinear layer: no analog tile to read the gradient through")
    for _, layer in layers:
        layer.hardware = layer.hardware.replace(backward=backward)
    return model


def set_hardware(model: nn.Module, hardware: HardwareConfig) -> nn.Module:
    """Give every analog layer of `model` (an analog pool's tiles included) the configuration
    `hardware`, which may differ from each layer's own only in how the tile is read
    (`READ_FIELDS`: converters, output noise, managements, the training modifier, the backward
    read): e.g. train with one training-time noise and evaluate the same model with another.
    The weights, the programmed state (if any) and each layer's noise stream are left as they
    are. Returns `model`.

    Raises:
        ValueError: `hardware` is not a HardwareConfig; `model` has no AnalogLinear; a layer's
            configuration differs from `hardware` in another field (the message names the layer
            and the fields). Nothing is changed then.
    """
    if not isinstance(hardware, HardwareConfig):
        raise ValueError(f"set_hardware: hardware is a {type(hardware).__name__}; expected a HardwareConfig")
    layers = _layers_or_raise(model, "set_hardware")
    for name, layer in layers:
        fixed = [f for f in dataclasses.fields(HardwareConfig)
                 if f.name not in READ_FIELDS and getattr(layer.hardware, f.name) != getattr(hardware, f.name)]
        if fixed:
            raise ValueError(f"set_hardware: {_named(name)} has another {', '.join(f.name for f in fixed)} than "
                             f"`hardware`; only {', '.join(READ_FIELDS)} can change on a built layer (build the model "
                             "with the other configuration instead)")
    for _, layer in layers:
        layer.hardware = hardware
    return model


def _named(name: str) -> str:
    return f"layer {name!r}" if name else "the model (an AnalogLinear)"


def program(model: nn.Module, generator: torch.Generator | None = None, draws: str = "philox") -> nn.Module:
    """Program every AnalogLinear of `model` (any depth), in ``named_modules`` order, from its
    current target weights. All device noise is keyed by `generator` (None: torch's global RNG);
    `draws`: "philox" (default, the extension's Philox streams) or "aihwkit" (``torch.normal_`` in
    AIHWKIT's order, bit-equal with AIHWKIT); see :func:`program_layer`.

    Returns:
        `model`.

    Raises:
        ValueError: no analog layer in `model`; a layer whose weights are all zero or not finite
            (the message names it); unknown device model.
    """
    layers = _layers_or_raise(model, "program")
    # Check every layer first, so that a bad one leaves the model untouched.
    for name, layer in layers:
        try:
            check_programmable(layer, generator, draws)
        except ValueError as err:
            raise ValueError(f"{_named(name)}: {err}") from None
    for _, layer in layers:
        program_layer(layer, generator, draws)
    return model


def _not_programmed(layers: list[tuple[str, AnalogLinear]], where: str, hint: str) -> None:
    missing = [name or "<root>" for name, layer in layers if not is_programmed(layer)]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise RuntimeError(
            f"{where}: {len(missing)} of {len(layers)} analog layers are not programmed ({shown}); {hint}"
        )


def drift(model: nn.Module, t_seconds: float, generator: torch.Generator | None = None,
          draws: str = "philox") -> nn.Module:
    """Drift every AnalogLinear of `model` to `t_seconds` s after programming (see
    :func:`drift_layer`; `draws` as in :func:`program`). All layers must be programmed; nothing is
    changed otherwise.

    Returns:
        `model`.

    Raises:
        ValueError: bad `t_seconds` (negative, NaN, infinite); no analog layer in `model`.
        RuntimeError: some layers are not programmed (the message names them).
    """
    check_time(t_seconds)
    check_draws(draws, "drift")
    layers = _layers_or_raise(model, "drift")
    _not_programmed(layers, "drift", "call program(model) first")
    for _, layer in layers:
        drift_layer(layer, t_seconds, generator, draws)
    return model


def fold_drift_compensation(model: nn.Module) -> nn.Module:
    """Make train mode read the drift-compensated crossbar that eval mode reads: fold each
    programmed layer's global drift compensation α(t) (set by the last `drift`) into its
    programmed digital scales and set α to ones.

    `AnalogLinear` applies α in eval mode only (docs/numerics.md, "Programming, drift and drift
    compensation"), so a model trained through a programmed, drifted crossbar (a chip that learns
    late in its life) would otherwise read W(t) uncompensated in its forward and backward. After
    this call both modes read W(t)·α(t): a layer's train-mode output equals its eval-mode output
    before the call, but for the noise of training only (the weight-noise modifier stays on) and
    float rounding (the kernel applies the scales and α as two rows, one after the other; the
    folded scale row is their product). Typical use: `program(model, g)`,
    `drift(model, 86400.0, g)`, `fold_drift_compensation(model)`, then train: every step reads
    the compensated day-old crossbar.

    The layer state changes as `tile_state.fold_compensation_layer` describes: the read-out
    baseline β0 is divided by α too, so that a later `drift(model, t)` compensates relative to
    the folded scales (eval mode again reads W(t)·α(t); fold again to train on it). Folding twice
    is folding once. A layer without α (its hardware's ``device.drift_compensation`` off) is left
    as it is: both modes already read the same weights. `program` (or `unprogram`) discards the
    fold with the rest of the programming. Every layer is checked first: on an error nothing is
    changed.

    Args:
        model: an AnalogLinear, or a module containing analog layers at any depth (an analog
            pool's tiles included), every one of them programmed.

    Returns:
        `model`.

    Raises:
        ValueError: no analog layer in `model`; a layer with α whose hardware has
            ``mapping.weight_scaling = "none"`` (train mode reads no scale row for α to ride on;
            the message names it).
        RuntimeError: some layers are not programmed (the message names them).
    """
    layers = _layers_or_raise(model, "fold_drift_compensation")
    _not_programmed(layers, "fold_drift_compensation", "call program(model) and drift(model, t) first")
    foldable = []
    for name, layer in layers:
        try:
            if check_foldable(layer):
                foldable.append(layer)
        except ValueError as err:
            raise ValueError(f"{_named(name)}: {err}") from None
    for layer in foldable:
        fold_compensation_layer(layer)
    return model


def unprogram(model: nn.Module) -> nn.Module:
    """Forget the programming of every AnalogLinear of `model`: they compute with their target
    weights again. Returns `model`."""
    for _, layer in analog_layers(model):
        unprogram_layer(layer)
    return model


def post_update_steps(model: nn.Module) -> None:
    """`post_update_step` on every AnalogLinear in `model`."""
    for module in model.modules():
        if isinstance(module, AnalogLinear):
            post_update_step(module)


def clip_after_steps(optimizer: Optimizer, model: nn.Module):
    """Run `post_update_steps(model)` after every `optimizer.step()` (what AIHWKIT's analog
    optimizers do). Returns the hook handle (`.remove()` stops it)."""
    return optimizer.register_step_post_hook(lambda *_: post_update_steps(model))
