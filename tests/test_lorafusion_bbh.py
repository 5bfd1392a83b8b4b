"""Smoke run of the BBH LoRAFusion experiment (`python/experiments/lorafusion_bbh.py --quick`)
on a tiny random Llama: every cell runs, the JSON has the documented shape, the untrained
methods count no trainable parameters, and a rerun skips the finished cells."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts import load_file

SCRIPT = Path(__file__).resolve().parents[1] / "python" / "experiments" / "lorafusion_bbh.py"
BBH_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bbh"


def _load_script():
    return load_file("lorafusion_bbh", SCRIPT)


@pytest.mark.skipif(not (BBH_DIR / "boolean_expressions.json").is_file(), reason=f"BBH files not found at {BBH_DIR}")
def test_quick_run_is_complete_and_resumable(tmp_path):
    mod = _load_script()
    argv = ["--quick", "--data-dir", str(BBH_DIR), "--out", str(tmp_path), "--threads", "1"]
    res = mod.main(argv)
    assert res["pending"] == []
    methods = res["held_out"]["boolean_expressions"]
    assert set(methods) == set(mod.METHODS)
    for name, r in methods.items():
        assert len(r["t0"]) == len(r["t10y"]) == 1 and all(0.0 <= v <= 1.0 for v in r["t0"] + r["t10y"])
        assert r["cells_per_task"] == 0
    assert methods["zero_shot_analog"]["trainable"] == methods["digital_base"]["trainable"] == 0
    assert 0 < methods["lorafusion"]["trainable"] < methods["hwa_lora"]["trainable"]
    assert methods["lorafusion"]["cells_once"] > methods["hwa_lora"]["cells_once"] > 0  # the pool's tiles
    assert set(res["pool"]) == {"multistep_arithmetic_two", "object_counting"}
    assert (tmp_path / "lorafusion_bbh.md").is_file() and (tmp_path / "lorafusion_bbh.png").is_file()
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cells").glob("*.json")}
    assert len(stamps) == len(mod.plan(mod.parse(argv)))
    assert mod.main(argv)["held_out"] == res["held_out"]  # the rerun skips every finished cell
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cells").glob("*.json")} == stamps
    assert json.loads((tmp_path / "lorafusion_bbh.json").read_text())["command"].endswith("--threads 1")
