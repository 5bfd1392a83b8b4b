"""`lorafusion_glue.py --from-sweep`: the cells a budget-sweep run folder computed under the
identical recipe are taken instead of computed again, and give the numbers the LoRAFusion script
computes itself; per-task `--steps` and `--pool-steps` (a pool member at other steps than its
task's held-out runs); `--skip-unlearnable`; `--ablation-tasks none`.

A `--quick` budget sweep on a tiny random BERT and a tiny synthetic GLUE folder written here is
the source; the LoRAFusion script runs the same recipe once computing every cell and once taking
what the sweep has, on the same model folder."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1] / "python" / "experiments"
if str(ROOT) not in sys.path:  # the scripts' shared folders (harness, sweep, lfglue) import as top-level packages
    sys.path.insert(0, str(ROOT))
from scripts import load_experiment as _load_script  # noqa: E402

WORDS = "the a movie film good bad man woman said company year new one two people".split()
TASKS = "sst2,stsb,rte"


def _write_glue(root: Path, n: int = 16) -> Path:
    """SST-2, STS-B and RTE in the official GLUE TSV layout, random sentences and labels (STS-B's
    Pearson is a continuous score: it moves with every weight, unlike a tiny model's accuracy)."""
    rng = random.Random(0)
    sentence = lambda: " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))  # noqa: E731
    for split in ("train", "dev"):
        rows = {"SST-2": ["sentence\tlabel"], "RTE": ["index\tsentence1\tsentence2\tlabel"],
                "STS-B": ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"]}
        for i in range(n):
            rows["SST-2"].append(f"{sentence()}\t{i % 2}")
            rows["STS-B"].append(f"{i}\tg\tf\ty\t{i}\ts\ts\t{sentence()}\t{sentence()}\t{rng.uniform(0, 5):.2f}")
            rows["RTE"].append(f"{i}\t{sentence()}\t{sentence()}\t{('entailment', 'not_entailment')[i % 2]}")
        for folder, lines in rows.items():
            (root / folder).mkdir(parents=True, exist_ok=True)
            (root / folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    """A `--quick` budget sweep of SST-2, STS-B and RTE: budgets 2 and 4, seeds 0 and 1 at 4,
    the full fine-tune at 4; its recipe as lorafusion_glue options."""
    tmp = tmp_path_factory.mktemp("from_sweep")
    glue = _write_glue(tmp / "glue")
    out = tmp / "sweep"
    _load_script("budget_sweep").main(["--quick", "--glue-dir", str(glue), "--out", str(out), "--tasks", TASKS,
                                "--no-progress"])
    # The sweep's --quick recipe (sweep.protocol.quick_recipe), spelled as lorafusion_glue options.
    recipe = ["--quick", "--glue-dir", str(glue), "--model", str(out / "tiny_bert"), "--tasks", TASKS,
              "--batch-size", "4", "--max-length", "32", "--train-examples", "16", "--eval-examples", "16",
              "--seeds", "0,1", "--trials", "1", "--group-by-length", "50", "--head-lr", "1e-3", "--lora-lr", "1e-3",
              "--ablation-tasks", "none", "--threads", "1"]
    return tmp, out, recipe


#: The fields of a cell that must not depend on where it was computed. Not a pool member's `dev`
#: (its analog score before programming): that read draws noise from the global RNG, so two
#: evaluations of one trained model in one run differ already.
SAME = ("t0", "t10y", "t0_trials", "t10y_trials", "trainable", "cells_once", "cells_per_task", "digital", "steps")


def test_cells_taken_from_the_sweep_equal_the_cells_computed_here(sweep_run):
    tmp, sweep_out, recipe = sweep_run
    lf = _load_script("lorafusion_glue")
    # SST-2 at 2 steps (a sweep budget without a full fine-tune there), STS-B and RTE at 4.
    only = ["--steps", "sst2=2,stsb=4,rte=4", "--only", "chance/,reference/,pool/,held_out/stsb/"]
    here = tmp / "here"
    lf.main([*recipe, *only, "--out", str(here)])
    taken = tmp / "taken"
    res = lf.main([*recipe, *only, "--out", str(taken), "--from-sweep", str(sweep_out)])
    mine = lf.run_folder(lf.parse([*recipe, "--out", str(here)])).load()
    theirs = lf.run_folder(lf.parse([*recipe, "--out", str(taken)])).load()
    expected = {"pool/sst2": "sst2/hwa_lora/b2/seed0", "pool/stsb": "stsb/hwa_lora/b4/seed0",
                "pool/rte": "rte/hwa_lora/b4/seed0", "reference/stsb/full_finetune": "stsb/full_finetune/b4/seed0",
                "reference/rte/full_finetune": "rte/full_finetune/b4/seed0",
                "held_out/stsb/digital_lora/seed0": "stsb/digital_lora/b4/seed0",
                "held_out/stsb/hwa_lora/seed1": "stsb/hwa_lora/b4/seed1",
                "held_out/stsb/digital_lora/seed1": "stsb/digital_lora/b4/seed1"}
    swept = {k: r["from_sweep"].rsplit(":", 1)[-1] for k, r in theirs.items() if "from_sweep" in r}
    assert swept == expected
    assert res["from_sweep"].keys() == expected.keys()
    # The seed-0 hwa_lora is still the pool member (taken from the sweep), reused.
    assert theirs["held_out/stsb/hwa_lora/seed0"]["reused_from"] == "pool/stsb"
    assert "from_sweep" not in theirs["reference/sst2/full_finetune"]  # the sweep has no fine-tune at 2 steps
    for key in [*expected, "held_out/stsb/hwa_lora/seed0"]:
        assert theirs[key].keys() - {"from_sweep", "sweep_wall_s", "sweep_config"} == mine[key].keys(), key
        for field in SAME:
            if mine[key].get(field) is not None:
                assert theirs[key][field] == pytest.approx(mine[key][field], abs=1e-6), (key, field)
    # The pool fused from the sweep's adapters is the pool trained here: the LoRAFusion and
    # magnitude-only cells (computed in both runs) give the same numbers.
    from lorafusion_ext import LoRAPool

    a, b = LoRAPool.load(here / "pool" / "all"), LoRAPool.load(taken / "pool" / "all")
    assert a.adapter_names == b.adapter_names
    for name in a.layer_names:
        assert (a.layer(name).A == b.layer(name).A).all() and (a.layer(name).B == b.layer(name).B).all()
    scores = [mine[k]["t0"] for k in ("held_out/stsb/hwa_lora/seed1", "held_out/stsb/lorafusion/seed0")]
    assert len({round(v, 6) for v in scores}) == 2  # continuous scores: equal only when the runs are
    for key in ("held_out/stsb/lorafusion/seed0", "held_out/stsb/magnitude_only/seed1"):
        assert "from_sweep" not in theirs[key]
        for field in ("t0", "t10y", "t0_trials", "t10y_trials"):
            assert theirs[key][field] == pytest.approx(mine[key][field], abs=1e-6), (key, field)
    page = (taken / "lorafusion.md").read_text()
    assert "## Cells taken from the budget sweep" in page and "`stsb/digital_lora/b4/seed1`" in page
    assert "steps per task (sst2 2, stsb 4, rte 4)" in page
    # No ablation at this budget: the page points to the short-budget page for them.
    assert "lorafusion_short_budget.md" in page and not res["ablations"]
    # A fresh clone of the page adopts its cells with their sweep sources.
    adopted = lf.cells_from_report(lf.parse([*recipe, "--steps", "sst2=2,stsb=4,rte=4", "--out", str(tmp / "x")]),
                                   json.loads((taken / "lorafusion.json").read_text()), "page")
    key = "held_out/stsb/digital_lora/seed1"
    assert adopted[key]["from_sweep"] == res["from_sweep"][key] and adopted[key]["t0"] == theirs[key]["t0"]


def test_a_sweep_of_another_recipe_is_refused(sweep_run, tmp_path):
    tmp, sweep_out, recipe = sweep_run
    lf = _load_script("lorafusion_glue")
    # lorafusion_glue's own head lr (1e-2) is not the sweep's (1e-3): nothing is taken.
    i = recipe.index("--head-lr")
    other = recipe[:i] + recipe[i + 2:]
    with pytest.raises(ValueError, match=r"another recipe \(head_lr: sweep 0.001, this run 0.01\)"):
        lf.main([*other, "--steps", "4", "--out", str(tmp_path / "a"), "--from-sweep", str(sweep_out)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no budget-sweep cells"):
        lf.main([*recipe, "--steps", "4", "--out", str(tmp_path / "b"), "--from-sweep", str(tmp_path / "empty")])
    # An adapter stored under another recipe is refused too, never silently used.
    from harness import adapter_path

    from lfglue import from_sweep

    s = lf.parse([*recipe, "--steps", "4", "--out", str(tmp_path / "c"), "--from-sweep", str(sweep_out)])
    assert adapter_path(sweep_out / "adapters", "rte/hwa_lora/b4/seed0").is_file()
    s.budget.data_seed = 1
    with pytest.raises(ValueError, match="data_seed"):
        from_sweep.adapter(s, "rte/hwa_lora/b4/seed0")


def test_steps_per_task_are_validated(sweep_run, capsys):
    tmp, _, recipe = sweep_run
    lf = _load_script("lorafusion_glue")
    s = lf.parse([*recipe, "--out", str(tmp / "p"), "--steps", "sst2=3,stsb=5,rte=7"])
    assert s.budget.task_steps == {"sst2": 3, "stsb": 5, "rte": 7} and s.budget.steps == 7
    assert lf.parse([*recipe, "--out", str(tmp / "p"), "--steps", "6"]).budget.task_steps is None
    for bad, why in (("sst2=3,stsb=5", "no steps for rte"), ("sst2=3,stsb=5,rte=7,cola=2", "tasks not in --tasks: cola"),
                     ("sst2=3,stsb=0,rte=7", "stsb = 0"), ("many", "expected a positive integer or TASK=N"),
                     ("sst2=3,sst2=4,stsb=5,rte=7", "sst2 given twice")):
        with pytest.raises(SystemExit):
            lf.parse([*recipe, "--out", str(tmp / "p"), "--steps", bad])
        assert why in capsys.readouterr().err


def test_held_out_cells_of_an_unlearnable_task_are_left_out(sweep_run):
    tmp, _, recipe = sweep_run
    lf = _load_script("lorafusion_glue")
    out = tmp / "skip"
    args = [*recipe, "--steps", "2", "--out", str(out), "--skip-unlearnable"]
    folder = lf.run_folder(lf.parse(args))
    # RTE's full fine-tune at chance, SST-2's well above it (stored as finished reference cells).
    for task, score in (("rte", 0.5), ("sst2", 0.9)):
        folder.store(f"chance/{task}", {"metric": "accuracy", "chance": 0.5, "dev_examples": 16})
        folder.store(f"reference/{task}/full_finetune", {"metric": "accuracy", "digital": score, "steps": 2})
    res = lf.main([*args, "--only", "held_out/rte/head_only/,held_out/sst2/head_only/"])
    done = folder.load()
    assert "skipped" in done["held_out/rte/head_only/seed0"] and "t0" not in done["held_out/rte/head_only/seed0"]
    assert "t0" in done["held_out/sst2/head_only/seed0"]
    assert set(res["skipped"]) == {"held_out/rte/head_only/seed0", "held_out/rte/head_only/seed1"}
    assert res["held_out"]["rte"]["learnable"] is False and res["held_out"]["rte"]["head_only"]["t0"] == []
    assert not any(k.startswith("held_out/rte/head_only/") for k in res["pending"])
    page = (out / "lorafusion.md").read_text()
    assert "## Cells left out (task not learnable)" in page and "their held-out cells were not computed" in page
    assert "| rte (accuracy) | head_only | not computed (not learnable) |" in page


def test_a_cell_the_running_sweep_is_still_to_compute_is_waited_for(sweep_run, tmp_path):
    import os
    import shutil

    from harness import Cell, PendingCell

    tmp, sweep_out, recipe = sweep_run
    lf = _load_script("lorafusion_glue")
    # A copy of the sweep's cells, its report listing a cell still to come, and a claim of a live process.
    sweep = tmp_path / "sweep"
    shutil.copytree(sweep_out / "cells", sweep / "cells")
    (sweep / "budget_sweep.json").write_text(json.dumps({"pending": ["stsb/hwa_lora/b8/seed1"]}))
    (sweep / "claims").mkdir()
    (sweep / "claims" / "stsb__hwa_lora__b8__seed1").write_text(str(os.getpid()))
    s = lf.parse([*recipe, "--steps", "8", "--out", str(tmp_path / "run"), "--from-sweep", str(sweep)])
    coming = Cell("held_out/stsb/hwa_lora/seed1", "held_out", "stsb", "hwa_lora", 1)
    with pytest.raises(PendingCell, match="stsb/hwa_lora/b8/seed1"):
        lf.cell_from_sweep(s, coming)
    # Not in the sweep's plan: computed here at once (None: not taken)...
    other = Cell("held_out/stsb/digital_lora/seed1", "held_out", "stsb", "digital_lora", 1)
    assert lf.cell_from_sweep(s, other) is None
    # ...unless the report has the task without this budget (it may predate a restart of the sweep
    # with other budgets)...
    (sweep / "budget_sweep.json").write_text(json.dumps({"pending": [], "tasks": {"stsb": {"budgets": [2, 4]}}}))
    with pytest.raises(PendingCell, match="stsb/digital_lora/b8/seed1"):
        lf.cell_from_sweep(s, other)
    # ...while a budget the report plans, not pending for this seed, never comes: computed here.
    (sweep / "budget_sweep.json").write_text(json.dumps({"pending": [], "tasks": {"stsb": {"budgets": [2, 8]}}}))
    assert lf.cell_from_sweep(s, other) is None
    # The sweep has stopped (no live claim): the cell will not come from it, so it is computed here.
    (sweep / "claims" / "stsb__hwa_lora__b8__seed1").write_text("999999999")
    assert lf.cell_from_sweep(s, coming) is None


def test_pool_steps_per_task_are_validated(sweep_run, capsys):
    tmp, _, recipe = sweep_run
    lf = _load_script("lorafusion_glue")
    args = [*recipe, "--out", str(tmp / "p"), "--steps", "sst2=2,stsb=2,rte=4"]
    b = lf.parse([*args, "--pool-steps", "sst2=2,stsb=4,rte=4"]).budget
    assert b.pool_task_steps == {"sst2": 2, "stsb": 4, "rte": 4} and b.pool_steps is None
    assert lf.parse([*args, "--pool-steps", "6"]).budget.pool_steps == 6
    # One number for every task is recorded as that number, the held-out steps as no --pool-steps:
    # equal protocols, equal budgets (what a committed page's adoption compares).
    same = lf.parse([*args, "--pool-steps", "rte=5,sst2=5,stsb=5"]).budget
    assert (same.pool_steps, same.pool_task_steps) == (5, None)
    plain = lf.parse([*args, "--pool-steps", "sst2=2,stsb=2,rte=4"]).budget
    assert (plain.pool_steps, plain.pool_task_steps) == (None, None) and plain == lf.parse(args).budget
    for bad, why in (("sst2=3,stsb=5", "--pool-steps 'sst2=3,stsb=5': no steps for rte"),
                     ("sst2=3,stsb=5,rte=7,cola=2", "--pool-steps 'sst2=3,stsb=5,rte=7,cola=2': tasks not in --tasks: cola"),
                     ("sst2=3,stsb=0,rte=7", "stsb = 0"), ("0", "--pool-steps 0: expected a positive integer"),
                     ("many", "--pool-steps 'many': expected a positive integer or TASK=N"),
                     ("sst2=3,sst2=4,stsb=5,rte=7", "sst2 given twice")):
        with pytest.raises(SystemExit):
            lf.parse([*args, "--pool-steps", bad])
        assert why in capsys.readouterr().err


def test_recorded_budgets_keep_their_global_pool_reuse():
    """Per task, a pool member is its task's seed-0 hwa_lora exactly when the one global flag of
    the runs recorded before per-task pool steps said so, for the budgets they could record."""
    from lfglue.protocol import TASKS, budget_from_dict, pool_member_is_hwa

    def old_flag(b: dict) -> bool:  # the global test those runs were reused and imported by
        return ((b.get("pool_steps") is None or (b["pool_steps"] == b["steps"] and not b.get("task_steps")))
                and (b.get("pool_train_examples") or b["train_examples"]) == b["train_examples"]
                and b.get("pool_epochs") is None)

    pages = Path(__file__).resolve().parents[1] / "docs" / "results"
    recorded = [json.loads((pages / p).read_text())["budget"] for p in
                ("lorafusion_short_budget.json", "pool100/lorafusion.json", "lorafusion_magnitude_lr_5e-3.json")]
    base = recorded[1]
    recorded += [{**base, "pool_steps": 100}, {**base, "pool_steps": 300}, {**base, "pool_train_examples": 4800},
                 {**base, "pool_epochs": 3.0}, {**base, "task_steps": {t: 100 for t in TASKS}},
                 {**base, "task_steps": {t: 50 + i for i, t in enumerate(TASKS)}}]
    assert [old_flag(b) for b in recorded[:3]] == [False, True, False]
    for b in recorded:
        assert [pool_member_is_hwa(budget_from_dict(b), t) for t in TASKS] == [old_flag(b)] * len(TASKS), b
    # Newly expressible: one task's pool member at other steps than its held-out runs.
    mixed = budget_from_dict({**base, "steps": 60, "task_steps": {t: 50 + i for i, t in enumerate(TASKS)},
                              "pool_task_steps": {t: 50 + i + (t == "sst2") * 100 for i, t in enumerate(TASKS)}})
    assert [pool_member_is_hwa(mixed, t) for t in TASKS] == [t != "sst2" for t in TASKS]


def test_a_pool_member_at_other_steps_than_its_held_out_runs(sweep_run):
    """STS-B held out at 2 steps, its pool member trained 4 (`--pool-steps` per task): its seed-0
    hwa_lora is a run of its own, computed (or taken from the sweep at 2 steps) while its pool
    member (and full fine-tune) are at 4; SST-2 and RTE, whose pool steps are their held-out
    steps, reuse their pool member."""
    tmp, sweep_out, recipe = sweep_run
    lf = _load_script("lorafusion_glue")
    budget = ["--steps", "sst2=2,stsb=2,rte=4", "--pool-steps", "sst2=2,stsb=4,rte=4"]
    only = ["--only", "reference/,pool/,held_out/sst2/hwa_lora/seed0,held_out/stsb/hwa_lora/seed0,"
                      "held_out/rte/hwa_lora/seed0"]
    here = tmp / "pool_steps_here"
    lf.main([*recipe, *budget, *only, "--out", str(here)])
    mine = lf.run_folder(lf.parse([*recipe, *budget, "--out", str(here)])).load()
    for t in ("sst2", "rte"):
        assert mine[f"held_out/{t}/hwa_lora/seed0"]["reused_from"] == f"pool/{t}"
    own = mine["held_out/stsb/hwa_lora/seed0"]
    assert "reused_from" not in own and own["t0"] != mine["pool/stsb"]["t0"]  # Pearson: another run, another score
    assert mine["reference/stsb/full_finetune"]["steps"] == 4 and mine["reference/sst2/full_finetune"]["steps"] == 2
    page = (here / "lorafusion.md").read_text()
    assert "Pool members: steps per task (sst2 2, stsb 4, rte 4) on at most 16 examples." in page
    assert ("The pool member of sst2, rte is also the seed-0 `hwa_lora` of its task (the same run); that of stsb "
            "(4 steps, held out at 2) is not") in page
    assert "its seed-0 run on sst2, rte is the pool member of that task, reused" in page
    # --report fills in the seed-0 hwa_lora a finished pool member is, for those tasks only.
    for t in ("sst2", "stsb"):
        (here / "cells" / f"held_out__{t}__hwa_lora__seed0.json").unlink()
    res = lf.main([*recipe, *budget, "--out", str(here), "--report"])
    again = lf.run_folder(lf.parse([*recipe, *budget, "--out", str(here)])).load()
    assert again["held_out/sst2/hwa_lora/seed0"]["reused_from"] == "pool/sst2"
    assert "held_out/stsb/hwa_lora/seed0" not in again and "held_out/stsb/hwa_lora/seed0" in res["pending"]
    # --import-from this run: a pool member becomes the seed-0 hwa_lora of its task only where it is one.
    s = lf.parse([*recipe, *budget, "--out", str(tmp / "pool_steps_import")])
    assert lf.import_cells(s, here) > 0
    imported = lf.run_folder(s).load()
    assert imported["held_out/sst2/hwa_lora/seed0"]["imported_from"] == f"{here}:pool/sst2"
    assert imported["pool/stsb"]["imported_from"] == f"{here}:pool/stsb" and (s.out / "pool" / "stsb" / "run.json").is_file()
    assert "held_out/stsb/hwa_lora/seed0" not in imported

    # Taken from the sweep: the pool member and full fine-tune at the pool steps (4), the held-out
    # cell at the held-out steps (2), each the run computed here.
    taken = tmp / "pool_steps_taken"
    res = lf.main([*recipe, *budget, *only, "--out", str(taken), "--from-sweep", str(sweep_out)])
    theirs = lf.run_folder(lf.parse([*recipe, *budget, "--out", str(taken)])).load()
    expected = {"pool/sst2": "sst2/hwa_lora/b2/seed0", "pool/stsb": "stsb/hwa_lora/b4/seed0",
                "pool/rte": "rte/hwa_lora/b4/seed0", "reference/stsb/full_finetune": "stsb/full_finetune/b4/seed0",
                "reference/rte/full_finetune": "rte/full_finetune/b4/seed0",
                "held_out/stsb/hwa_lora/seed0": "stsb/hwa_lora/b2/seed0"}
    assert {k: r["from_sweep"].rsplit(":", 1)[-1] for k, r in theirs.items() if "from_sweep" in r} == expected
    for t in ("sst2", "rte"):
        assert theirs[f"held_out/{t}/hwa_lora/seed0"]["reused_from"] == f"pool/{t}"
    for key in ("pool/stsb", "held_out/stsb/hwa_lora/seed0", "reference/stsb/full_finetune"):
        for field in SAME:
            if mine[key].get(field) is not None:
                assert theirs[key][field] == pytest.approx(mine[key][field], abs=1e-6), (key, field)
    page = (taken / "lorafusion.md").read_text()
    assert "and also this page's seed-0 `hwa_lora` of its task for sst2, rte" in page
    # A fresh clone of this page adopts it under the same per-task budget, not under another.
    report = json.loads((taken / "lorafusion.json").read_text())
    assert lf.cells_from_report(lf.parse([*recipe, *budget, "--out", str(tmp / "y")]), report, "page")
    assert not lf.cells_from_report(lf.parse([*recipe, budget[0], budget[1], "--out", str(tmp / "y")]), report, "page")


def test_plan_lists_what_each_cell_would_be_and_writes_nothing(sweep_run, capsys):
    tmp, sweep_out, recipe = sweep_run
    lf = _load_script("lorafusion_glue")
    out = tmp / "plan_only"
    budget = ["--steps", "sst2=2,stsb=2,rte=4", "--pool-steps", "sst2=2,stsb=4,rte=4"]
    res = lf.main([*recipe, *budget, "--out", str(out), "--from-sweep", str(sweep_out), "--plan"])
    assert not out.exists()
    plan = {k: (v["what"], v["detail"]) for k, v in res["plan"].items()}
    assert plan["pool/stsb"] == ("taken", "stsb/hwa_lora/b4/seed0")
    assert plan["reference/stsb/full_finetune"] == ("taken", "stsb/full_finetune/b4/seed0")
    assert plan["held_out/stsb/hwa_lora/seed0"] == ("taken", "stsb/hwa_lora/b2/seed0")
    assert plan["held_out/sst2/hwa_lora/seed0"] == ("reused", "pool/sst2")
    assert plan["held_out/stsb/lorafusion/seed1"] == ("computed", "2 steps")
    assert plan["held_out/rte/head_only/seed0"] == ("computed", "4 steps")
    assert "held_out/stsb/hwa_lora/seed0: taken: stsb/hwa_lora/b2/seed0" in capsys.readouterr().out
    # Without the sweep, the member at other steps is trained here at its pool steps.
    alone = lf.main([*recipe, *budget, "--out", str(out), "--plan"])["plan"]
    assert alone["pool/stsb"] == {"what": "computed", "detail": "4 steps"}
    assert alone["held_out/stsb/hwa_lora/seed0"] == {"what": "computed", "detail": "2 steps"}
    assert not out.exists()
