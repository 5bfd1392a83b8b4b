"""The noise-levels measurement (`python/experiments/noise_levels.py`, issue 25): a `--quick` run
on a tiny random BERT and a tiny synthetic GLUE folder writes its page, orders the training reads
by their noise, reads the deployed model at every time, computes nothing on a rerun, and refuses
bad options by name."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1] / "python" / "experiments"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from scripts import load_experiment as _load_script  # noqa: E402
from test_budget_sweep import _write_glue  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("noise_levels")
    glue = _write_glue(root / "glue")
    args = ["--quick", "--glue-dir", str(glue), "--out", str(root / "run")]
    return root, args, _load_script("noise_levels").main(args)


def _mean(xs):
    return sum(xs) / len(xs)


def test_quick_run_writes_every_read_and_orders_the_training_noise(run):
    root, _, res = run
    assert res["complete"] and not res["pending"]
    assert set(res) >= {"reads", "ratios", "command", "wall_s", "machine"} and "--quick" in res["command"]
    names = [r["name"] for r in res["reads"]]
    assert names == ["digital", "train/modifier_x1", "train/modifier_x0.5", "train/modifier_x0.25",
                     "train/modifier_x0", "deployed/0s", "deployed/10y"]
    by = {r["name"]: r for r in res["reads"]}
    assert by["digital"]["embedding_rel_err"] == [0.0] and by["digital"]["layer_rel_err"] == [[0.0], [0.0]]
    for r in res["reads"][1:]:
        assert len(r["pearson"]) == 2 and len(r["layer_rel_err"]) == 2  # 2 trials; the tiny BERT's 2 layers
        assert all(v > 0 for v in r["embedding_rel_err"])  # every hardware read moves the embeddings
    # More weight noise in training, further from the digital model (the other noises are the same).
    errs = [_mean(by[f"train/modifier_x{x}"]["embedding_rel_err"]) for x in ("1", "0.5", "0.25", "0")]
    assert errs == sorted(errs, reverse=True)
    assert [by[f"train/modifier_x{x}"]["modifier_std"] for x in ("1", "0.5", "0")] == [0.067, 0.0335, 0.0]
    # The deployed read drifts away from the digital model with time.
    assert _mean(by["deployed/10y"]["embedding_rel_err"]) > _mean(by["deployed/0s"]["embedding_rel_err"])
    ratio = _mean(by["train/modifier_x1"]["embedding_rel_err"]) / _mean(by["deployed/0s"]["embedding_rel_err"])
    assert res["ratios"]["train_x1_over_deployed_first"] == pytest.approx(ratio)
    page = (root / "run" / "noise_levels.md").read_text()
    assert "**Status: complete.**" in page and "## What the numbers say" in page
    assert (root / "run" / "noise_levels.png").is_file()
    assert json.loads((root / "run" / "noise_levels.json").read_text())["reads"] == res["reads"]


def test_rerun_computes_nothing(run):
    root, args, res = run
    cells = sorted((root / "run" / "cells").glob("*.json"))
    stamps = {p.name: p.stat().st_mtime_ns for p in cells}
    again = _load_script("noise_levels").main(args)
    assert again["reads"] == res["reads"]
    assert {p.name: p.stat().st_mtime_ns for p in sorted((root / "run" / "cells").glob("*.json"))} == stamps


@pytest.mark.parametrize("bad", [["--scales", "-1"], ["--scales", "x"], ["--trials", "0"], ["--hardware", "ideal"]])
def test_bad_options_exit_naming_the_option(run, bad, capsys):
    root, args, _ = run
    with pytest.raises(SystemExit):
        _load_script("noise_levels").main([*args, *bad])
    assert bad[0] in capsys.readouterr().err


def test_a_decoder_is_read_too(run, tmp_path):
    """Not only BERTs: a Llama's reads (mean-pooled last hidden states, its first token) come out alike."""
    from harness.tiny_models import tiny_llama

    root, _, _ = run
    model = tiny_llama(tmp_path / "llama")
    res = _load_script("noise_levels").main(["--quick", "--glue-dir", str(root / "glue"), "--out", str(tmp_path / "run"),
                                             "--model", model, "--trials", "1"])
    assert res["complete"] and len(res["reads"]) == 7
    assert all(len(r["layer_rel_err"]) == 2 for r in res["reads"])


def test_both_sentences_of_a_pair_share_a_batch_and_every_sentence_is_read_once(run):
    """A read whose noise is drawn per call must embed a pair's two sentences under one draw."""
    import numpy as np
    from noiselevels.measure import Pairs, batches
    from noiselevels.protocol import Settings
    from transformers import AutoTokenizer

    root, _, _ = run
    tok = AutoTokenizer.from_pretrained(str(root / "run" / "tiny_bert"))
    words = "the a movie film good bad man woman said company year new one two people".split()
    first = [" ".join(words[: 1 + i % 9]) for i in range(11)]
    second = [" ".join(words[i % 5 :]) for i in range(11)]
    s = Settings(model="", glue_dir="", hardware_name="pcm_paper", out=root, docs=root, batch_size=4)
    b = batches(Pairs(first, second, np.zeros(11)), tok, s)
    assert sorted(b.order) == list(range(22)) and b.n == 22
    row = 0
    for enc in b.encodings:
        rows = b.order[row : row + enc["input_ids"].shape[0]]
        firsts = [i for i in rows if i < 11]
        assert sorted(rows) == sorted(firsts + [11 + i for i in firsts]) and len(firsts) <= 2
        row += len(rows)
