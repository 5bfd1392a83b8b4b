"""Field helpers shared by the AIHWKIT and AIHWKIT-Lightning config conversions."""

from __future__ import annotations

import dataclasses
import math
from typing import Any


def res_to_bits(res: float, where: str) -> int | None:
    """The bits of a converter resolution `res` (1/(2^bits - 2), or that many states; <= 0:
    None, no quantisation).

    Raises:
        ValueError: `res` is not such a value for bits in 2..16 (names `rpu_config.<where>`).
    """
    if res <= 0:
        return None
    if res > 1.0:  # AIHWKIT accepts the number of states too
        res = 1.0 / res
    bits = math.log2(1.0 / res + 2.0)
    if abs(bits - round(bits)) > 1e-6 or not 2 <= round(bits) <= 16:
        raise ValueError(f"rpu_config.{where} = {res!r}; expected 1/(2^bits - 2) with bits in 2..16")
    return int(round(bits))


def diff(obj: Any, ref: Any, prefix: str) -> list[tuple[str, Any]]:
    """(path, value) of every field of `obj` that differs from `ref`, recursively."""
    out: list[tuple[str, Any]] = []
    if dataclasses.is_dataclass(obj) and type(obj) is type(ref):
        for f in dataclasses.fields(obj):
            out += diff(getattr(obj, f.name), getattr(ref, f.name), f"{prefix}{f.name}.")
        return out
    if type(obj) is not type(ref) or str(obj) != str(ref):
        out.append((prefix[:-1], obj))
    return out
