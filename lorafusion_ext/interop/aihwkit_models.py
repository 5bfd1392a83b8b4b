"""Model conversion between AIHWKIT 1.1 (`TorchInferenceRPUConfig` layers), AIHWKIT-Lightning 2.1
(`from_aihwkit_model`, `to_aihwkit_model(flavour="lightning")`) and this package.

An AIHWKIT `AnalogLinear` holds, per tile (input tile i, output tile o): the normalised tile
weights (the programmed / drifted ones once programmed), the mapping scales, the learned
out-scaling alpha and, after `drift_analog_weights`, the drift-compensation alpha; the digital
bias lives on the tile array (or the single tile). `from_aihwkit_model` carries all of these
into `lorafusion_ext.nn.AnalogLinear` so that deterministic outputs are identical;
`to_aihwkit_model` does the reverse.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lorafusion_ext.hardware import HardwareConfig
from lorafusion_ext.nn.analog_linear import AnalogLinear
from lorafusion_ext.nn.convert import set_module


def _aihwkit_classes() -> tuple[type, type]:
    try:
        from aihwkit.nn import AnalogLinear as AihwkitLinear
        from aihwkit.nn import AnalogSequential
    except ImportError as exc:  # pragma: no cover - aihwkit is a test dependency
        raise ImportError("AIHWKIT model conversion needs aihwkit (pip install --no-deps aihwkit==1.1.0)") from exc
    return AihwkitLinear, AnalogSequential


def _grid(layer: nn.Module) -> list[list[nn.Module]]:
    mod = layer.analog_module
    if hasattr(mod, "array"):
        return [list(row) for row in mod.array]
    return [[mod]]


def _row_scale(tile: nn.Module, value: Tensor | None) -> Tensor:
    """A per-tile scale vector ([1] or [nt]) as [nt]; None: ones."""
    n = tile.out_size
    dtype = tile.tile.weight.dtype
    if value is None:
        return torch.ones(n, dtype=dtype)
    value = value.detach().reshape(-1).to("cpu", dtype)
    return value.expand(n).clone() if value.numel() == 1 else value.clone()


@torch.no_grad()
def _from_layer(src: nn.Module, seed: int | None) -> AnalogLinear:
    grid = _grid(src)
    rpu = grid[0][0].rpu_config
    hw = HardwareConfig.from_aihwkit(rpu)
    ref = grid[0][0].tile.weight
    array = src.analog_module
    bias = array.bias if isinstance(getattr(array, "bias", None), Tensor) else None
    layer = AnalogLinear(src.in_features, src.out_features, bias=bias is not None, hardware=hw, seed=seed,
                         dtype=ref.dtype)
    if layer.layout.in_sizes != tuple(row[0].in_size for row in grid) or layer.layout.out_sizes != tuple(
        t.out_size for t in grid[0]
    ):
        raise ValueError("from_aihwkit_model: the AIHWKIT layer's tile split differs from its rpu_config's mapping")
    n, k = src.out_features, src.in_features
    w_norm = torch.empty(n, k, dtype=ref.dtype)
    scales = torch.empty(layer.layout.n_in, n, dtype=ref.dtype)
    reference = torch.empty(n, k, dtype=ref.dtype)
    drift = torch.ones(layer.layout.n_in, layer.layout.n_out, dtype=ref.dtype)
    programmed = False
    k0 = 0
    for i, row in enumerate(grid):
        o0 = 0
        for o, tile in enumerate(row):
            rows, cols = slice(o0, o0 + tile.out_size), slice(k0, k0 + tile.in_size)
            w_norm[rows, cols] = tile.tile.weight.detach().cpu()
            scales[i, rows] = _row_scale(tile, tile.get_mapping_scales())
            if getattr(tile, "programmed_weights", None) is not None:
                programmed = True
                reference[rows, cols] = tile.reference_combined_weights.detach().cpu().to(ref.dtype)
            else:
                reference[rows, cols] = w_norm[rows, cols]
            alpha = getattr(tile, "alpha", None)
            if isinstance(alpha, Tensor):
                drift[i, o] = alpha.detach().reshape(-1)[0]
            if layer.input_range is not None:
                # AIHWKIT: one range and one data-initialisation counter per tile, [1] each.
                layer.input_range[i, o] = tile.input_range.detach().reshape(-1)[0]
                layer.input_range_update_idx[i, o] = tile.input_range_update_idx.detach().reshape(-1)[0]
            learned = tile.get_learned_out_scales()
            if learned is not None:
                value = learned.detach().reshape(-1).cpu()
                if hw.mapping.out_scaling_columnwise:
                    layer.out_scaling[i, rows] = value
                else:
                    layer.out_scaling[i, o] = value[0]
            o0 += tile.out_size
        k0 += row[0].in_size
    cols = layer.layout.column_tiles()
    # The target weights: what the tiles hold (before programming) times their scales.
    layer.weight.copy_(reference * scales.t()[:, cols])
    w_cur, s_cur = layer.tile_weights()
    if not (torch.equal(w_cur, reference) and torch.equal(s_cur, scales)):
        # AIHWKIT's mapping is no longer max|W| / omega (trained, clipped) or a division does not
        # give the tiles back: hold them exactly.
        layer.held_weight = reference.clone()
        layer.held_scales = scales.clone()
    if bias is not None:
        layer.bias.copy_(bias.detach().cpu())
    if programmed:
        layer.programmed_weight = w_norm
        layer.programmed_scales = scales
        layer.drift_alpha = drift if rpu.drift_compensation is not None else None
    layer.train(src.training)
    return layer.to(ref.device)


def _lightning_classes() -> tuple[type, type, type] | None:
    """AIHWKIT-Lightning's (AnalogLinear, AnalogSequential, AnalogLayerBase), or None when it is
    not installed."""
    try:
        from aihwkit_lightning.nn import AnalogLayerBase, AnalogLinear as LightningLinear, AnalogSequential
    except ImportError:
        return None
    return LightningLinear, AnalogSequential, AnalogLayerBase


@torch.no_grad()
def _from_lightning_layer(src: nn.Module, seed: int | None) -> AnalogLinear:
    """A Lightning AnalogLinear as this package's: its weights and bias (clipped in place by
    Lightning's optimizer hook, so they hold the clipping state) and its learned input ranges with
    their data-initialisation counters, one per input slice."""
    hw = HardwareConfig.from_aihwkit(src.rpu_config)
    w = src.weight
    layer = AnalogLinear(src.in_features, src.out_features, bias=src.bias is not None, hardware=hw, seed=seed,
                         dtype=w.dtype)
    if list(layer.layout.in_sizes) != list(src.in_sizes):
        raise ValueError(f"from_aihwkit_model: the Lightning layer's slices {src.in_sizes} differ from its "
                         f"rpu_config's split {layer.layout.in_sizes}")
    layer.weight.copy_(w.detach().cpu())
    layer.weight.requires_grad_(w.requires_grad)
    if src.bias is not None:
        layer.bias.copy_(src.bias.detach().cpu())
        layer.bias.requires_grad_(src.bias.requires_grad)
    if layer.input_range is not None:
        layer.input_range.copy_(src.input_range.detach().cpu().reshape(-1, 1).to(layer.input_range.dtype))
        layer.input_range_update_idx.copy_(src.input_range_update_idx.detach().cpu().reshape(-1, 1))
        if layer.input_range_x_min is not None:  # fast mode: its running extremes
            layer.input_range_x_min.copy_(src.x_min.detach().cpu().reshape(-1, 1))
            layer.input_range_x_max.copy_(src.x_max.detach().cpu().reshape(-1, 1))
    layer.train(src.training)
    return layer.to(w.device)


def from_aihwkit_model(model: nn.Module, seed: int | None = None) -> nn.Module:
    """Replace, in place, every AIHWKIT `AnalogLinear` in `model` by a
    `lorafusion_ext.nn.AnalogLinear` (and every `AnalogSequential` by an `nn.Sequential`).
    AIHWKIT-Lightning 2.1 models convert too: their `AnalogLinear` layers (weights, bias, learned
    input ranges and counters; the config through `HardwareConfig.from_aihwkit`) and
    `AnalogSequential` containers; any other Lightning layer (convolutions, RNNs) is refused.

    Carried over: tile weights (programmed / drifted ones when programmed), mapping scales,
    learned out-scaling, learned input ranges (and their data-initialisation counters),
    drift-compensation alphas, the bias and the train/eval mode, so
    deterministic outputs are identical. A programmed layer arrives as programmed (its
    crossbar state), without the device state that a new `drift()` needs: `program()` again
    for drift studies. Returns the model (a new object when `model` itself was converted).

    Args:
        model: a module tree with AIHWKIT layers (their rpu_config a TorchInferenceRPUConfig).
        seed: noise seeds of the new layers are drawn in module order from it (None: torch's RNG).

    Raises:
        ValueError: a layer's rpu_config has a field this package does not model (named).
    """
    AihwkitLinear, AnalogSequential = _aihwkit_classes()
    lightning = _lightning_classes()
    linears: tuple[type, ...] = (AihwkitLinear,)
    containers: tuple[type, ...] = (AnalogSequential,)
    if lightning is not None:
        linears += (lightning[0],)
        containers += (lightning[1],)
        for path, mod in model.named_modules():
            # Containers (AnalogSequential, the AnalogWrapper root of Lightning's convert_to_analog)
            # hold no weights of their own; any other Lightning layer does.
            if isinstance(mod, lightning[2]) and not (isinstance(mod, linears) or mod.IS_CONTAINER):
                raise ValueError(f"from_aihwkit_model: {path or 'the model'} is AIHWKIT-Lightning's "
                                 f"{type(mod).__name__}; only its AnalogLinear and AnalogSequential convert")
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    found = [(p, m) for p, m in model.named_modules() if isinstance(m, linears + containers)]
    for path, mod in found:
        if isinstance(mod, linears):
            layer_seed = None if gen is None else int(torch.randint(2**62, (1,), generator=gen))
            convert = _from_layer if isinstance(mod, AihwkitLinear) else _from_lightning_layer
            model = set_module(model, path, convert(mod, layer_seed))
    for path, mod in reversed(found):
        if isinstance(mod, containers):
            seq = nn.Sequential()
            for name, child in mod.named_children():
                seq.add_module(name, child)
            seq.train(mod.training)
            model = set_module(model, path, seq)
    return model


@torch.no_grad()
def _to_layer(src: AnalogLinear) -> nn.Module:
    AihwkitLinear, _ = _aihwkit_classes()
    rpu = src.hardware.to_aihwkit()
    rpu.runtime.data_type = _data_type(src.weight.dtype)
    dst = AihwkitLinear(src.in_features, src.out_features, bias=src.bias is not None, rpu_config=rpu)
    programmed = src.programmed_weight is not None
    if programmed:
        w_norm, scales = src.programmed_weight, src.programmed_scales
    else:
        w_norm, scales = (t.detach() for t in src.tile_weights())
    target, _ = (t.detach() for t in src.tile_weights())
    grid = _grid(dst)
    k0 = 0
    for i, row in enumerate(grid):
        o0 = 0
        for o, tile in enumerate(row):
            rows, cols = slice(o0, o0 + tile.out_size), slice(k0, k0 + tile.in_size)
            tile.tile.weight.data = w_norm[rows, cols].detach().cpu().clone()
            if src.hardware.mapping.weight_scaling != "none" or src.held_scales is not None:
                tile.set_mapping_scales(scales[i, rows].detach().cpu().clone())
            if src.input_range is not None:
                tile.input_range.data = src.input_range[i, o].detach().cpu().reshape(1).clone()
                tile.input_range_update_idx.data = (
                    src.input_range_update_idx[i, o].detach().cpu().reshape(1).to(tile.input_range_update_idx.dtype))
            if src.out_scaling is not None:
                value = src.out_scaling[i, rows] if src.hardware.mapping.out_scaling_columnwise else src.out_scaling[i, o]
                tile.set_learned_out_scales(value.detach().cpu().reshape(-1))
            if programmed:
                tile.reference_combined_weights = target[rows, cols].detach().cpu().clone()
                tile.programmed_weights = w_norm[rows, cols].detach().cpu().clone()
                if src.drift_alpha is not None:
                    tile.alpha = src.drift_alpha[i, o].detach().cpu().reshape(1).clone()
            o0 += tile.out_size
        k0 += row[0].in_size
    if src.bias is not None:
        dst.analog_module.bias.data = src.bias.detach().cpu().clone()
    dst.train(src.training)
    return dst


def _data_type(dtype: torch.dtype) -> Any:
    from aihwkit.simulator.parameters.enums import RPUDataType

    if dtype == torch.float64:
        return RPUDataType.FLOAT64
    if dtype == torch.float32:
        return RPUDataType.FLOAT
    raise ValueError(f"to_aihwkit_model: dtype {dtype} has no AIHWKIT data type; expected float32 or float64")


@torch.no_grad()
def _to_lightning_layer(src: AnalogLinear) -> nn.Module:
    lightning = _lightning_classes()
    if lightning is None:  # pragma: no cover - installed by `make install`
        raise ImportError("to_aihwkit_model(flavour='lightning') needs aihwkit-lightning "
                          "(pip install --no-deps aihwkit-lightning==2.1.0)")
    if src.programmed_weight is not None:
        raise ValueError("to_aihwkit_model(flavour='lightning'): the layer is programmed, and AIHWKIT-Lightning has "
                         "no programmed state; unprogram() it first")
    if src.held_weight is not None:
        raise ValueError("to_aihwkit_model(flavour='lightning'): the layer holds clipped tile weights with their "
                         "old mapping scales, which AIHWKIT-Lightning has no place for")
    rpu = src.hardware.to_aihwkit(flavour="lightning")
    w = src.weight
    dst = lightning[0](src.in_features, src.out_features, bias=src.bias is not None, dtype=w.dtype, rpu_config=rpu)
    dst.weight.data = w.detach().cpu().clone()
    dst.weight.requires_grad_(w.requires_grad)
    if src.bias is not None:
        dst.bias.data = src.bias.detach().cpu().clone()
        dst.bias.requires_grad_(src.bias.requires_grad)
    if src.input_range is not None:
        dst.input_range.data = src.input_range.detach().cpu().reshape(-1).to(w.dtype).clone()
        dst.input_range_update_idx.copy_(src.input_range_update_idx.detach().cpu().reshape(-1))
        if src.input_range_x_min is not None:
            dst.x_min.copy_(src.input_range_x_min.detach().cpu().reshape(-1))
            dst.x_max.copy_(src.input_range_x_max.detach().cpu().reshape(-1))
    dst.train(src.training)
    return dst.to(w.device)


def to_aihwkit_model(model: nn.Module, flavour: str = "aihwkit") -> nn.Module:
    """Replace, in place, every `lorafusion_ext.nn.AnalogLinear` in `model` by an AIHWKIT 1.1
    `AnalogLinear` (TorchInferenceRPUConfig from `HardwareConfig.to_aihwkit`), carrying the
    tile weights, mapping scales, learned out-scaling, learned input ranges, programmed / drifted state (tile
    weights and drift-compensation alphas) and bias. Returns the model (a new object when
    `model` itself was converted).

    With `flavour="lightning"`, by an AIHWKIT-Lightning 2.1 `AnalogLinear` instead
    (`to_aihwkit(flavour="lightning")`), carrying the weights, bias and learned input ranges with
    their counters; a programmed layer is refused (Lightning has no programmed state).

    Raises:
        ValueError: a layer's configuration has no equivalent there (named), or an unknown flavour.
    """
    if flavour not in ("aihwkit", "lightning"):
        raise ValueError(f"to_aihwkit_model: flavour = {flavour!r}; expected 'aihwkit' or 'lightning'")
    convert = _to_layer if flavour == "aihwkit" else _to_lightning_layer
    found = [(p, m) for p, m in model.named_modules() if isinstance(m, AnalogLinear)]
    for path, mod in found:
        model = set_module(model, path, convert(mod))
    return model
