"""Weight-to-tile mapping: the tile layout of a layer, per-tile mapping scales and the
normalised weights that go onto the crossbar (docs/numerics.md, weight mapping)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import Tensor

from lorafusion_ext.hardware import HardwareConfig
from lorafusion_ext.ops.tiling import split_sizes


@dataclass(frozen=True)
class TileLayout:
    """How an [out_features, in_features] matrix splits into tiles (AIHWKIT's balanced split)."""

    in_sizes: tuple[int, ...]
    out_sizes: tuple[int, ...]

    @classmethod
    def of(cls, in_features: int, out_features: int, hw: HardwareConfig) -> "TileLayout":
        """The layout of an [out_features, in_features] matrix under `hw.tiles`."""
        return cls(
            tuple(split_sizes(in_features, hw.tiles.max_in)),
            tuple(split_sizes(out_features, hw.tiles.max_out)),
        )

    @property
    def n_in(self) -> int:
        """Number of input tiles (splits of in_features)."""
        return len(self.in_sizes)

    @property
    def n_out(self) -> int:
        """Number of output tiles (splits of out_features)."""
        return len(self.out_sizes)

    def column_tiles(self, device: torch.device | None = None) -> Tensor:
        """Input-tile index of each input feature: int64 [in_features]."""
        # Static sizes (no repeat_interleave on a tensor of counts) keep torch.compile graphs whole.
        return torch.cat([torch.full((s,), i, device=device) for i, s in enumerate(self.in_sizes)])

    def row_tiles(self, device: torch.device | None = None) -> Tensor:
        """Output-tile index of each output feature: int64 [out_features]."""
        return torch.cat([torch.full((s,), i, device=device) for i, s in enumerate(self.out_sizes)])


def mapping_scales(weight: Tensor, layout: TileLayout, hw: HardwareConfig) -> Tensor:
    """Per-tile digital output scales ms [n_in_tiles, out_features] of `weight`
    [out_features, in_features]: max|W| over each tile row ("row") or tile ("layer"),
    divided by omega; a zero maximum maps to 1. "none" gives ones."""
    n, k = weight.shape
    w = weight.detach()
    if hw.mapping.weight_scaling == "none":
        return torch.ones(layout.n_in, n, dtype=w.dtype, device=w.device)
    if layout.n_in == 1 and hw.mapping.weight_scaling == "row":
        scales = w.abs().amax(dim=1, keepdim=True).t() / hw.mapping.omega
        return torch.where(scales == 0, torch.ones_like(scales), scales)
    cols = layout.column_tiles(w.device)
    row_max = torch.zeros(n, layout.n_in, dtype=w.dtype, device=w.device).scatter_reduce(
        1, cols.expand(n, k), w.abs(), reduce="amax", include_self=True
    ).t()  # [n_in, N]
    if hw.mapping.weight_scaling == "layer":
        rows = layout.row_tiles(w.device)
        tile_max = torch.zeros(layout.n_in, layout.n_out, dtype=w.dtype, device=w.device).scatter_reduce(
            1, rows.expand(layout.n_in, n), row_max, reduce="amax", include_self=True
        )
        row_max = tile_max[:, rows]
    scales = row_max / hw.mapping.omega
    return torch.where(scales == 0, torch.ones_like(scales), scales)


def normalise(weight: Tensor, scales: Tensor, layout: TileLayout) -> Tensor:
    """Tile weights in conductance units: W / ms, each column divided by its tile's scale.
    Differentiable in `weight` (scales are constants)."""
    if layout.n_in == 1:
        return weight / scales[0][:, None]
    cols = layout.column_tiles(weight.device)
    return weight / scales.t()[:, cols]


def clip_level(block: Tensor, hw: HardwareConfig) -> Tensor | float:
    """AIHWKIT's clip level of one tile's normalised weights `block` [nt, kt] (contiguous):
    clip_sigma · std(block), capped at clip_fixed when > 0; clip_fixed alone when sigma is 0."""
    m = hw.mapping
    if m.clip_sigma > 0:
        level = block.std() * m.clip_sigma
        if m.clip_fixed > 0:
            level = min(m.clip_fixed, level)  # AIHWKIT's own min(float, tensor)
        return level
    return m.clip_fixed


@torch.no_grad()
def clip_and_remap(weight: Tensor, layout: TileLayout, hw: HardwareConfig, max_iter: int = 100) -> Tensor:
    """The conversion-time weight conditioning (`mapping.clip_when == "conversion"`): clip
    each tile's normalised weights (see `clip_level`) and re-normalise rows, iterated to the
    fixed point. Returns the conditioned target weights (same shape and units as `weight`).
    With `clip_when == "update"` (AIHWKIT) nothing happens at conversion: a copy."""
    if not hw.mapping.clips or hw.mapping.clip_when != "conversion":
        return weight.clone()
    w = weight.clone()
    if layout.n_in == 1 and layout.n_out == 1:
        return _clip_and_remap_one_tile(w, layout, hw, max_iter)
    cols = layout.column_tiles(w.device)
    for _ in range(max_iter):
        scales = mapping_scales(w, layout, hw)
        wn = normalise(w, scales, layout)
        # One clip level per tile (AIHWKIT LAYER_GAUSSIAN: sigma * std of the tile weights).
        limit = torch.empty_like(wn)
        k0 = 0
        rows = layout.row_tiles(w.device)
        for it, kt in enumerate(layout.in_sizes):
            block = wn[:, k0 : k0 + kt]
            for ot in range(layout.n_out):
                sel = rows == ot
                limit[sel, k0 : k0 + kt] = clip_level(block[sel], hw)
            k0 += kt
        clipped = torch.maximum(torch.minimum(wn, limit), -limit)
        new_w = clipped * scales.t()[:, cols]
        if torch.equal(new_w, w):
            break
        w = new_w
    return w


def _clip_and_remap_one_tile(w: Tensor, layout: TileLayout, hw: HardwareConfig, max_iter: int) -> Tensor:
    """`clip_and_remap` of a layer on one tile, on `w` (a copy it may overwrite): the same
    operations and values, the clip level broadcast rather than filled into an [out, in] limit,
    and the step computed in place. An LLM conditions hundreds of such layers, often over ten
    iterations each; fresh [out, in] buffers per step cost about as much as the arithmetic."""
    wn = torch.empty_like(w)
    for _ in range(max_iter):
        scales = mapping_scales(w, layout, hw)
        column = scales[0][:, None]
        torch.div(w, column, out=wn)
        limit = torch.as_tensor(clip_level(wn, hw), dtype=wn.dtype, device=wn.device)
        if 0.0 <= float(limit) < math.inf:
            # max(min(v, L), -L) == clamp(v, -L, L) for any v once 0 <= L < inf: one pass.
            torch.clamp(wn, -limit, limit, out=wn)
        else:  # a NaN or infinite level: keep the two-sided form's NaN / inf behaviour
            torch.minimum(wn, limit, out=wn)
            torch.maximum(wn, -limit, out=wn)
        wn.mul_(column)
        if torch.equal(wn, w):
            break
        w, wn = wn, w
    return w


def tile_blocks(layer: Any) -> Iterator[tuple[int, int, slice, slice]]:
    """(it, ot, rows, cols) of every tile of a TileLayout (or of a layer with a `layout`), input
    tile major (AIHWKIT's order): the tile's weights are ``W[rows, cols]``."""
    layout = layer if isinstance(layer, TileLayout) else layer.layout
    k0 = 0
    for it, kt in enumerate(layout.in_sizes):
        n0 = 0
        for ot, nt in enumerate(layout.out_sizes):
            yield it, ot, slice(n0, n0 + nt), slice(k0, k0 + kt)
            n0 += nt
        k0 += kt


def quantize_weights(w_norm: Tensor, res: float) -> Tensor:
    """AIHWKIT-Lightning's weight quantization (`HardwareConfig.weight_res`) of normalised tile
    weights [out, in]: rint(w / Δ) · Δ with Δ = 2 · res (res < 1) or 2 / res (a number of
    states), w / Δ clamped to ±(states / 2) first as Lightning's `UniformQuantize`;
    straight-through (the gradient passes unchanged, unmasked)."""
    states = max(res, 1.0 / res)
    step = 2.0 / states
    q = torch.clamp(w_norm / step, -states / 2, states / 2).round() * step
    return w_norm + (q - w_norm).detach()
