"""The budget sweep (`python/experiments/budget_sweep.py`): its budget rule, its crossover, and a
`--quick` run on a tiny random BERT and a tiny synthetic GLUE folder written here: the JSON has
the issue's schema, a rerun computes nothing, and a fresh run folder takes the committed cells."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1] / "python" / "experiments"
if str(ROOT) not in sys.path:  # the scripts' shared folders (harness, sweep) import as top-level packages
    sys.path.insert(0, str(ROOT))
from scripts import load_experiment  # noqa: E402
WORDS = "the a movie film good bad man woman said company year new one two people".split()


def _load_script(name: str = "budget_sweep"):
    """The experiment script `name`.py as a module."""
    return load_experiment(name)


def _write_glue(root: Path, n: int = 16) -> Path:
    rng = random.Random(0)
    sentence = lambda: " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12)))  # noqa: E731
    for split in ("train", "dev"):
        rows = {"SST-2": ["sentence\tlabel"],
                "STS-B": ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"]}
        for i in range(n):
            rows["SST-2"].append(f"{sentence()}\t{int(i % 3 == 0)}")
            rows["STS-B"].append(f"{i}\tg\tf\ty\t{i}\ts\ts\t{sentence()}\t{sentence()}\t{rng.uniform(0, 5):.2f}")
        for folder, lines in rows.items():
            (root / folder).mkdir(parents=True, exist_ok=True)
            (root / folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


def test_default_budgets_follow_the_issue_rule():
    from sweep.protocol import default_budgets

    assert default_budgets(67349, 32) == (100, 270, 740, 2000)  # SST-2: 2,000 steps < 3 epochs
    assert default_budgets(3668, 32) == (100, 150, 230, 345)  # MRPC: 3 epochs of 115 batches
    small = default_budgets(500, 32)  # 3 epochs = 48 steps: the smallest is a third of it
    assert small[-1] == 48 and small[0] <= 16 and len(small) == 4
    with pytest.raises(ValueError, match="n_train"):
        default_budgets(0, 32)


def test_crossover_is_where_hwa_stays_above():
    from sweep.report import crossover

    b = [100, 200, 400, 800]
    assert crossover(b, [[0.5], [0.7], [0.6], [0.9]], [[0.6], [0.6], [0.7], [0.8]]) == 800
    assert crossover(b, [[0.7], [0.7], [0.8], [0.9]], [[0.6], [0.6], [0.7], [0.8]]) == 100
    assert crossover(b, [[0.5]] * 4, [[0.6]] * 4) is None
    assert crossover(b, [[0.7], [], [0.8], [0.9]], [[0.6]] * 4) is None  # a budget is pending


def test_quick_run_has_the_schema_resumes_and_adopts(tmp_path):
    mod = _load_script()
    glue = _write_glue(tmp_path / "glue")
    args = ["--quick", "--glue-dir", str(glue), "--out", str(tmp_path / "run"), "--tasks", "sst2,stsb",
            "--no-progress"]
    with pytest.raises(SystemExit):
        mod.main([*args, "--budgets", "cola=10"])  # not a task of --tasks
    res = mod.main(args)
    assert res["complete"], res["pending"]
    assert set(res) >= {"tasks", "command", "wall_s", "machine"}
    assert "--quick" in res["command"] and "--no-progress" not in res["command"]
    for task, t in res["tasks"].items():
        assert t["budgets"] == [2, 4] and t["metric"] == {"sst2": "accuracy", "stsb": "pearson"}[task]
        assert set(t["methods"]) == {"hwa_lora", "digital_lora", "digital"}
        for m in t["methods"].values():
            assert [len(v) for v in m["t0"]] == [len(v) for v in m["t10y"]] == [1, 2]  # 2 seeds at the top
        assert set(t["crossover"]) == {"t0", "t10y"}
        assert t["full_finetune"]["budget"] == 4
    assert res["tasks"]["stsb"]["chance"] == 0.0
    assert res["tasks"]["sst2"]["chance"] == pytest.approx(10 / 16)  # class 0 (the training majority) on all 16 dev rows
    _stored_adapters_reproduce_the_digital_score(mod, args, res)
    page = (tmp_path / "run" / "budget_sweep.md").read_text()
    assert "complete" in page and (tmp_path / "run" / "budget_sweep.png").is_file()
    # --quick's budgets stop below the rule's (3 epochs of 16 examples at batch 4): the page says so.
    assert res["tasks"]["sst2"]["rule_top"] == 12 and "trimmed with `--budgets`" in page
    # A rerun computes nothing.
    cells = sorted((tmp_path / "run" / "cells").glob("*.json"))
    stamps = {p.name: p.stat().st_mtime_ns for p in cells}
    assert mod.main(args)["tasks"] == res["tasks"]
    assert {p.name: p.stat().st_mtime_ns for p in cells} == stamps
    # A fresh run folder takes the finished cells of the committed report (here: --docs) whole.
    fresh = ["--quick", "--glue-dir", str(glue), "--out", str(tmp_path / "fresh"), "--docs", str(tmp_path / "run"),
             "--tasks", "sst2,stsb", "--no-progress", "--model", str(tmp_path / "run" / "tiny_bert"), "--report-only"]
    again = mod.main(fresh)
    assert again["complete"] and again["tasks"] == res["tasks"]
    assert json.loads((tmp_path / "run" / "budget_sweep.json").read_text())["complete"]


def _stored_adapters_reproduce_the_digital_score(mod, args: list[str], res: dict) -> None:
    """Every LoRA cell keeps its trained adapter; a digital_lora adapter loaded into a fresh model
    gives back the cell's digital score, and a reader of another recipe is refused by name."""
    from harness import load_adapter
    from sweep import methods
    from sweep.protocol import sweep_config
    from lorafusion_ext import attach_lora
    from lorafusion_ext.data.glue import task_spec
    from lorafusion_ext.models import load_classifier
    from lorafusion_ext.training.methods import load_task_state

    s, _ = mod.parse(args)
    folder, config = s.out / "adapters", sweep_config(s)
    keys = [f"{t}/{m}/b{b}/seed{seed}" for t in ("sst2", "stsb") for m in ("hwa_lora", "digital_lora")
            for b, seeds in ((2, (0,)), (4, (0, 1))) for seed in seeds]
    assert all(load_adapter(folder, k, config) is not None for k in keys)
    cfg = methods.lora_cfg(s)
    for task in ("sst2", "stsb"):
        model, tok = load_classifier(s.model, task_spec(task).num_labels, seed=5)
        attach_lora(model, cfg.rank, cfg.alpha, cfg.dropout, targets=tuple(cfg.targets))
        load_task_state(model, load_adapter(folder, f"{task}/digital_lora/b4/seed1", config))
        t, _, dev = methods.data(s, task, tok)
        want = res["tasks"][task]["methods"]["digital"]["t0"][1][1]  # seed 1 at the top budget
        assert t.evaluate(model, dev)[t.main_metric] == pytest.approx(want, abs=1e-6)
    with pytest.raises(ValueError, match="lora_lr"):
        load_adapter(folder, "sst2/hwa_lora/b2/seed0", {**config, "lora_lr": 0.5})
