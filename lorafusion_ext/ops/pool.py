"""`pool_fusion`: the pooled LoRA fusion (docs/numerics.md, pooled LoRA fusion) as a torch op.

The compiled kernel takes a 2-D `x`; this wrapper flattens leading dimensions, broadcasts
per-sample task ids over the tokens of each sample, and registers the fake kernel (shapes for
torch.compile) and the autograd formula (gradients for x, the coefficients and, when they
require grad, the pool itself).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lorafusion_ext.ops import extension, precision

extension.load()

_OP = "lorafusion::pool_fusion"
POOL_MODES = ("sum", "lorahub")


def _hidden_width(K: int, r: int, mode: str, has_task_ids: bool) -> int:
    # lorahub with one coefficient vector merges the pool: the hidden state is rank r.
    return r if mode == "lorahub" and not has_task_ids else K * r


def _check_same(x: Tensor, **others: Tensor | None) -> None:
    # The compiled kernel checks everything; the fake kernel runs instead of it under
    # torch.compile and on the meta device, so it repeats the checks that need no data.
    for name, t in others.items():
        if t is None:
            continue
        if t.device != x.device:
            raise RuntimeError(f"{_OP}: {name} is on {t.device} but x is on {x.device}; expected the same device")
        if name != "task_ids" and t.dtype != x.dtype:
            raise RuntimeError(f"{_OP}: {name} has dtype {t.dtype} but x has dtype {x.dtype}; expected the same dtype")


@torch.library.register_fake(_OP)
def _pool_fusion_fake(x, A, B, coeffs, task_ids=None, *, scale, mode):
    _check_same(x, A=A, B=B, coeffs=coeffs, task_ids=task_ids)
    m = x.shape[0]
    width = _hidden_width(A.shape[0], A.shape[1], mode, task_ids is not None)
    return x.new_empty((m, B.shape[1])), x.new_empty((m, width))


@torch.library.register_fake("lorafusion::pool_fusion_backward")
def _pool_fusion_backward_fake(grad_y, x, A, B, coeffs, task_ids, hidden, *, scale, mode, need_x,
                               need_coeffs, need_A, need_B):
    def pick(flag: bool, like: Tensor) -> Tensor:
        return torch.empty_like(like) if flag else x.new_empty((0,))

    return pick(need_x, x), pick(need_coeffs, coeffs), pick(need_A, A), pick(need_B, B)


def _setup_context(ctx: Any, inputs: tuple, keyword_only_inputs: dict, output: tuple) -> None:
    x, A, B, coeffs, task_ids = inputs
    ctx.scale = keyword_only_inputs["scale"]
    ctx.mode = keyword_only_inputs["mode"]
    ctx.has_task_ids = task_ids is not None
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(x, A, B, coeffs, task_ids, output[1])


def _backward(ctx: Any, grad_y: Tensor, _grad_hidden: Any) -> tuple:
    x, A, B, coeffs, task_ids, hidden = ctx.saved_tensors
    need_x, need_A, need_B, need_c = ctx.needs_input_grad[:4]
    if not (need_x or need_A or need_B or need_c):
        return None, None, None, None, None
    gx, gc, gA, gB = torch.ops.lorafusion.pool_fusion_backward(
        grad_y.contiguous(), x, A, B, coeffs, task_ids if ctx.has_task_ids else None, hidden,
        scale=ctx.scale, mode=ctx.mode, need_x=need_x, need_coeffs=need_c, need_A=need_A,
        need_B=need_B,
    )
    return (gx if need_x else None, gA if need_A else None, gB if need_B else None,
            gc if need_c else None, None)


torch.library.register_autograd(_OP, _backward, setup_context=_setup_context)


def pool_fusion(
    x: Tensor,
    A: Tensor,
    B: Tensor,
    coeffs: Tensor,
    *,
    scale: float,
    mode: str = "lorahub",
    task_ids: Tensor | None = None,
) -> Tensor:
    """Δy of a LoRA pool: the adapter delta only (add the base layer's output yourself).

    Args:
        x: [..., d_in] activations: float32 / float64, or bfloat16 / float16 (computed in
            float32 and rounded once to x's dtype; `lorafusion_ext.ops.precision`).
        A: [K, r, d_in] the pool's down projections; B: [K, d_out, r] its up projections
            (same dtype and device as x; float32 also accepted with half x, as for coeffs).
        coeffs: [K] fusion coefficients shared by every token, or a table [T, K] of per-task
            coefficients selected by `task_ids`.
        scale: s = alpha / r.
        mode: "lorahub": Δy = s (Σ c_k B_k)(Σ c_k A_k) x (the published LoRAFusion
            composition); "sum": Δy = s Σ c_k B_k A_k x.
        task_ids: int64 task index per sample, of shape x.shape[:j] for some j <= x.dim() - 1
            (e.g. [batch] for x [batch, seq, d_in]): every token of a sample uses its task's row.

    Returns:
        Δy [..., d_out] in x's dtype.

    Raises:
        ValueError: bad mode, or task_ids whose shape is not a prefix of x's leading dims.
        RuntimeError: from the op, naming the argument (shape, dtype, device, range).
    """
    if mode not in POOL_MODES:
        raise ValueError(f"pool_fusion: mode = {mode!r}; expected one of {POOL_MODES}")
    if x.dim() < 1:
        raise ValueError(f"pool_fusion: x has shape {tuple(x.shape)}; expected [..., d_in]")
    if x.dtype in precision.HALF_DTYPES:
        for name, t in (("A", A), ("B", B), ("coeffs", coeffs)):
            precision.check_operand(t, x.dtype, "pool_fusion", name)
        y = pool_fusion(precision.upcast(x), precision.upcast(A), precision.upcast(B), precision.upcast(coeffs),
                        scale=scale, mode=mode, task_ids=task_ids)
        return y.to(x.dtype)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1]).contiguous()
    ids = None
    if task_ids is not None:
        if task_ids.dim() > len(lead) or tuple(task_ids.shape) != tuple(lead[: task_ids.dim()]):
            raise ValueError(
                f"pool_fusion: task_ids has shape {tuple(task_ids.shape)}; expected a prefix of "
                f"x's leading dims {tuple(lead)} (one task per sample or per token)"
            )
        extra = len(lead) - task_ids.dim()
        ids = task_ids.reshape(*task_ids.shape, *([1] * extra)).expand(*lead).reshape(-1).contiguous()
    y, _ = torch.ops.lorafusion.pool_fusion(
        x2, A.contiguous(), B.contiguous(), coeffs.contiguous(), ids, scale=float(scale), mode=mode
    )
    return y.reshape(*lead, B.shape[1])
