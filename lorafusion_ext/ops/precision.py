"""Half precision: bf16 and fp16 are computed in float32 inside the ops and the layers.

The rule (docs/numerics.md, "Half precision"): bf16 / fp16 tensors are upcast to float32 (exact:
every bf16 and fp16 value is a float32 value), the whole float32 path runs (GEMM accumulation,
DAC, noise, ADC, periphery, LoRA / pool branches, DoRA magnitude), and the result is rounded
once to the input's dtype (round to nearest even, `Tensor.to`). So a half result equals the
float32 path on the same (half-valued) inputs, rounded once. Gradients flow back through the
casts: each one comes out in its tensor's own dtype, the float32 gradient rounded once.

This module is the one place that says which dtypes are accepted and which dtype computes; the
op wrappers (`crossbar_mvm`, `pool_fusion`) and the layers (`AnalogLinear`, `LoRALinear`,
`LoRAFusionLinear`) apply it at their boundaries. The compiled kernels (CPU and CUDA) only ever
see float32 or float64, so the half path is the float32 kernel on every device.
"""

from __future__ import annotations

import torch
from torch import Tensor

HALF_DTYPES = (torch.bfloat16, torch.float16)
FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_EXPECTED = "float32, float64, bfloat16 or float16"


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a tensor of `dtype` is computed in: float32 for bf16 / fp16, else itself."""
    return torch.float32 if dtype in HALF_DTYPES else dtype


def check_float(t: Tensor, where: str, name: str) -> None:
    """Raise ValueError naming `name` unless `t` has one of the supported floating dtypes."""
    if t.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{where}: {name} has dtype {t.dtype}; expected {_EXPECTED}")


def allowed_with(like: torch.dtype) -> tuple[torch.dtype, ...]:
    """The dtypes that go with `like` (the one rule of mixed dtypes): `like` itself, and float32
    when `like` is a half type (float32 and half operands compute the same float32 path)."""
    return tuple(dict.fromkeys((like, compute_dtype(like))))


def check_operand(t: Tensor | None, like: torch.dtype, where: str, name: str, ref: str = "x") -> None:
    """An operand that goes with an input of dtype `like`: one of `allowed_with(like)`.
    No check against a non-floating `like` (e.g. a quantised base layer's storage dtype)."""
    if t is None or like not in FLOAT_DTYPES:
        return
    allowed = allowed_with(like)
    if t.dtype not in allowed:
        names = " or ".join(str(d) for d in allowed)
        raise ValueError(f"{where}: {name} has dtype {t.dtype} but {ref} has dtype {like}; expected {names}")


def upcast(t: Tensor | None) -> Tensor | None:
    """`t` in its compute dtype (a differentiable cast for half tensors; `t` itself otherwise)."""
    if t is None or t.dtype not in HALF_DTYPES:
        return t
    return t.to(torch.float32)
