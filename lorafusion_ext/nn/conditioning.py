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

One layer's step, below `AnalogLinear` (whose `post_update_step` calls it); the model walkers
`post_update_steps` / `clip_after_steps` are in `lorafusion_ext.nn.deploy`.
"""

from __future__ import annotations

import torch

from lorafusion_ext.nn.mapping import clip_level, tile_blocks


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
    if m.clip_scope != "tile":
        # AIHWKIT-Lightning's clip_weights: the target weights at sigma * std of the whole layer
        # ("layer") or of each output row ("channel"), in their own units, the same torch calls;
        # the remap that Mapping_ requires lets the mapping follow the clipped weights.
        w = layer.weight
        level = m.clip_sigma * w.std(None if m.clip_scope == "layer" else 1, keepdim=True)
        w.data.clamp_(-level, level)
        layer.held_weight = None
        layer.held_scales = None
        return
    w_norm, scales = (t.detach() for t in layer.tile_weights())
    new_norm = torch.empty_like(w_norm)
    new_w = torch.empty_like(layer.weight)
    alpha = layer.out_scaling
    for it, ot, rows, cols in tile_blocks(layer.layout):
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
