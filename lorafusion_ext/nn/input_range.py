"""Learned input ranges per tile (AIHWKIT 1.1's `pre_post.input_range`; docs/numerics.md,
"Learned input ranges").

Every tile (input tile i, output tile o) holds a range r[i, o] > 0. Its input x_i (the input
tile's columns) is clamped to [-r, r] and divided by r before the DAC, and its output is
multiplied by r again after the ADC, together with the mapping scales: y_t * fl(r * ms), as
AIHWKIT's `TorchInferenceTile.pre_forward` / `post_forward`. The first `init_from_data`
training forwards set r from the data (`init_from_data`), and the gradient of r is AIHWKIT's
`InputRangeForward.backward` (`range_gradient` here, in `RangedInputs`), written with the same torch
operations in the same order, so that ranges trained with the same optimiser agree bit for bit.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from lorafusion_ext.hardware import HardwareConfig, InputRange
from lorafusion_ext.nn.mapping import TileLayout


class ClipCount:
    """The outputs a tile's ADC clipped in a forward (|y_t| >= out_bound), filled in after the
    tile's MVM and read by the range's backward (`manage_output_clipping`)."""

    def __init__(self) -> None:
        self.clipped: int | None = None


def range_gradient(x_c: Tensor, r: Tensor, d_output: Tensor, ir: InputRange, clips: ClipCount | None) -> Tensor:
    """AIHWKIT's gradient of one tile's range r [1] (`InputRangeForward.backward`) from its
    clamped input x_c [M, Kt] and the gradient d_output [M, Kt] that reaches x_c:

        g = sum(min(0, [x_c >= r] * d)) - sum(max(0, [x_c <= -r] * d))
        g *= r; g *= gradient_scale                       (gradient_relative only)
        g -= (1 - p_out) * r * [p_out < output_min_percentage]   (manage_output_clipping)
        g += decay * r * [mean(|x_c| < r) > input_min_percentage]  (decay > 0)

    with p_out = 1 - clipped outputs / d.numel(), as AIHWKIT's `TileWithPeriphery.post_backward`
    (its torch tile raises NotImplementedError there instead). The sums run over the same values
    as AIHWKIT's (`where` gives +0 where its product gives -0, which changes no sum), so they
    round alike."""
    ir_grad = torch.zeros_like(r)
    ir_grad += torch.where(x_c >= r, d_output, 0.0).clamp_(max=0.0).sum()
    ir_grad -= torch.where(x_c <= -r, d_output, 0.0).clamp_(min=0.0).sum()
    if ir.gradient_relative:
        # AIHWKIT scales by gradient_scale only with a relative gradient.
        ir_grad *= r
        ir_grad *= ir.gradient_scale
    if ir.manage_output_clipping and clips is not None and clips.clipped is not None:
        output_percentage = 1.0 - clips.clipped / d_output.numel()
        ir_grad -= (1.0 - output_percentage) * r * (output_percentage < ir.output_min_percentage)
    if ir.decay > 0:
        percentage = (x_c.abs() < r).float().mean()
        ir_grad += ir.decay * r * (percentage > ir.input_min_percentage)
    return ir_grad


class RangedInputs(torch.autograd.Function):
    """The DAC inputs of every output tile column o at once, concat_i(clamp(x_i, r[i][o]) /
    r[i][o]) [M, in_features] each, with one backward for all of them.

    It computes what AIHWKIT's per-tile graph (clamp, `InputRangeForward`, division) computes,
    value for value, without that graph's per-tile copies of the whole input gradient: the
    gradient of x is written tile by tile into one buffer. Each tile's range view enters twice
    (first the division's, then `InputRangeForward`'s), so that its three gradients meet in the
    order AIHWKIT's single tile parameter receives them: output factor (`tile_scale`, later in the
    forward), division, `InputRangeForward`. The clamp's gradient is 1 on the closed range on
    every torch (docs/numerics.md, "Learned input ranges"). In AIHWKIT-Lightning's `fast_mode`
    the clamp with r as its bounds is r's only gradient, there through the division's slot."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, layout: TileLayout, ir: InputRange,  # type: ignore[override]
                clips: list[list[ClipCount]] | None, *views: Tensor) -> tuple[Tensor, ...]:
        n = layout.n_in * layout.n_out
        r_div = views[:n]
        outs, clamped = [], []
        for o in range(layout.n_out):
            xs = x.new_empty(x.shape)
            k0 = 0
            for i, kt in enumerate(layout.in_sizes):
                r = r_div[i * layout.n_out + o]
                x_i = x[:, k0 : k0 + kt]
                if ir.fast_mode:
                    x_c = torch.clamp(x_i, min=-r, max=r)
                else:  # AIHWKIT's bounds are the range's value, -|r.item()| and |r.item()|
                    b = abs(r.item())
                    x_c = torch.clamp(x_i, min=-b, max=b)
                torch.div(x_c, r, out=xs[:, k0 : k0 + kt])
                clamped.append(x_c)
                k0 += kt
            outs.append(xs)
        ctx.layout, ctx.ir, ctx.clips = layout, ir, clips
        ctx.save_for_backward(x, *outs, *clamped, *r_div)
        return tuple(outs)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *d_outs: Tensor) -> tuple:  # type: ignore[override]
        layout: TileLayout = ctx.layout
        ir: InputRange = ctx.ir
        n_in, n_out = layout.n_in, layout.n_out
        n = n_in * n_out
        saved = ctx.saved_tensors
        x, outs, clamped, r_div = saved[0], saved[1 : 1 + n_out], saved[1 + n_out : 1 + n_out + n], saved[1 + n_out + n :]
        want_x = ctx.needs_input_grad[0]
        x_pieces: list[Tensor | None] = [None] * n_in
        div_grads: list[Tensor | None] = [None] * n
        irg_grads: list[Tensor | None] = [None] * n
        # Last column first: the order autograd sums the per-column gradients of x in AIHWKIT's
        # graph (its later output tiles' nodes run first), so x's gradient rounds alike.
        for o in reversed(range(n_out)):
            d_xs = d_outs[o]
            k0 = 0
            for i, kt in enumerate(layout.in_sizes):
                t = i * n_out + o
                r, x_c = r_div[t], clamped[o * n_in + i]
                d = d_xs[:, k0 : k0 + kt]
                g = d / r  # the division's gradient of x_c
                x_i = x[:, k0 : k0 + kt]
                if ir.fast_mode:
                    if ctx.needs_input_grad[4 + t]:
                        # torch.clamp's gradients of its tensor bounds max = r and min = -r: with
                        # min > max (r < 0) every output is max, and all of the gradient is max's.
                        neg = r < -r
                        div_grads[t] = (torch.where((x_i > r) | neg, g, 0.0).sum_to_size(r.shape)
                                        - torch.where((x_i < -r) & ~neg, g, 0.0).sum_to_size(r.shape))
                    mask = (x_i >= -r) & (x_i <= r)
                else:
                    if ir.scaling_gradient and ctx.needs_input_grad[4 + t]:
                        # torch's division gradient of r, -d * ((x_c / r) / r), whose sum is minus
                        # the sum of d * (xs / r) (xs = x_c / r, the same value).
                        q = outs[o][:, k0 : k0 + kt] / r
                        div_grads[t] = (d * q).sum_to_size(r.shape).neg_()
                    if ctx.needs_input_grad[4 + n + t]:
                        clip = None if ctx.clips is None else ctx.clips[o][i]
                        irg_grads[t] = range_gradient(x_c, r, g, ir, clip)
                    # x on the closed range [-|r|, |r|] is exactly where the clamp kept it.
                    mask = x_c == x_i
                if want_x:
                    piece = torch.where(mask, g, 0.0)
                    prev = x_pieces[i]
                    x_pieces[i] = piece if prev is None else prev.add_(piece)
                k0 += kt
        x_grad = None
        if want_x:
            pieces = [p for p in x_pieces if p is not None]
            x_grad = pieces[0] if n_in == 1 else torch.cat(pieces, dim=1)
        return (x_grad, None, None, None, *div_grads, *irg_grads)


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


def tile_ranges(ranges: Tensor, layout: TileLayout) -> list[list[Tensor]]:
    """Each tile's range as a [1] view of `ranges` [n_in_tiles, n_out_tiles], [i][o]. One view
    per tile serves all three of its uses (clamp and division, `InputRangeForward`, the output
    factor), so that their gradients meet in one buffer in the order AIHWKIT's single tile
    parameter receives them: output factor, division, `InputRangeForward` (`RangedInputs`)."""
    return [[ranges[i, o : o + 1] for o in range(layout.n_out)] for i in range(layout.n_in)]


def scaled_inputs(x: Tensor, ranges: list[list[Tensor]], layout: TileLayout, ir: InputRange,
                  clips: list[list[ClipCount]] | None = None) -> list[Tensor]:
    """The DAC input of every output tile column o, concat_i(clamp(x_i, r) / r) [M, in_features]
    with r = ranges[i][o] (`tile_ranges`), differentiable in x and the ranges as AIHWKIT's
    per-tile graph (`RangedInputs`). `clips[o][i]` (optional) is the tile's `ClipCount` for
    `manage_output_clipping`."""
    views = [ranges[i][o] for i in range(layout.n_in) for o in range(layout.n_out)]
    # Each view twice: the division's gradient, then InputRangeForward's (RangedInputs).
    return list(RangedInputs.apply(x, layout, ir, clips, *views, *views))


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
