"""AIHWKIT's weight clipping and remapping after each optimizer step (`post_update_step`).

AIHWKIT never clips at conversion. Its optimizers (`AnalogSGD`, `AnalogOptimizer`) call every
tile's `post_update_step` after each step, which, per tile, on the tile's normalised weights:

1. clips (LAYER_GAUSSIAN: at sigma · std of the tile's weights, capped at `fixed_value` when
   > 0; FIXED_VALUE: at `fixed_value`);
2. remaps (CHANNELWISE_SYMMETRIC): folds the tile's scales (mapping scales times the learned
   out-scaling) into the weights, re-normalises each row to max |w| = 1, makes the row maxima
   the new mapping scales and resets the learned out-scaling to 1.

Here the target weights `weight` stay the source of truth. With a remap, the conditioned tile
weights times their new scales are the new `weight` (the mapping recomputed from it gives the
same tiles). Without a remap AIHWKIT keeps the old mapping scales, which no `weight` reproduces
exactly in floating point, so the layer holds the clipped tile weights and their scales
(`held_weight`, `held_scales`) next to `weight` = their product.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torch.optim import Optimizer

from lorafusion_ext.nn.mapping import clip_level


def _blocks(layer) -> Iterable[tuple[int, int, slice, slice]]:
    k0 = 0
    for it, kt in enumerate(layer.layout.in_sizes):
        o0 = 0
        for ot, nt in enumerate(layer.layout.out_sizes):
            yield it, ot, slice(o0, o0 + nt), slice(k0, k0 + kt)
            o0 += nt
        k0 += kt


@torch.no_grad()
def post_update_step(layer) -> None:
    """Clip and remap `layer`'s tiles once, as AIHWKIT's `post_update_step` (see the module).

    Raises:
        RuntimeError: the layer is programmed (condition the target weights, then program).
    """
    m = layer.hardware.mapping
    if m.clip_when != "update" or not (m.clips or m.remap):
        return
    if layer.programmed_weight is not None:
        raise RuntimeError(
            "post_update_step: the layer is programmed; unprogram() it, train, then program() again"
        )
    w_norm, scales = (t.detach() for t in layer.tile_weights())
    new_norm = torch.empty_like(w_norm)
    new_w = torch.empty_like(layer.weight)
    alpha = layer.out_scaling
    for it, ot, rows, cols in _blocks(layer):
        tile = w_norm[rows, cols].contiguous()
        if m.clips:
            level = clip_level(tile, layer.hardware)
            tile = torch.clamp(tile, -level, level)
        s = scales[it, rows]
        if m.remap:
            if alpha is not None:
                a = alpha[it, rows] if m.out_scaling_columnwise else alpha[it, ot].view(1)
                s = s * a.detach()
            scaled = tile * s.view(-1, 1)
            new_w[rows, cols] = scaled
        else:
            new_norm[rows, cols] = tile
            new_w[rows, cols] = tile * s.view(-1, 1)
    if m.remap:
        layer.held_weight = None
        layer.held_scales = None
        if alpha is not None:
            alpha.fill_(1.0)
    elif layer.hardware.mapping.weight_scaling != "none":
        layer.held_weight = new_norm
        layer.held_scales = scales.clone()
    layer.weight.copy_(new_w)


def post_update_steps(model: nn.Module) -> None:
    """`post_update_step` on every AnalogLinear in `model`."""
    from lorafusion_ext.nn.analog_linear import AnalogLinear

    for module in model.modules():
        if isinstance(module, AnalogLinear):
            post_update_step(module)


def clip_after_steps(optimizer: Optimizer, model: nn.Module):
    """Run `post_update_steps(model)` after every `optimizer.step()` (what AIHWKIT's analog
    optimizers do). Returns the hook handle (`.remove()` stops it)."""
    return optimizer.register_step_post_hook(lambda *_: post_update_steps(model))
