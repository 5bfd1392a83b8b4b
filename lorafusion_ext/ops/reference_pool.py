"""Plain-PyTorch pooled LoRA fusion (docs/numerics.md): the readable specification of
`torch.ops.lorafusion.pool_fusion` and the tests' oracle.

Written for clarity, not speed: it loops over the K adapters and forms each ΔW_k = B_k A_k.
Autograd through it gives the reference gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor

POOL_MODES = ("sum", "lorahub")


def pool_fusion_reference(
    x: Tensor,
    A: Tensor,
    B: Tensor,
    coeffs: Tensor,
    task_ids: Tensor | None = None,
    *,
    scale: float,
    mode: str,
) -> Tensor:
    """Δy of a LoRA pool for the rows of `x`.

    Args:
        x: [M, d_in] tokens.
        A: [K, r, d_in] down projections; B: [K, d_out, r] up projections.
        coeffs: [K] (shared by all rows) or [T, K] with `task_ids` [M] int64 (row m uses
            coeffs[task_ids[m]]).
        scale: s = alpha / r.
        mode: "sum": Δy = s Σ_k c_k B_k A_k x; "lorahub": Δy = s (Σ_k c_k B_k)(Σ_k c_k A_k) x.

    Returns:
        Δy [M, d_out].
    """
    if mode not in POOL_MODES:
        raise ValueError(f"pool_fusion_reference: mode = {mode!r}; expected one of {POOL_MODES}")
    c = coeffs if task_ids is None else coeffs[task_ids]  # [K] or [M, K]
    K = A.shape[0]
    if mode == "sum":
        out = x.new_zeros(x.shape[0], B.shape[1])
        for k in range(K):
            ck = c[k] if c.dim() == 1 else c[:, k : k + 1]
            out = out + ck * (x @ (B[k] @ A[k]).t())
        return scale * out
    if c.dim() == 1:
        a_hat = sum(c[k] * A[k] for k in range(K))
        b_hat = sum(c[k] * B[k] for k in range(K))
        return scale * (x @ (b_hat @ a_hat).t())
    # Per-row coefficients: each row has its own merged adapter.
    rows = []
    for m in range(x.shape[0]):
        a_hat = sum(c[m, k] * A[k] for k in range(K))
        b_hat = sum(c[m, k] * B[k] for k in range(K))
        rows.append(x[m] @ (b_hat @ a_hat).t())
    return scale * torch.stack(rows) if rows else x.new_zeros(0, B.shape[1])
