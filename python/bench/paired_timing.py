"""Side-by-side timing shared by the benchmark scripts: the reference and the candidate run
alternately in each round, so a busy machine slows both alike and their ratio stays fair."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def paired(ref: Callable[[], object], cand: Callable[[], object], rounds: int) -> dict[str, float]:
    """Median per-round ratio cand/ref (with its min and max), and the median times (ms)."""
    ref(), cand()  # warm-up
    ratios, t_ref, t_cand = [], [], []
    for _ in range(rounds):
        s = time.perf_counter()
        ref()
        a = time.perf_counter() - s
        s = time.perf_counter()
        cand()
        b = time.perf_counter() - s
        t_ref.append(a)
        t_cand.append(b)
        ratios.append(b / a)
    return {"ref_ms": statistics.median(t_ref) * 1e3, "cand_ms": statistics.median(t_cand) * 1e3,
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)}
