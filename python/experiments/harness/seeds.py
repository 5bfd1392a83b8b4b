"""Mean and spread over seeds, one definition for every experiment script's tables."""

from __future__ import annotations

import math
from typing import Sequence


def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation) of `xs`; the deviation is NaN for a single value (a
    spread over one seed is unknown, not zero). Raises ValueError when `xs` is empty."""
    if not xs:
        raise ValueError("mean_std: expected at least one value")
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else math.nan
    return m, sd


def format_mean_std(xs: Sequence[float], digits: int = 3, scale: float = 1.0) -> str:
    """'m ± s' (times `scale`, `digits` decimals), or 'm' alone for one value."""
    m, sd = mean_std(xs)
    return f"{scale * m:.{digits}f}" + ("" if math.isnan(sd) else f" ± {scale * sd:.{digits}f}")
