"""Learned input ranges per tile (AIHWKIT 1.1's `pre_post.input_range`; docs/numerics.md,
"Learned input ranges").

Every tile (input tile i, output tile o) holds a range r[i, o] > 0. Its input x_i (the input
tile's columns) is clamped to [-r, r] and divided by r before the DAC, and its output is
multiplied by r again after the ADC, together with the mapping scales: y_t * fl(r * ms), as
AIHWKIT's `TorchInferenceTile.pre_forward` / `post_forward`. The first `init_from_data`
training forwards set r from the data (`init_from_data`), and the gradient of r is AIHWKIT's
`InputRangeForward.backward` (`InputRangeGradient` here), written with the same torch
operations in the same order, so that ranges trained with the same optimiser agree bit for bit.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lorafusion_ext.hardware import HardwareConfig, InputRange
from lorafusion_ext.nn.mapping import TileLayout


class ClipCount:
    """The outputs a tile's ADC clipped in a forward (|y_t| >= out_bound), filled in after the
    tile's MVM and read by the range's backward (`manage_output_clipping`)."""

    def __init__(self) -> None:
        self.clipped: int | None = None


class InputRangeGradient(torch.autograd.Function):
    """Identity on the clamped tile input x_c [M, Kt]; its backward passes the gradient of x_c
    unchanged and gives the range r [1] AIHWKIT's gradient (`InputRangeForward.backward`):

        g = sum(min(0, [x_c >= r] * d)) - sum(max(0, [x_c <= -r] * d))
        g *= r; g *= gradient_scale                       (gradient_relative only)
        g -= (1 - p_out) * r * [p_out < output_min_percentage]   (manage_output_clipping)
        g += decay * r * [mean(|x_c| < r) > input_min_percentage]  (decay > 0)

    with p_out = 1 - clipped outputs / d.numel(), as AIHWKIT's `TileWithPeriphery.post_backward`
    (its torch tile raises NotImplementedError there instead)."""

    @staticmethod
    def forward(ctx: Any, x_input: Tensor, input_range: Tensor, ir: InputRange,  # type: ignore[override]
                clips: ClipCount | None = None) -> Tensor:
        ctx.save_for_backward(x_input, input_range)
        ctx.ir = ir
        ctx.clips = clips
        return x_input

    @staticmethod
    def backward(ctx: Any, d_output: Tensor) -> tuple:  # type: ignore[override]
        x_input, input_range = ctx.saved_tensors
        ir: InputRange = ctx.ir
        upper_thres = x_input >= input_range
        lower_thres = x_input <= -input_range
        ir_grad = torch.zeros_like(input_range)
        ir_grad += torch.clamp(upper_thres * d_output, min=None, max=0.0).sum()
        ir_grad -= torch.clamp(lower_thres * d_output, min=0.0, max=None).sum()
        if ir.gradient_relative:
            # AIHWKIT scales by gradient_scale only with a relative gradient.
            ir_grad *= input_range
            ir_grad *= ir.gradient_scale
        if ir.manage_output_clipping and ctx.clips is not None and ctx.clips.clipped is not None:
            output_percentage = 1.0 - ctx.clips.clipped / d_output.numel()
            ir_grad -= (1.0 - output_percentage) * input_range * (output_percentage < ir.output_min_percentage)
        if ir.decay > 0:
            percentage = (x_input.abs() < input_range).float().mean()
            ir_grad += ir.decay * input_range * (percentage > ir.input_min_percentage)
        return d_output, ir_grad, None, None


@torch.no_grad()
def init_from_data(ranges: Tensor, update_idx: Tensor, x: Tensor, layout: TileLayout, ir: InputRange) -> None:
    """AIHWKIT's `apply_input_range(update_from_data=True)` for every tile, in place: while a
    tile's counter is below `init_from_data`, r = (r * idx + init_std_alpha * std(x_i)) / (idx + 1)
    and idx += 1 when std(x_i) > 0; then r = |r|.

    Args:
        ranges: [n_in_tiles, n_out_tiles] the ranges (their `.data`).
        update_idx: [n_in_tiles, n_out_tiles] float counters of the data batches seen.
        x: [M, in_features] the layer's input.
    """
    if not ir.init_from_data or bool((update_idx >= ir.init_from_data).all()):
        return
    k0 = 0
    for i, kt in enumerate(layout.in_sizes):
        std = None
        for o in range(layout.n_out):
            idx = update_idx[i, o : o + 1]
            if idx < ir.init_from_data:
                if std is None:
                    std = x[:, k0 : k0 + kt].std()
                r = ranges[i, o : o + 1]
                if std > 0.0:
                    r.copy_((r * idx + ir.init_std_alpha * std) / (idx + 1))
                    idx += 1
                r.copy_(r.abs())
        k0 += kt


@torch.no_grad()
def init_fast(ranges: Tensor, update_idx: Tensor, x_min: Tensor, x_max: Tensor, x: Tensor, layout: TileLayout,
              ir: InputRange) -> None:
    """AIHWKIT-Lightning's `apply_input_range_fast(update_from_data=True)` for every tile, in
    place: while a tile's counter is below `init_from_data`, its running extremes x_min, x_max
    take the batch's min(x_i), max(x_i) (added to their start values -/+1e-5 the first time; then
    with momentum `act_range_momentum`, or the running extremes when it is -1), idx += 1, and
    r = max(|x_min|, |x_max|), the same torch operations in the same order.

    Args:
        ranges, update_idx, x_min, x_max: [n_in_tiles, n_out_tiles] (the ranges' `.data`).
        x: [M, in_features] the layer's input.
    """
    if not ir.init_from_data or bool((update_idx >= ir.init_from_data).all()):
        return
    m = ir.act_range_momentum
    k0 = 0
    for i, kt in enumerate(layout.in_sizes):
        x_i = x[:, k0 : k0 + kt]
        for o in range(layout.n_out):
            idx = update_idx[i, o : o + 1]
            if idx < ir.init_from_data:
                lo, hi = x_i.min(), x_i.max()
                mn, mx = x_min[i, o : o + 1], x_max[i, o : o + 1]
                if mn.min() > -1.1e-5 and mx.max() < 1.1e-5:
                    mn.copy_(mn + lo)
                    mx.copy_(mx + hi)
                elif m == -1:
                    mn.copy_(torch.minimum(mn, lo))
                    mx.copy_(torch.maximum(mx, hi))
                else:
                    mn.copy_(mn * m + lo * (1 - m))
                    mx.copy_(mx * m + hi * (1 - m))
                idx += 1
                ranges[i, o : o + 1].copy_(torch.maximum(mn.abs(), mx.abs()))
        k0 += kt


def clamp_tile_input(x_i: Tensor, r: Tensor) -> Tensor:
    """x_i clamped to [-|r|, |r|] at the range's value (no gradient to r, as AIHWKIT's
    `clamp(values, min=-abs(r.item()), max=abs(r.item()))`)."""
    bound = abs(r.item())
    return torch.clamp(x_i, min=-bound, max=bound)


def tile_ranges(ranges: Tensor, layout: TileLayout) -> list[list[Tensor]]:
    """Each tile's range as a [1] view of `ranges` [n_in_tiles, n_out_tiles], [i][o]. One view
    per tile serves all three of its uses (clamp and division, `InputRangeGradient`, the output
    factor), so that their gradients meet in one buffer in the order AIHWKIT's single tile
    parameter receives them: output factor, division, `InputRangeGradient`."""
    return [[ranges[i, o : o + 1] for o in range(layout.n_out)] for i in range(layout.n_in)]


def scaled_input(x: Tensor, ranges: list[list[Tensor]], layout: TileLayout, o: int, ir: InputRange,
                 clips: list[ClipCount] | None = None) -> Tensor:
    """The DAC input of output tile column `o`: concat_i(clamp(x_i, r) / r) [M, in_features]
    with r = ranges[i][o] (`tile_ranges`; differentiable in x and the ranges, AIHWKIT's graph:
    clamp, then `InputRangeGradient`, then the division)."""
    parts = []
    k0 = 0
    for i, kt in enumerate(layout.in_sizes):
        r = ranges[i][o]
        if ir.fast_mode:
            # AIHWKIT-Lightning's fast mode: torch.clamp with r as its bounds is r's only gradient.
            x_c = torch.clamp(x[:, k0 : k0 + kt], min=-r, max=r)
            parts.append(x_c / r.detach())
            k0 += kt
            continue
        x_c = clamp_tile_input(x[:, k0 : k0 + kt], r)
        if r.requires_grad and torch.is_grad_enabled():
            x_c = InputRangeGradient.apply(x_c, r, ir, None if clips is None else clips[i])
        # AIHWKIT-Lightning (scaling_gradient False): no gradient of r through the division.
        parts.append(x_c / (r if ir.scaling_gradient else r.detach()))
        k0 += kt
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def tile_scale(ranges: list[list[Tensor]], scales: Tensor | None, hw: HardwareConfig, i: int, o: int, o0: int,
               size: int) -> Tensor:
    """Tile (i, o)'s output factor fl(r * ms) as AIHWKIT's `post_forward` forms it: r [1]
    (`tile_ranges`) times the tile's mapping scales, [size] per row or [1] per tile, or r alone
    without mapping."""
    r = ranges[i][o]
    if hw.input_range is not None and not hw.input_range.scaling_gradient:
        r = r.detach()  # AIHWKIT-Lightning: the output factor gives r no gradient
    if scales is None or hw.mapping.weight_scaling == "none":
        return r
    ms = scales[i, o0 : o0 + size] if hw.mapping.weight_scaling == "row" else scales[i, o0 : o0 + 1]
    return r * ms


def range_rows(ranges: Tensor, scales: Tensor | None, hw: HardwareConfig, layout: TileLayout) -> Tensor:
    """The constant periphery row of every tile, fl(r * ms), as [n_in_tiles, out_features]
    (detached: for calls where the ranges need no gradient)."""
    rows = []
    views = tile_ranges(ranges.detach(), layout)
    for i in range(layout.n_in):
        pieces = []
        o0 = 0
        for o, size in enumerate(layout.out_sizes):
            s = tile_scale(views, None if scales is None else scales.detach(), hw, i, o, o0, size)
            pieces.append(s.expand(size))
            o0 += size
        rows.append(torch.cat(pieces))
    return torch.stack(rows)
