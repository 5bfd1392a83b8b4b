"""The experiment tables' mean ± spread over seeds (python/experiments/seed_stats.py)."""

from __future__ import annotations

import importlib.util
import math
import statistics
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "python" / "experiments" / "seed_stats.py"
_spec = importlib.util.spec_from_file_location("seed_stats", _PATH)
seed_stats = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(seed_stats)


def test_sample_std_over_seeds_and_unknown_spread_for_one_seed():
    xs = [0.71, 0.73, 0.69]
    m, sd = seed_stats.mean_std(xs)
    assert m == pytest.approx(statistics.mean(xs)) and sd == pytest.approx(statistics.stdev(xs))
    assert seed_stats.format_mean_std(xs) == f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}"
    m1, sd1 = seed_stats.mean_std([0.5])
    assert m1 == 0.5 and math.isnan(sd1)
    assert seed_stats.format_mean_std([0.8123], digits=2, scale=100) == "81.23"
    with pytest.raises(ValueError, match="at least one value"):
        seed_stats.mean_std([])
