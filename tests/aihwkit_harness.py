"""Test-only helpers to run AIHWKIT's torch tile beside ours on the same weights and noise."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import Tensor, nn

from lorafusion_ext.ops.reference import split_sizes


def noiseless_rpu(tiles: int, learn: bool, columnwise: bool = False):
    """A `TorchInferenceRPUConfig` without output noise, mapped per column at omega 1, on
    `tiles`×`tiles` tiles (0: one tile), with or without learned out-scaling."""
    from aihwkit.simulator.configs import TorchInferenceRPUConfig

    rpu = TorchInferenceRPUConfig()
    rpu.forward.out_noise = 0.0
    rpu.mapping.weight_scaling_omega = 1.0
    rpu.mapping.weight_scaling_columnwise = True
    rpu.mapping.max_input_size = tiles
    rpu.mapping.max_output_size = tiles
    rpu.mapping.learn_out_scaling = learn
    rpu.mapping.out_scaling_columnwise = columnwise
    return rpu


def aihwkit_layer(linear: nn.Linear, rpu_config) -> nn.Module:
    """AIHWKIT 1.1 AnalogLinear with `linear`'s weights (a tile array when the config splits)."""
    from aihwkit.nn import AnalogLinear as AihwkitLinear

    return AihwkitLinear.from_digital(linear, rpu_config)


def _tiles(layer: nn.Module) -> list[list[nn.Module]]:
    """AIHWKIT tiles as [in_tile][out_tile] (a single tile is [[tile]])."""
    mod = layer.analog_module
    if hasattr(mod, "array"):
        return [list(row) for row in mod.array]
    return [[mod]]


@contextlib.contextmanager
def injected_noise(layer: nn.Module, noise_out: Tensor | None, noise_weight: Tensor | None) -> Iterator[None]:
    """Feed AIHWKIT's torch tile the given standard normals instead of its own draws.

    noise_out: [passes, n_in_tiles, tokens, out_features]; noise_weight: [out, in] (or
    [batch, out, in] with modifier.per_batch_sample). Each
    AIHWKIT tile (it, ot) takes its slice, pass after pass, in the order it draws.
    """
    import aihwkit.simulator.tiles.analog_mvm as mvm
    import aihwkit.simulator.tiles.torch_tile as torch_tile

    tiles = _tiles(layer)
    in_sizes = [row[0].in_size for row in tiles]
    out_sizes = [t.out_size for t in tiles[0]]
    current = {"it": 0, "ot": 0, "pass": 0}
    originals = {}

    def slices() -> tuple[slice, slice]:
        k0 = sum(in_sizes[: current["it"]])
        o0 = sum(out_sizes[: current["ot"]])
        return (slice(k0, k0 + in_sizes[current["it"]]), slice(o0, o0 + out_sizes[current["ot"]]))

    def fake_randn_like(t: Tensor) -> Tensor:
        assert noise_out is not None, "AIHWKIT drew output noise that the test did not provide"
        _, osl = slices()
        n = noise_out[current["pass"], current["it"], :, osl]
        current["pass"] += 1
        return n.reshape(t.shape).to(t.dtype).clone()

    def fake_randn(*shape, **kwargs) -> Tensor:
        assert noise_weight is not None, "AIHWKIT drew weight noise that the test did not provide"
        ksl, osl = slices()
        return noise_weight[..., osl, ksl].clone().to(kwargs.get("dtype") or noise_weight.dtype)

    for it, row in enumerate(tiles):
        for ot, tile in enumerate(row):
            sim = tile.tile
            originals[id(sim)] = sim.forward

            def wrapped(*args, _it=it, _ot=ot, _orig=sim.forward, **kwargs):
                current.update(it=_it, ot=_ot, **{"pass": 0})
                return _orig(*args, **kwargs)

            sim.forward = wrapped
    saved = (mvm.randn_like, torch_tile.randn)
    mvm.randn_like, torch_tile.randn = fake_randn_like, fake_randn
    try:
        yield
    finally:
        mvm.randn_like, torch_tile.randn = saved
        for row in tiles:
            for tile in row:
                tile.tile.forward = originals[id(tile.tile)]


def split_count(size: int, max_size: int | None) -> int:
    return len(split_sizes(size, max_size))


def tile_grid(layer: nn.Module) -> list[list[nn.Module]]:
    """AIHWKIT tiles of an AnalogLinear as [in_tile][out_tile]."""
    return _tiles(layer)


def set_alphas(layer: nn.Module, alpha: Tensor, columnwise: bool) -> None:
    """Write our learned out-scaling layout ([n_in, n_out], or [n_in, out] when columnwise)
    into AIHWKIT's per-tile alphas."""
    for i, row in enumerate(_tiles(layer)):
        o0 = 0
        for o, tile in enumerate(row):
            a = tile.out_scaling_alpha
            value = alpha[i, o0 : o0 + tile.out_size] if columnwise else alpha[i, o : o + 1]
            with torch.no_grad():
                a.copy_(value.reshape(a.shape))
            o0 += tile.out_size


def alpha_grads(layer: nn.Module, columnwise: bool) -> Tensor:
    """AIHWKIT's learned out-scaling gradients in our layout."""
    rows = []
    for row in _tiles(layer):
        parts = [tile.out_scaling_alpha.grad.reshape(-1) for tile in row]
        rows.append(torch.cat(parts))
    return torch.stack(rows)


def freeze_analog_weights(layer: nn.Module) -> None:
    """Freeze AIHWKIT's tile weights (train only the digital parameters)."""
    for row in _tiles(layer):
        for tile in row:
            tile.tile.weight.requires_grad_(False)
