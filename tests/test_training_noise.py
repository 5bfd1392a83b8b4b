"""The training-noise experiment (`python/experiments/training_noise.py`, issue 25): a `--quick`
run on a tiny random BERT and a tiny synthetic GLUE folder has the issue's JSON schema, takes
the preset's row and the reference from a budget-sweep run of the same recipe (and only of the
same recipe), computes nothing on a rerun; every row is deployed on the unchanged preset, and
the modifier scale reaches the training."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1] / "python" / "experiments"
if str(ROOT) not in sys.path:  # the scripts' shared folders (harness, sweep, trainnoise) import as top-level packages
    sys.path.insert(0, str(ROOT))
from scripts import load_experiment as _load_script  # noqa: E402
from test_budget_sweep import _write_glue  # noqa: E402

ROWS = ["modifier_x0", "modifier_x0.25", "modifier_x0.5", "modifier_x1", "no_out_noise"]


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    """A `--quick` budget sweep of STS-B (budgets 2 and 4; seeds 0 and 1 at 4 steps)."""
    root = tmp_path_factory.mktemp("training_noise")
    glue = _write_glue(root / "glue")
    res = _load_script("budget_sweep").main(["--quick", "--glue-dir", str(glue), "--out", str(root / "sweep"),
                                             "--tasks", "stsb", "--no-progress"])
    assert res["complete"]
    return root, glue, res


def test_quick_run_has_the_schema_imports_the_sweep_and_resumes(sweep_run, tmp_path):
    root, glue, sweep = sweep_run
    mod = _load_script("training_noise")
    args = ["--quick", "--glue-dir", str(glue), "--out", str(tmp_path / "run"), "--no-progress",
            "--model", str(root / "sweep" / "tiny_bert"), "--from-sweep", str(root / "sweep")]
    with pytest.raises(SystemExit):
        mod.main([*args, "--steps", "sst2=10"])  # not a task of --tasks
    with pytest.raises(SystemExit):
        mod.main([*args, "--scales", "-1"])
    res = mod.main(args)
    assert res["complete"], res["pending"]
    assert set(res) >= {"tasks", "command", "wall_s", "machine"} and isinstance(res["wall_s"], float)
    assert "--quick" in res["command"] and "--no-progress" not in res["command"]
    t = res["tasks"]["stsb"]
    assert t["metric"] == "pearson" and t["steps"] == 4 and t["chance"] == 0.0
    assert list(t["rows"]) == [*ROWS, "digital_lora"]
    for row, v in t["rows"].items():
        assert all(len(vals) == 2 for vals in v.values())  # one value per seed
        if row != "digital_lora":
            assert set(v) == {"t0", "t10y", "unprogrammed"}
            assert v["t0"] == [res["cells"][f"stsb/{row}/b4/seed{seed}"]["t0"] for seed in (0, 1)]
    # The preset's row and the reference are the sweep's cells at 4 steps, not recomputed.
    cells = sweep["cells"]
    for seed in (0, 1):
        for row, method in (("modifier_x1", "hwa_lora"), ("digital_lora", "digital_lora")):
            rec = res["cells"][f"stsb/{row}/b4/seed{seed}"]
            theirs = cells[f"stsb/{method}/b4/seed{seed}"]
            assert rec["imported_from"] == f"{root / 'sweep'}:stsb/{method}/b4/seed{seed}" and rec["wall_s"] == 0.0
            assert (rec["t0"], rec["t10y"]) == (theirs["t0"], theirs["t10y"])
    assert t["rows"]["modifier_x1"]["unprogrammed"] == [None, None]  # the sweep does not read it
    assert t["rows"]["digital_lora"]["digital"] == [cells[f"stsb/digital_lora/b4/seed{s}"]["digital"] for s in (0, 1)]
    assert len(res["imported"]) == 4
    assert t["gain_over_x1"]["modifier_x0"]["t0"] == [a - b for a, b in zip(t["rows"]["modifier_x0"]["t0"],
                                                                            t["rows"]["modifier_x1"]["t0"])]
    page = (tmp_path / "run" / "training_noise.md").read_text()
    assert "**Status: complete.**" in page and "4 cells imported" in page
    assert (tmp_path / "run" / "training_noise.png").is_file()

    # A rerun computes nothing (and imports nothing again).
    files = sorted((tmp_path / "run" / "cells").glob("*.json"))
    stamps = {p.name: p.stat().st_mtime_ns for p in files}
    assert mod.main(args)["tasks"] == res["tasks"]
    assert {p.name: p.stat().st_mtime_ns for p in sorted((tmp_path / "run" / "cells").glob("*.json"))} == stamps

    # A fresh run folder takes the committed report's cells, imported ones included.
    fresh = ["--quick", "--glue-dir", str(glue), "--out", str(tmp_path / "fresh"), "--docs", str(tmp_path / "run"),
             "--no-progress", "--model", str(root / "sweep" / "tiny_bert"), "--from-sweep", str(tmp_path / "none"),
             "--report-only"]
    again = mod.main(fresh)
    assert again["complete"] and again["tasks"] == res["tasks"] and again["imported"] == res["imported"]
    assert json.loads((tmp_path / "run" / "training_noise.json").read_text())["complete"]


def test_preset_row_computed_here_is_the_sweep_cell_and_another_recipe_is_not_imported(sweep_run, tmp_path):
    """Without the sweep, `modifier_x1` computed here equals the sweep's `hwa_lora` cell (same
    model, batches and evaluation); a sweep of another recipe gives nothing."""
    root, glue, sweep = sweep_run
    mod = _load_script("training_noise")
    args = ["--quick", "--glue-dir", str(glue), "--out", str(tmp_path / "run"), "--no-progress", "--model",
            str(root / "sweep" / "tiny_bert"), "--scales", "1", "--no-no-out-noise-row", "--seeds", "1",
            "--from-sweep", str(tmp_path / "none")]
    res = mod.main(args)
    rec = res["cells"]["stsb/modifier_x1/b4/seed1"]
    assert "imported_from" not in rec and rec["wall_s"] > 0 and res["imported"] == {}
    theirs = sweep["cells"]["stsb/hwa_lora/b4/seed1"]
    assert (rec["t0"], rec["t10y"], rec["final_loss"]) == (theirs["t0"], theirs["t10y"], theirs["final_loss"])
    from trainnoise import methods

    s, _ = mod.parse([*args[:-1], str(root / "sweep")])
    assert set(methods.from_sweep(s)) == {"stsb/modifier_x1/b4/seed1", "stsb/digital_lora/b4/seed1"}
    other, _ = mod.parse([*args[:-1], str(root / "sweep"), "--lora-lr", "0.5"])
    assert methods.from_sweep(other) == {}
    s2, _ = mod.parse([*args[:-1], str(root / "sweep"), "--steps", "stsb=3"])  # no sweep cell at 3 steps
    assert methods.from_sweep(s2) == {}


def test_every_row_is_deployed_on_the_preset_and_the_scale_reaches_the_training(sweep_run, tmp_path):
    from lorafusion_ext import HardwareConfig
    from lorafusion_ext.data.glue import task_spec
    from lorafusion_ext.hardware import Modifier
    from lorafusion_ext.nn.deploy import analog_layers, set_hardware
    from lorafusion_ext.training.methods import analog_classifier, task_state, train_hwa_lora
    from harness import Cell
    from sweep.methods import data, lora_cfg, on_crossbar, train_cfg
    from trainnoise import methods

    root, glue, _ = sweep_run
    mod = _load_script("training_noise")
    s, _ = mod.parse(["--quick", "--glue-dir", str(glue), "--out", str(tmp_path / "run"), "--no-progress",
                      "--model", str(root / "sweep" / "tiny_bert")])
    paper = HardwareConfig.preset("pcm_paper")
    assert s.hardware == paper and list(s.rows) == ROWS
    hw = {name: r.training_hardware(paper) for name, r in s.rows.items()}
    assert hw["modifier_x1"] == paper and hw["modifier_x0"] == paper.replace(modifier=Modifier("none"))
    assert hw["modifier_x0.25"] == paper.replace(modifier=Modifier("add_normal", 0.067 * 0.25))
    assert hw["no_out_noise"] == paper.replace(out_noise=0.0)

    def cell(row: str) -> Cell:
        return Cell(f"stsb/{row}/b4/seed0", "training_noise", "stsb", "hwa_lora", 0, variant=row, params=(("steps", 4),))

    states = {}
    for row in ("modifier_x0", "modifier_x0.5", "modifier_x1", "no_out_noise"):
        model, dev, _ = methods.trained(s, cell(row))
        assert all(layer.hardware == paper for _, layer in analog_layers(model)), row  # deployed on the preset
        states[row] = task_state(model)
        if row == "no_out_noise":
            # run_cell evaluates that model: the preset's output noise is on at deployment, not the training's 0.
            rec = methods.run_cell(dataclasses.replace(s, out=tmp_path / "cells"), cell(row))
            assert on_crossbar(s, model, dev, "stsb", 0)["t0"] == rec["t0"]
            assert HardwareConfig.from_dict(rec["training_hardware"]) == hw[row]
            set_hardware(model, hw[row])
            assert on_crossbar(s, model, dev, "stsb", 0)["t0"] != rec["t0"]

    def same(a: dict, b: dict) -> bool:
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # The scale reaches the training: the same seed trains to other LoRA weights at 0, 0.5 and 1...
    assert not same(states["modifier_x0"], states["modifier_x1"])
    assert not same(states["modifier_x0.5"], states["modifier_x0"]) and not same(states["modifier_x0.5"],
                                                                                   states["modifier_x1"])
    # ... and scale 0 is training a model built with the modifier off.
    direct, tok = analog_classifier(s.model, task_spec("stsb"), paper.replace(modifier=Modifier("none")), seed=0)
    _, train_set, _ = data(s, "stsb", tok)
    train_hwa_lora(direct, train_set, lora_cfg(s),
                   dataclasses.replace(train_cfg(s, cell("modifier_x0")), checkpoint_dir=None, resume=False))
    assert same(task_state(direct), states["modifier_x0"])
