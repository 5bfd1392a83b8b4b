"""`LoRAFusionLinear`: a frozen layer plus a frozen LoRA pool fused by trainable coefficients,
with an optional DoRA-style magnitude (docs/numerics.md, "Pooled LoRA fusion"). The pool is
digital (`PoolLayer`, the `pool_fusion` op) or on the crossbar (`AnalogPoolLayer`,
docs/pool_on_crossbar.md)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lorafusion_ext.nn.analog_pool import AnalogPoolLayer
from lorafusion_ext.nn.lora import AdaptedLinear
from lorafusion_ext.nn.pool import PoolLayer
from lorafusion_ext.ops import precision
from lorafusion_ext.ops.pool import POOL_MODES, pool_fusion


def _per_token(values: Tensor, task_ids: Tensor, lead: torch.Size) -> Tensor:
    """Rows of `values` [T, n] selected by `task_ids` (shape: a prefix of `lead`) and shaped
    to broadcast against [*lead, n]."""
    sel = values[task_ids]
    extra = len(lead) - task_ids.dim()
    return sel.reshape(*task_ids.shape, *([1] * extra), values.shape[-1])


def _check_task_ids(task_ids: Tensor, num_tasks: int, lead: torch.Size) -> None:
    if task_ids.dtype != torch.int64:
        raise ValueError(f"LoRAFusionLinear: task_ids has dtype {task_ids.dtype}; expected torch.int64")
    if task_ids.dim() > len(lead) or tuple(task_ids.shape) != tuple(lead[: task_ids.dim()]):
        raise ValueError(
            f"LoRAFusionLinear: task_ids has shape {tuple(task_ids.shape)}; expected a prefix of the input's "
            f"leading dims {tuple(lead)}"
        )
    if task_ids.numel() and (int(task_ids.min()) < 0 or int(task_ids.max()) >= num_tasks):
        raise ValueError(
            f"LoRAFusionLinear: task_ids range over [{int(task_ids.min())}, {int(task_ids.max())}]; expected "
            f"values in [0, {num_tasks})"
        )


class LoRAFusionLinear(AdaptedLinear):
    """y = base(x) + Δy; with a magnitude m: y = m ⊙ (W0 x + Δy) / ‖W0 + ΔW‖_row + b, the norm
    detached from the graph (DoRA).

    Δy is `pool_fusion(x, A, B, c)` for a digital pool (see `lorafusion_ext.ops.pool`), or the
    two crossbar MVMs with digital mixing of an `AnalogPoolLayer` (pool on the crossbar). The
    row norm is a digital computation on target weights: W0 is the base layer's target weight,
    A and B the pool's target weights (before programming, drift or read noise), also when the
    base or the pool is analog.

    Args:
        base: the frozen layer (nn.Linear or AnalogLinear), weight [d_out, d_in].
        pool: the layer's pool, digital (`PoolLayer`) or on the crossbar (`AnalogPoolLayer`),
            with A [K, r, d_in] and B [K, d_out, r]; frozen unless the caller sets
            requires_grad on it.
        scale: s = alpha / r of the pool.
        coeffs: fusion coefficients, [K] or a per-task table [T, K]; may be the same Parameter
            object in several layers (one coefficient vector per block).
        mode: "lorahub" ((Σc B)(Σc A)) or "sum" (Σ c B A).
        magnitude: add the trainable magnitude m [d_out] ([T, d_out] with a table),
            initialised to ‖W0‖_row.

    With a coefficient table, set the task of each sample with `task_ids` (an int64 tensor
    whose shape is a prefix of the input's leading dims), e.g. through
    `lorafusion_ext.nn.convert.task_context`.

    A bfloat16 / float16 layer computes base, pool, magnitude and norm in float32 and rounds
    the output once to the input's dtype (`lorafusion_ext.ops.precision`).
    """

    def __init__(
        self,
        base: nn.Linear,
        pool: PoolLayer | AnalogPoolLayer,
        scale: float,
        coeffs: nn.Parameter,
        mode: str = "lorahub",
        magnitude: bool = False,
    ) -> None:
        super().__init__(base)
        if mode not in POOL_MODES:
            raise ValueError(f"LoRAFusionLinear: mode = {mode!r}; expected one of {POOL_MODES}")
        if pool.in_features != base.in_features or pool.out_features != base.out_features:
            raise ValueError(
                f"LoRAFusionLinear: the pool is [{pool.out_features}, {pool.in_features}] but the base layer is "
                f"[{base.out_features}, {base.in_features}]; expected the same [d_out, d_in]"
            )
        if coeffs.dim() not in (1, 2) or coeffs.shape[-1] != pool.num_adapters:
            raise ValueError(
                f"LoRAFusionLinear: coeffs has shape {tuple(coeffs.shape)}; expected [{pool.num_adapters}] "
                f"or [T, {pool.num_adapters}]"
            )
        self.pool = pool
        self.coeffs = coeffs
        self.mode = mode
        self.scale = float(scale)
        self.task_ids: Tensor | None = None
        self._norm_cache: tuple[tuple, tuple[Tensor, Tensor, Tensor]] | None = None
        if magnitude:
            with torch.no_grad():
                # DoRA's initialisation: m = ‖W0 + ΔW‖ at the initial coefficients, so that the
                # layer starts at exactly W0 x + Δy ([d_out], or [T, d_out] with a table).
                m = self.weight_norm().to(base.weight.dtype).clone()
            self.magnitude = nn.Parameter(m)
        else:
            self.register_parameter("magnitude", None)

    # ------------------------------------------------------------------ DoRA row norm
    def _frozen_products(self) -> tuple[Tensor, Tensor, Tensor]:
        """(‖W0_i‖² [d_out], W0 A_catᵀ [d_out, K·r], A_cat A_catᵀ [K·r, K·r]) of the frozen
        tensors, recomputed only when W0 or A changed."""
        w, A = self.base.weight, self.pool.A
        key = (w.data_ptr(), w._version, A.data_ptr(), A._version)
        if self._norm_cache is None or self._norm_cache[0] != key:
            with torch.no_grad():
                w, A = precision.upcast(w), precision.upcast(A)
                a_cat = A.reshape(-1, A.shape[-1])
                self._norm_cache = (key, ((w * w).sum(1), w @ a_cat.t(), a_cat @ a_cat.t()))
        return self._norm_cache[1]

    @torch.no_grad()
    def weight_norm(self) -> Tensor:
        """‖W0 + ΔW‖ per output row: [d_out], or [T, d_out] with a coefficient table.

        Uses ‖W0_i + ΔW_i‖² = ‖W0_i‖² + 2 W0_i·ΔW_i + ‖ΔW_i‖² with ΔW_i = s u_i A_cat, so no
        [d_out, d_in] matrix is formed: u_i = (c_k B_k[i])_k (sum) or (c_k B̂[i])_k (lorahub).
        """
        w0_sq, p_cat, gram = self._frozen_products()
        c = precision.upcast(self.coeffs.detach())
        B = precision.upcast(self.pool.B.detach())  # [K, d_out, r]
        cs = c if c.dim() == 2 else c[None]  # [T, K]
        if self.mode == "sum":
            u = cs[:, :, None, None] * B[None]  # [T, K, d_out, r]
        else:
            b_hat = torch.einsum("tk,kor->tor", cs, B)
            u = cs[:, :, None, None] * b_hat[:, None]
        u = u.permute(0, 2, 1, 3).reshape(cs.shape[0], B.shape[1], -1)  # [T, d_out, K·r]
        s = self.scale
        sq = w0_sq + 2 * s * (u * p_cat).sum(-1) + s * s * ((u @ gram) * u).sum(-1)
        norm = sq.clamp_min(0).sqrt()
        return norm if c.dim() == 2 else norm[0]

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> Tensor:
        """base(x) + Δy (with a magnitude: m ⊙ (W0 x + Δy) / ‖W0 + ΔW‖_row + b) for x [..., d_in];
        returns [..., d_out]. With a coefficient table, `task_ids` must be set."""
        ids = self.task_ids
        if self.coeffs.dim() == 2 and ids is None:
            raise ValueError(
                "LoRAFusionLinear: the coefficients are a per-task table; expected task_ids "
                "(use lorafusion_ext.nn.convert.task_context(model, task_ids))"
            )
        if self.coeffs.dim() == 1 and ids is not None:
            raise ValueError("LoRAFusionLinear: task_ids given but the coefficients are one shared vector [K]")
        if ids is not None:
            _check_task_ids(ids, self.coeffs.shape[0], x.shape[:-1])
        precision.check_operand(x, self.base.weight.dtype, "LoRAFusionLinear", "input", "the base weight")
        up = precision.upcast
        xc = up(x)
        if isinstance(self.pool, AnalogPoolLayer):
            # Its two AnalogLinear tiles take the float32 input of a half pool and stay float32.
            c = up(self.coeffs) if ids is None else _per_token(up(self.coeffs), ids, x.shape[:-1])
            delta = self.pool(xc, c, self.scale, self.mode)
        else:
            delta = pool_fusion(xc, up(self.pool.A), up(self.pool.B), up(self.coeffs), scale=self.scale,
                                mode=self.mode, task_ids=ids)
        y = self.base_forward(xc)
        if self.magnitude is None:
            return (y + delta).to(x.dtype)
        bias = up(self.base.bias)
        if bias is not None:
            y = y - bias  # the magnitude scales W0 x, not the bias (as peft's DoRA)
        ratio = up(self.magnitude) / self.weight_norm()
        if ids is not None:
            ratio = _per_token(ratio, ids, x.shape[:-1])
        out = ratio * (y + delta)
        return (out + bias if bias is not None else out).to(x.dtype)

    @property
    def pool_on_crossbar(self) -> bool:
        """True when the pool is programmed onto crossbar tiles (an `AnalogPoolLayer`)."""
        return isinstance(self.pool, AnalogPoolLayer)

    def extra_repr(self) -> str:
        return (f"mode={self.mode}, K={self.pool.num_adapters}, r={self.pool.rank}, scale={self.scale}, "
                f"magnitude={self.magnitude is not None}, coeffs={tuple(self.coeffs.shape)}")
