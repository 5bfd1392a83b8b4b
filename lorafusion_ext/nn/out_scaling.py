"""Learned digital output scaling per tile (AIHWKIT's `learn_out_scaling`).

AIHWKIT gives every tile of a layer (input tile i, output tile o) its own trainable scale,
applied to the tile's output after the mapping (and drift-compensation) scales and before the
input tiles are summed: y = sum_i concat_o(alpha[i, o] * tile_out[i, o]) + bias. The scale is
one value per tile, or one per output row of the tile (`out_scaling_columnwise`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lorafusion_ext.hardware import HardwareConfig
from lorafusion_ext.nn.mapping import TileLayout


def out_shape_of(layout: TileLayout, hw: HardwareConfig) -> tuple[int, int]:
    """Shape of a layer's learned out-scaling: [n_in_tiles, n_out_tiles] (one per tile) or
    [n_in_tiles, out_features] (columnwise: one per tile row)."""
    if hw.mapping.out_scaling_columnwise:
        return (layout.n_in, sum(layout.out_sizes))
    return (layout.n_in, layout.n_out)


def expand_out_scaling(alpha: Tensor, layout: TileLayout) -> Tensor:
    """The learned scales (detached) as one periphery row per input tile: [n_in_tiles,
    out_features]. (When every output tile has one row, both shapes are the same.)"""
    alpha = alpha.detach()
    if alpha.shape[1] == layout.n_out and layout.n_out != sum(layout.out_sizes):
        return alpha[:, layout.row_tiles(alpha.device)]
    return alpha


def apply_out_scaling(parts: Tensor, alpha: Tensor, layout: TileLayout, hw: HardwareConfig) -> Tensor:
    """sum_i concat_o(parts[i][:, o] * alpha[i, o]) in AIHWKIT's order (TileModuleArray).

    Args:
        parts: [n_in_tiles, tokens, out_features], each input tile's periphery output.
        alpha: the learned scales, shape `out_shape_of(layout, hw)` (differentiable).

    Returns:
        [tokens, out_features], without bias.
    """
    columnwise = hw.mapping.out_scaling_columnwise
    y = None
    for i, part in enumerate(parts.unbind(0)):
        pieces = []
        o0 = 0
        for o, size in enumerate(layout.out_sizes):
            # AIHWKIT views a tile's alpha as [1, n] (columnwise) or [1, 1] against [tokens, n].
            a = alpha[i, o0 : o0 + size].view(1, -1) if columnwise else alpha[i, o].view(1, 1)
            piece = part if layout.n_out == 1 else part[:, o0 : o0 + size]
            pieces.append(piece * a)
            o0 += size
        row = torch.cat(pieces, dim=-1)
        y = row if y is None else y + row
    assert y is not None
    return y
