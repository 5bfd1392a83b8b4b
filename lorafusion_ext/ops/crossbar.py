"""`crossbar_mvm`: the analog tile MVM (docs/numerics.md, the crossbar MVM) as a torch op.

The compiled kernel takes a 2-D `x`; this wrapper flattens leading dimensions, builds the
keyword arguments from a `HardwareConfig`, and registers the fake kernel (shapes for
torch.compile) and the straight-through autograd formula.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lorafusion_ext.hardware import HardwareConfig
from lorafusion_ext.ops import extension, precision
from lorafusion_ext.ops.kwargs import crossbar_param_names, op_kwargs
from lorafusion_ext.ops.tiling import split_sizes

extension.load()
crossbar_param_names()  # read the packing order now, outside any traced code

_OP = "lorafusion::crossbar_mvm"


def _split_count(size: int, max_size: int) -> int:
    return 1 if max_size <= 0 or size <= max_size else -(-size // max_size)


def _param(params: list[float], name: str) -> float:
    return params[crossbar_param_names().index(name)]


@torch.library.register_fake(_OP)
def _crossbar_mvm_fake(x, weight, out_scales, bias, rng, noise_out=None, noise_weight=None, input_range=None, *,
                       params, need_aux, **_: Any):
    max_in, max_out = int(_param(params, "max_in")), int(_param(params, "max_out"))
    m, n = x.shape[0], weight.shape[0]
    tin = _split_count(weight.shape[1], max_in)
    tiles = tin * _split_count(n, max_out)
    y = x.new_empty((tin, m, n) if _param(params, "per_input_tile") else (m, n))
    s = x.new_empty((tiles, m))
    mask = x.new_empty((tin, m, n) if need_aux else (0,), dtype=torch.bool)
    passes = x.new_empty((tiles, m), dtype=torch.int32)
    return y, s, mask, passes, torch.empty_like(rng)


@torch.library.register_fake("lorafusion::crossbar_mvm_backward")
def _crossbar_mvm_backward_fake(grad_y, x, weight, *args, need_grad_x, need_grad_weight, **_: Any):
    gx = torch.empty_like(x) if need_grad_x else x.new_empty((0,))
    gw = torch.empty_like(weight) if need_grad_weight else weight.new_empty((0,))
    return gx, gw


def _setup_context(ctx: Any, inputs: tuple, keyword_only_inputs: dict, output: tuple) -> None:
    x, weight, out_scales, bias, _, _, noise_weight, _ = inputs
    _, s, mask, _, rng = output
    ctx.params = keyword_only_inputs["params"]
    ctx.training = keyword_only_inputs["training"]
    ctx.need_aux = keyword_only_inputs["need_aux"]
    ctx.has_bias = bias is not None
    ctx.save_for_backward(x, weight, out_scales, rng, s, mask, noise_weight)


def _backward(ctx: Any, grad_y: Tensor, *_: Any) -> tuple:
    x, weight, out_scales, rng, s, mask, noise_weight = ctx.saved_tensors
    need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if not ctx.need_aux:
        raise RuntimeError(
            "lorafusion::crossbar_mvm: backward needs the forward's clamp masks; call it through "
            "lorafusion_ext.ops.crossbar_mvm (which sets need_aux when gradients are required)"
        )
    grad_x = grad_w = None
    if need_x or need_w:
        gx, gw = torch.ops.lorafusion.crossbar_mvm_backward(
            grad_y.contiguous(), x, weight, out_scales, rng, s, mask, noise_weight, params=ctx.params,
            training=ctx.training, need_grad_x=need_x, need_grad_weight=need_w,
        )
        grad_x = gx if need_x else None
        grad_w = gw if need_w else None
    grad_b = grad_y.sum(0) if ctx.has_bias and ctx.needs_input_grad[3] else None
    return grad_x, grad_w, None, grad_b, None, None, None, None


torch.library.register_autograd(_OP, _backward, setup_context=_setup_context)


@dataclass(frozen=True)
class CrossbarAux:
    """What a crossbar call did: `input_scales` [tiles, tokens] (the DAC scale s of the last
    pass), `passes` int32 [tiles, tokens] (bound-management passes taken per token)."""

    input_scales: Tensor
    passes: Tensor


def crossbar_mvm(
    x: Tensor,
    weight: Tensor,
    out_scales: Tensor,
    bias: Tensor | None,
    rng: Tensor,
    hardware: HardwareConfig,
    *,
    training: bool = False,
    noise_out: Tensor | None = None,
    noise_weight: Tensor | None = None,
    return_aux: bool = False,
    per_input_tile: bool = False,
    sample_rows: int | None = None,
) -> Tensor | tuple[Tensor, CrossbarAux]:
    """Analog MVM of `x` through crossbar tiles holding `weight`.

    Args:
        x: [..., in_features] activations: float32 / float64, or bfloat16 / float16 (computed
            in float32 and rounded once to x's dtype; `lorafusion_ext.ops.precision`).
        weight: [out_features, in_features] normalised tile weights (|W| <= 1 per tile row
            when mapped), same dtype and device (float32 also accepted with half x; so for
            out_scales, bias and the noise tensors).
        out_scales: [S, input_tiles, out_features] digital scales applied in order after the
            ADC (mapping scales, drift compensation...); S may be 0.
        bias: [out_features] digital bias, added once after the tiles are summed, or None.
        rng: int64 [2] = (seed, offset): the noise of this call (same values, same noise).
        hardware: the configuration (DAC/ADC, noise, bound management, tiles, modifier).
        training: apply the training modifier (weight noise) of `hardware`.
        noise_out: test-only explicit output noise [max_passes, input_tiles, tokens, out].
        noise_weight: test-only explicit modifier noise [out_features, in_features]
            ([batch, out_features, in_features] with `modifier.per_batch_sample`).
        return_aux: also return a `CrossbarAux`.
        per_input_tile: return each input tile's output separately, not summed:
            y [input_tiles, ..., out_features] (bias must be None). Used for weights that
            differ per input tile outside the op (learned out-scaling).
        sample_rows: with `hardware.modifier.per_batch_sample` in training, the token rows of
            one batch sample (each gets its own weight-noise draw); None: from x's shape
            (`HardwareConfig.sample_rows`), for a caller that flattened x itself.

    Returns:
        y: [..., out_features] in x's dtype (and the aux record, in the compute dtype, when
        `return_aux`).
    """
    if x.dim() < 1:
        raise ValueError(f"crossbar_mvm: x has shape {tuple(x.shape)}; expected [..., in_features]")
    if x.dtype in precision.HALF_DTYPES:
        for name, t in (("weight", weight), ("out_scales", out_scales), ("bias", bias),
                        ("noise_out", noise_out), ("noise_weight", noise_weight)):
            precision.check_operand(t, x.dtype, "crossbar_mvm", name)
        out = crossbar_mvm(
            precision.upcast(x), precision.upcast(weight), precision.upcast(out_scales), precision.upcast(bias),
            rng, hardware, training=training, noise_out=precision.upcast(noise_out),
            noise_weight=precision.upcast(noise_weight), return_aux=return_aux, per_input_tile=per_input_tile,
            sample_rows=sample_rows,
        )
        if return_aux:
            return out[0].to(x.dtype), out[1]
        return out.to(x.dtype)
    for name, t in (("weight", weight), ("out_scales", out_scales), ("bias", bias),
                    ("noise_out", noise_out), ("noise_weight", noise_weight)):
        if t is not None and t.device != x.device:
            raise ValueError(f"crossbar_mvm: {name} is on {t.device}; expected the device of x ({x.device})")
    if out_scales.requires_grad:
        raise ValueError("crossbar_mvm: out_scales must not require grad (apply trainable scales outside the op)")
    # AIHWKIT-Lightning's output noise (training only, split over the input tiles), resolved here.
    hardware = hardware.for_call(len(split_sizes(x.shape[-1], hardware.tiles.max_in)), training)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1]) if x.dim() != 2 else x
    need_aux = torch.is_grad_enabled() and (
        x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    )
    if need_aux and hardware.adc.asymmetry != 0:
        raise ValueError(
            "crossbar_mvm: hardware.adc.asymmetry (AIHWKIT forward.out_asymmetry) is modelled for inference "
            "only (no gradient): call under torch.no_grad() or with inputs and weights that do not require grad"
        )
    if per_input_tile and bias is not None:
        raise ValueError("crossbar_mvm: bias must be None with per_input_tile (add it after summing the tiles)")
    overrides: dict[str, Any] = {"per_input_tile": True} if per_input_tile else {}
    if sample_rows is None:
        sample_rows = hardware.sample_rows(x.shape, training)
    elif sample_rows < 0 or (sample_rows > 0 and x2.shape[0] % sample_rows):
        raise ValueError(f"crossbar_mvm: sample_rows = {sample_rows}; expected 0 or a divisor of the "
                         f"{x2.shape[0]} token rows of x")
    if sample_rows:
        if not (training and hardware.modifier.per_batch_sample):
            raise ValueError(f"crossbar_mvm: sample_rows = {sample_rows} needs training=True and "
                             "hardware.modifier.per_batch_sample (per-sample weight noise); pass 0 or None")
        overrides["modifier_sample_rows"] = sample_rows
    kwargs = op_kwargs(hardware, **overrides)
    y, s, _, passes, _ = torch.ops.lorafusion.crossbar_mvm(
        x2, weight, out_scales, bias, rng, noise_out, noise_weight, **kwargs,
        training=training, need_aux=need_aux,
    )
    if per_input_tile:
        y = y.reshape(y.shape[0], *lead, weight.shape[0])
    else:
        y = y.reshape(*lead, weight.shape[0])
    if return_aux:
        return y, CrossbarAux(s, passes)
    return y


def crossbar_mvm_inference(
    x: Tensor,
    weight: Tensor,
    out_scales: Tensor,
    bias: Tensor | None,
    rng: Tensor,
    params: list[float],
    *,
    training: bool,
    input_range: Tensor | None = None,
) -> Tensor:
    """The compiled op called below autograd, for a caller that wants no gradient and has
    prepared everything once (`AnalogLinear`'s no-gradient path, one-token decode steps):
    `x` [tokens, in] 2-D contiguous in the compute dtype, the other operands as `crossbar_mvm`
    takes them, `params` from `op_kwargs(...)["params"]`. Returns y [tokens, out]; the caller
    moves `rng` on. No argument checks here beyond the compiled op's own.

    `input_range` [input_tiles, output_tiles]: learned input ranges fused into the DAC loop (of
    the CPU and the CUDA kernel), tile (i, o) reading clamp(x, -|r|, |r|) / r (AIHWKIT's `pre_forward`); the
    factor r goes back in through `out_scales` (`nn.input_range.range_rows`)."""
    with torch._C._AutoDispatchBelowAutograd():
        return torch.ops.lorafusion.crossbar_mvm.default(
            x, weight, out_scales, bias, rng, None, None, input_range, params=params, training=training,
            need_aux=False,
        )[0]
