"""`LoRALinear`: a frozen linear layer (nn.Linear or AnalogLinear) plus a digital LoRA.

y = base(x) + s · B A dropout(x), s = alpha / r (HWA-LoRA when the base is analog).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lorafusion_ext.nn.analog_linear import AnalogLinear
from lorafusion_ext.ops import precision


class AdaptedLinear(nn.Module):
    """Common shell of the adapter wrappers: holds the frozen `base` layer and exposes the
    nn.Linear attributes (`in_features`, `out_features`, `weight`, `bias`) that model code
    reads (e.g. Hugging Face T5 checks `wo.weight.dtype`)."""

    def __init__(self, base: nn.Linear) -> None:
        if not isinstance(base, nn.Linear):
            raise ValueError(f"{type(self).__name__}: base is a {type(base).__name__}; expected nn.Linear or AnalogLinear")
        super().__init__()
        self.base = base
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)

    @property
    def in_features(self) -> int:
        """d_in of the base layer."""
        return self.base.in_features

    @property
    def out_features(self) -> int:
        """d_out of the base layer."""
        return self.base.out_features

    @property
    def weight(self) -> Tensor:
        """The base layer's (target) weights [out_features, in_features]."""
        return self.base.weight

    @property
    def bias(self) -> Tensor | None:
        """The base layer's bias [out_features], or None."""
        return self.base.bias

    def base_forward(self, x: Tensor) -> Tensor:
        """The base layer on `x` in its compute dtype (float32 for a half base), unrounded.

        A half wrapper computes base and adapter in float32 and rounds their sum once
        (`lorafusion_ext.ops.precision`); an AnalogLinear takes float32 input itself, an
        nn.Linear gets its weights upcast."""
        w = self.base.weight
        if isinstance(self.base, AnalogLinear) or x.dtype == w.dtype or w.dtype not in precision.FLOAT_DTYPES:
            return self.base(x)
        return F.linear(x, precision.upcast(self.base.weight), precision.upcast(self.base.bias))


class LoRALinear(AdaptedLinear):
    """A LoRA on a frozen linear layer, initialised as peft does (A Kaiming-uniform with
    a = √5, B zero), so a fresh LoRALinear computes exactly its base layer.

    Args:
        base: the frozen layer (nn.Linear or AnalogLinear), weight [d_out, d_in].
        rank: r >= 1.
        alpha: scale numerator: s = alpha / r.
        dropout: dropout probability on the LoRA branch's input (training only).

    Parameters: `lora_A` [r, d_in], `lora_B` [d_out, r] (base dtype and device). A bfloat16 /
    float16 layer computes base and LoRA in float32 and rounds their sum once to the input's
    dtype; gradients come out in each parameter's dtype.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__(base)
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"LoRALinear: rank = {rank!r}; expected a positive integer")
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not math.isfinite(alpha):
            raise ValueError(f"LoRALinear: alpha = {alpha!r}; expected a finite number")
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"LoRALinear: dropout = {dropout!r}; expected a probability in [0, 1)")
        w = base.weight
        self.rank = rank
        self.alpha = float(alpha)
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, dtype=w.dtype, device=w.device))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_lora_parameters()

    @property
    def scaling(self) -> float:
        """s = alpha / r."""
        return self.alpha / self.rank

    def reset_lora_parameters(self) -> None:
        """peft's default init: A ~ Kaiming-uniform(a=√5), B = 0."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def delta_weight(self) -> Tensor:
        """ΔW = s B A [d_out, d_in]."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def forward(self, x: Tensor) -> Tensor:
        """base(x) + s · B A dropout(x) for x [..., d_in]; returns [..., d_out] in x's dtype (bf16 / fp16
        computed in float32 and rounded once)."""
        precision.check_operand(x, self.base.weight.dtype, "LoRALinear", "input", "the base weight")
        xc = precision.upcast(x)
        y = self.base_forward(xc)
        h = self.dropout(xc) @ precision.upcast(self.lora_A).t()
        return (y + (h @ precision.upcast(self.lora_B).t()) * self.scaling).to(x.dtype)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}"
