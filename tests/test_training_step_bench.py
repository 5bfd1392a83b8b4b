"""`python/bench/training_step.py`: its equal-statistics dropout keeps F.dropout's statistics,
and a run on a tiny random BERT and a synthetic SST-2 folder reports every variant."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from scripts import REPO, load_file  # noqa: E402
from test_budget_sweep import _write_glue  # noqa: E402  (the synthetic SST-2 / STS-B folder)


def _bench():
    return load_file("training_step", REPO / "python" / "bench" / "training_step.py")


def test_rand_dropout_has_the_statistics_of_dropout():
    mod = _bench()
    torch.manual_seed(0)
    x = torch.ones(400, 500)
    for p in (0.1, 0.5):
        ours, ref = mod.rand_dropout(x, p), torch.nn.functional.dropout(x, p, True)
        for y in (ours, ref):
            kept = y != 0
            assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
            assert abs(kept.float().mean().item() - (1 - p)) < 0.005  # 200,000 draws: sd 0.0011 at p = 0.5
            assert abs(y.mean().item() - 1.0) < 0.01
    assert mod.rand_dropout(x, 0.1, training=False) is x and mod.no_dropout(x, 0.1) is x


def test_a_run_reports_every_variant(tmp_path: Path):
    from harness.tiny_models import tiny_bert  # python/experiments is on the path (test_budget_sweep)

    _write_glue(tmp_path / "glue", n=80)
    model = tiny_bert(tmp_path / "bert")
    mod = _bench()
    out = tmp_path / "step.json"
    mod.main(["--glue-dir", str(tmp_path / "glue"), "--model", model, "--tasks", "sst2", "--steps", "4",
              "--rounds", "2", "--json", str(out), "--md", str(tmp_path / "step.md")])
    res = json.loads(out.read_text())
    (task,) = res["tasks"]
    assert set(task["variants"]) == set(mod.VARIANTS)
    assert task["variants"]["recipe"]["ratio"] == 1.0
    assert all(v["ms_per_1k_tokens"] > 0 for v in task["variants"].values())
    assert 0 < task["profile"]["bernoulli_"] < 1 and 0 < task["profile"]["gemm"] < 1
    assert "| sst2 | batch64 |" in (tmp_path / "step.md").read_text()
    with pytest.raises(SystemExit):
        mod.main(["--glue-dir", str(tmp_path / "glue"), "--steps", "3"])
