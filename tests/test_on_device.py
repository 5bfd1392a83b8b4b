"""The on-device measurement (`python/experiments/on_device.py`, issue 27 item 6): a `--quick`
run on a tiny random BERT, a random pool and a tiny synthetic GLUE folder has the issue's JSON
schema, pairs its costs by seed, resumes computing only a missing cell and reports pending
cells; the aged setting trains on the programmed, drifted and compensated crossbar."""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1] / "python" / "experiments"
if str(ROOT) not in sys.path:  # the scripts' shared folders (harness, sweep, ondevice) import as top-level packages
    sys.path.insert(0, str(ROOT))
from scripts import load_experiment as load_script  # noqa: E402
from test_budget_sweep import _write_glue  # noqa: E402


def _load_script():
    return load_script("on_device")


def test_quick_run_has_the_schema_pairs_by_seed_and_resumes(tmp_path):
    from ondevice import report
    from ondevice.protocol import BACKWARDS, METHODS

    mod = _load_script()
    glue = _write_glue(tmp_path / "glue")
    args = ["--quick", "--glue-dir", str(glue), "--out", str(tmp_path / "run"), "--no-progress"]
    with pytest.raises(SystemExit):
        mod.main([*args, "--steps", "cola=10"])  # not a task of --tasks
    with pytest.raises(SystemExit):
        mod.main([*args, "--backwards", "8bit"])  # no ideal to pair against
    res = mod.main(args)
    assert res["complete"], res["pending"]
    assert set(res) >= {"tasks", "command", "wall_s", "machine"}
    assert "--quick" in res["command"] and "--no-progress" not in res["command"]
    assert isinstance(res["wall_s"], float) and res["wall_s"] > 0
    assert set(res["tasks"]) == {"sst2", "stsb"} and res["seeds"] == [0, 1]
    for task, per_method in res["tasks"].items():
        assert set(per_method) == set(METHODS)
        for m, per_bw in per_method.items():
            assert set(per_bw) == set(BACKWARDS)
            for bw, v in per_bw.items():
                assert set(v) == {"t0", "t10y"}
                for when, vals in v.items():
                    # value i is seed i's cell, and each on-chip cost is that seed's value minus its ideal one
                    assert vals == [res["cells"][f"{task}/{m}/{bw}/b2/seed{seed}"][when] for seed in (0, 1)]
                    if bw != "ideal":
                        ideal = per_bw["ideal"][when]
                        assert res["costs"][task][m][bw][when] == [a - b for a, b in zip(vals, ideal)]
    # Leave-one-out: STS-B is a member of the pool, SST-2 is not.
    assert res["cells"]["stsb/lorafusion/8bit/b2/seed0"]["pool"] == ["cola", "mrpc", "rte"]
    assert res["cells"]["sst2/lorafusion/8bit/b2/seed0"]["pool"] == ["cola", "mrpc", "stsb", "rte"]
    page = (tmp_path / "run" / "on_device.md").read_text()
    assert "**Status: complete.**" in page and "suffers more" in page and (tmp_path / "run" / "on_device.png").is_file()

    # A rerun computes only the cell that is missing.
    cells = tmp_path / "run" / "cells"
    gone = cells / "stsb__hwa_lora__6bit__b2__seed1.json"
    gone.unlink()
    stamps = {p.name: p.stat().st_mtime_ns for p in cells.glob("*.json")}
    again = mod.main(args)
    assert {p.name: p.stat().st_mtime_ns for p in cells.glob("*.json") if p.name in stamps} == stamps
    assert gone.is_file() and again["complete"] and again["tasks"] == res["tasks"]  # seeded: recomputed alike

    # A missing cell is pending: null in its seed's slot, in the costs it pairs into, and on the page.
    s, _ = mod.parse(args)
    done = {k: v for k, v in res["cells"].items() if k != "stsb/hwa_lora/ideal/b2/seed1"}
    chance = {t: {"metric": res["metrics"][t], "value": res["chance"][t]} for t in res["tasks"]}
    partial = report.build(s, mod.plan(s), done, chance)
    assert partial["tasks"]["stsb"]["hwa_lora"]["ideal"]["t0"][1] is None
    assert all(partial["costs"]["stsb"]["hwa_lora"][bw]["t10y"][1] is None for bw in ("8bit", "6bit", "8bit_1day"))
    assert partial["pending"] == ["stsb/hwa_lora/ideal/b2/seed1"]
    text = report.markdown(partial)
    assert "(1 of 2 seeds)" in text and "pending (seeds missing)" in text and "## Pending cells" in text


def test_aged_setting_trains_on_the_drifted_compensated_crossbar(tmp_path):
    from harness.tiny_models import tiny_bert
    from lorafusion_ext import HardwareConfig
    from lorafusion_ext.data.glue import task_spec
    from lorafusion_ext.nn.deploy import analog_layers, drift, program
    from lorafusion_ext.training.methods import analog_classifier
    from ondevice.methods import TRAINING_CHIP_SEED, age
    from ondevice.protocol import BACKWARDS, ONE_DAY

    hw = BACKWARDS["8bit_1day"].hardware(HardwareConfig.preset("pcm_paper"))
    assert hw.backward == hw.forward_periphery and BACKWARDS["8bit_1day"].age_s == ONE_DAY
    assert BACKWARDS["6bit"].hardware(hw).backward.adc.bits == 6 and BACKWARDS["ideal"].hardware(hw).backward is None
    hw = hw.replace(out_noise=0.0)  # no read noise: the two models' outputs compare exactly below
    folder = tiny_bert(tmp_path / "bert")
    ids = {"input_ids": torch.tensor([[2, 5, 9, 14, 3]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    plain, _ = analog_classifier(folder, task_spec("sst2"), hw, seed=3)
    aged, _ = analog_classifier(folder, task_spec("sst2"), hw, seed=3)
    g = torch.Generator().manual_seed(3 + TRAINING_CHIP_SEED)
    program(plain, g)
    drift(plain, ONE_DAY, g)
    age(aged, ONE_DAY, seed=3)
    ref = dict(analog_layers(plain))
    for name, layer in analog_layers(aged):
        alpha = ref[name].drift_alpha
        assert not torch.all(alpha == 1)  # a day of drift moved the read-out
        cols = layer.layout.row_tiles()
        assert torch.equal(layer.programmed_weight, ref[name].programmed_weight)
        assert torch.equal(layer.programmed_scales, ref[name].programmed_scales * alpha[:, cols])
        assert torch.all(layer.drift_alpha == 1)
    # Eval mode reads the same compensated crossbar as the unfolded one (α applied once).
    plain.eval(), aged.eval()
    with torch.no_grad():
        torch.testing.assert_close(aged(**ids).logits, plain(**ids).logits, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["hwa_lora", "lorafusion"])
def test_aged_cell_killed_mid_training_resumes_to_the_same_state(tmp_path, method):
    """The aged crossbar (a pool's tiles included) is built before the training and rebuilt
    before a checkpoint is loaded over it, so a cell killed after 2 of 4 steps ends where an
    uninterrupted one does."""
    from harness import Cell
    from lorafusion_ext.data.glue import task_spec
    from lorafusion_ext.nn.deploy import analog_layers
    from lorafusion_ext.nn.tile_state import is_programmed
    from lorafusion_ext.training.methods import analog_classifier, task_state
    from ondevice import methods
    from ondevice.protocol import BACKWARDS
    from sweep.methods import data

    mod = _load_script()
    glue = _write_glue(tmp_path / "glue")
    s, _ = mod.parse(["--quick", "--glue-dir", str(glue), "--out", str(tmp_path / "run"), "--no-progress",
                      "--steps", "stsb=4"])
    cell = Cell(f"stsb/{method}/8bit_1day/b4/seed0", "on_device", "stsb", method, 0, variant="8bit_1day",
                params=(("steps", 4),))

    class Killed(Exception):
        pass

    def run(kill_after: int | None = None):
        model, tok = analog_classifier(s.model, task_spec("stsb"), BACKWARDS["8bit_1day"].hardware(s.hardware), seed=0)
        _, train_set, _ = data(s, "stsb", tok)
        calls = []

        def kill(module, _):
            assert all(is_programmed(layer) for _, layer in analog_layers(module))  # base and pool tiles
            calls.append(1)
            if kill_after is not None and len(calls) > kill_after:
                raise Killed

        model.register_forward_pre_hook(kill)
        try:
            rec = methods.train(s, cell, model, train_set)
        except Killed:
            return None
        return rec, task_state(model)

    whole, state = run()
    shutil.rmtree(tmp_path / "run" / "checkpoints")
    assert run(kill_after=2) is None
    resumed, state2 = run()
    assert resumed["final_loss"] == whole["final_loss"]
    assert resumed.get("pool", ["cola", "mrpc", "rte"]) == ["cola", "mrpc", "rte"]
    assert state.keys() == state2.keys() and all(torch.equal(state[k], state2[k]) for k in state)


def test_ideal_hwa_lora_cells_are_the_sweep_cells_and_another_recipe_is_not_imported(tmp_path):
    """The `hwa_lora` / `ideal` cells are imported from a budget sweep of the same recipe (its
    `hwa_lora` cells at the same steps), and equal what this script computes itself without the
    sweep; a sweep of another recipe or other steps gives nothing, nor one whose preset's
    backward is not the ideal one."""
    from ondevice import methods

    glue = _write_glue(tmp_path / "glue")
    sweep = load_script("budget_sweep").main(["--quick", "--glue-dir", str(glue), "--out", str(tmp_path / "sweep"),
                                              "--tasks", "stsb", "--no-progress"])  # budgets 2 and 4; seed 1 at 4
    assert sweep["complete"]
    mod = _load_script()
    base = ["--quick", "--glue-dir", str(glue), "--no-progress", "--tasks", "stsb", "--steps", "stsb=4",
            "--backwards", "ideal", "--model", str(tmp_path / "sweep" / "tiny_bert")]
    res = mod.main([*base, "--out", str(tmp_path / "run"), "--from-sweep", str(tmp_path / "sweep")])
    assert res["complete"], res["pending"]
    mine = [f"stsb/hwa_lora/ideal/b4/seed{seed}" for seed in (0, 1)]
    assert res["imported"] == {k: f"{tmp_path / 'sweep'}:stsb/hwa_lora/b4/seed{seed}" for seed, k in enumerate(mine)}
    for seed, key in enumerate(mine):
        rec, theirs = res["cells"][key], sweep["cells"][f"stsb/hwa_lora/b4/seed{seed}"]
        assert rec["wall_s"] == 0.0 and rec["backward"] == "ideal" and rec["steps"] == 4
        assert (rec["t0"], rec["t10y"]) == (theirs["t0"], theirs["t10y"])
    assert all("imported_from" not in res["cells"][f"stsb/lorafusion/ideal/b4/seed{s}"] for s in (0, 1))
    assert "2 cells imported" in (tmp_path / "run" / "on_device.md").read_text()

    # Computed here without the sweep, the same cells come out (the same model, batches and evaluation).
    alone = mod.main([*base, "--out", str(tmp_path / "alone"), "--from-sweep", str(tmp_path / "none"),
                      "--only", "stsb/hwa_lora"])
    assert alone["imported"] == {}
    for key in mine:
        rec, imported = alone["cells"][key], res["cells"][key]
        assert "imported_from" not in rec and rec["wall_s"] > 0
        for when in ("t0", "t10y"):
            assert rec[when] == pytest.approx(imported[when], abs=1e-6)
        assert rec["final_loss"] == pytest.approx(imported["final_loss"], abs=1e-6)

    def found(*extra: str) -> set[str]:
        s, _ = mod.parse([*base, "--out", str(tmp_path / "run"), "--from-sweep", str(tmp_path / "sweep"), *extra])
        return set(methods.from_sweep(s, mod.config(s)))

    assert found() == set(mine)
    assert found("--lora-lr", "0.5") == set()  # another recipe
    assert found("--steps", "stsb=3") == set()  # no sweep cell at 3 steps
    assert found("--steps", "stsb=2") == {"stsb/hwa_lora/ideal/b2/seed0"}  # the sweep has seed 0 only at 2 steps
    s, _ = mod.parse([*base, "--out", str(tmp_path / "run"), "--from-sweep", str(tmp_path / "sweep")])
    on_chip = dataclasses.replace(s, hardware=s.hardware.replace(backward=s.hardware.forward_periphery))
    assert methods.from_sweep(on_chip, mod.config(on_chip)) == {}  # the preset's own backward: not the sweep's cell
