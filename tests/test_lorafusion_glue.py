"""Smoke run of the LoRAFusion GLUE experiment (`python/experiments/lorafusion_glue.py --quick`)
on a tiny random BERT and a tiny synthetic GLUE folder written here (so the test neither needs
nor reads the shared GLUE copy): every cell runs, the JSON has the issue's shape, and a rerun
skips the finished cells."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

from scripts import load_file

pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[1] / "python" / "experiments" / "lorafusion_glue.py"
WORDS = "the a movie film good bad man woman said company year new one two people".split()


def _load_script():
    return load_file("lorafusion_glue", SCRIPT)


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))


def _write_glue(root: Path, n: int = 24) -> Path:
    """SST-2, MRPC and RTE in the official GLUE TSV layout, random sentences and labels."""
    rng = random.Random(0)
    for split in ("train", "dev"):
        rows = {"SST-2": ["sentence\tlabel"], "MRPC": ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"],
                "RTE": ["index\tsentence1\tsentence2\tlabel"]}
        for i in range(n):
            rows["SST-2"].append(f"{_sentence(rng)}\t{i % 2}")
            rows["MRPC"].append(f"{i % 2}\t{i}\t{i + 1}\t{_sentence(rng)}\t{_sentence(rng)}")
            rows["RTE"].append(f"{i}\t{_sentence(rng)}\t{_sentence(rng)}\t{('entailment', 'not_entailment')[i % 2]}")
        for folder, lines in rows.items():
            (root / folder).mkdir(parents=True, exist_ok=True)
            (root / folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


def test_quick_run_is_resumable_reports_pending_cells_and_completes(tmp_path):
    mod = _load_script()
    glue = _write_glue(tmp_path / "glue")
    out = tmp_path / "run"
    args = ["--quick", "--glue-dir", str(glue), "--out", str(out), "--threads", "1"]
    # A partial run (the pool only) reports what is pending.
    part = mod.main([*args, "--only", "pool/"])
    assert not part["complete"] and "held_out/rte/lorafusion/seed0" in part["pending"]
    assert set(part["pool"]) == {"sst2", "mrpc", "rte"}
    assert "Incomplete" in (out / "lorafusion.md").read_text()
    pool_cells = {p.name: p.read_text() for p in (out / "cells").glob("*.json")}
    assert len(pool_cells) == 3
    # The full run resumes: the pool cells are not run again.
    res = mod.main(args)
    assert {p.name: p.read_text() for p in (out / "cells").glob("pool__*.json")} == pool_cells
    assert res["complete"], res["pending"]
    assert set(res["held_out"]) == {"sst2", "mrpc", "rte"}
    for task, entries in res["held_out"].items():
        assert set(entries) == {*mod.METHODS, "chance", "full_finetune_t0", "learnable"}
        # The reference levels of the task: its chance on the dev examples, a full fine-tune, and
        # whether that fine-tune learned anything.
        assert entries["chance"] == res["references"][task]["chance"] and entries["full_finetune_t0"] is not None
        assert isinstance(entries["learnable"], bool)
        for name in mod.METHODS:
            e = entries[name]
            assert len(e["t0"]) == len(e["t10y"]) == 2, (task, name)
            assert all(0.0 <= v <= 1.0 for v in e["t0"] + e["t10y"]), (task, name)
            assert e["trainable"] > 0
    # Fewer trainable parameters for the fusion than for a LoRA; the head alone is the least.
    rte = res["held_out"]["rte"]
    assert rte["head_only"]["trainable"] < rte["magnitude_only"]["trainable"] < rte["lorafusion"]["trainable"]
    assert rte["lorafusion"]["trainable"] < rte["hwa_lora"]["trainable"] == rte["digital_lora"]["trainable"]
    # The pool is on the crossbar: LoRAFusion programs more cells once, none per task.
    assert rte["lorafusion"]["cells_once"] > rte["hwa_lora"]["cells_once"]
    assert rte["lorafusion"]["cells_per_task"] == rte["hwa_lora"]["cells_per_task"] == 0
    cells = mod.run_folder(mod.parse(args)).load()
    assert cells["ablation/rte/pool_digital"]["cells_once"] == rte["hwa_lora"]["cells_once"]
    # The seed-0 HWA-LoRA is the pool member of the task, reused.
    assert cells["held_out/rte/hwa_lora/seed0"]["reused_from"] == "pool/rte"
    assert cells["held_out/rte/hwa_lora/seed0"]["t0"] == cells["pool/rte"]["t0"]
    assert set(res["ablations"]["ablation"]["rte"]) == {"mode=sum", "granularity=layer", "granularity=global",
                                                        "no_magnitude", "pool_digital", "K=1"}
    on_disk = json.loads((out / "lorafusion.json").read_text())
    assert set(on_disk) >= {"held_out", "ablations", "command", "wall_s"}
    # The wall clock from the first cell's start covers every computed cell; the threads are the run's.
    assert on_disk["elapsed_s"] >= max(r["wall_s"] for r in cells.values())
    assert on_disk["threads"] == 1 and "1 torch thread(s)" in (out / "lorafusion.md").read_text()
    assert "Complete" in (out / "lorafusion.md").read_text() and (out / "lorafusion.png").is_file()
    # Rerun: every cell is skipped, nothing is written.
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}
    again = mod.main(args)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")} == stamps
    assert again["held_out"] == res["held_out"]
    # The run cannot be resumed with another magnitude lr (its cells would mix two recipes)...
    with pytest.raises(ValueError, match="--magnitude-lr"):
        mod.main([*args, "--magnitude-lr", "0.05"])
    # ...but a new run imports what does not depend on it: the pool members (copied, so its
    # LoRAFusion cells fuse the same pool) and the pool-free methods except magnitude_only.
    other = tmp_path / "other"
    mod.main(["--quick", "--glue-dir", str(glue), "--out", str(other), "--threads", "1", "--import-from", str(out),
              "--model", str(out / "tiny_bert"), "--magnitude-lr", "0.05", "--report"])
    imported = mod.run_folder(mod.parse(["--quick", "--glue-dir", str(glue), "--out", str(other)])).load()
    assert {f"pool/{t}" for t in ("sst2", "mrpc", "rte")} <= set(imported)
    assert (other / "pool" / "rte" / "run.json").is_file()
    assert imported["held_out/rte/digital_lora/seed1"]["t0"] == cells["held_out/rte/digital_lora/seed1"]["t0"]
    assert not any("/magnitude_only/" in k or "/lorafusion/" in k or k.startswith("ablation/") for k in imported)


def test_cells_of_the_old_log_are_read(tmp_path):
    # A run made before the harness appended its cells to <out>/cells.jsonl: they are still finished
    # (their engine's noise stream written in, as a run of the current engine would be).
    mod = _load_script()
    glue = _write_glue(tmp_path / "glue")
    s = mod.parse(["--quick", "--glue-dir", str(glue), "--out", str(tmp_path / "run"), "--model", "m"])
    s.out.mkdir(parents=True)
    (s.out / "cells.jsonl").write_text("".join(json.dumps({"key": c.key, "t0": 0.5, "noise_stream": sys.modules["harness"].NOISE_STREAM}) + "\n"
                                             for c in mod.plan(s)))
    assert mod.run_folder(s).load().keys() == {c.key for c in mod.plan(s)}


def test_pool_span_measures_what_the_other_members_can_express():
    import torch

    from lorafusion_ext.nn.pool import LoRAPool

    mod = _load_script()
    g = torch.Generator().manual_seed(0)
    layers = {}
    for name in ("a", "b"):
        A = torch.randn(3, 2, 16, generator=g)
        B = torch.randn(3, 12, 2, generator=g)
        A[2], B[2] = A[0], 2 * B[0]  # member 2's update is twice member 0's
        layers[name] = (A, B)
    span = mod.pool_span(LoRAPool(layers, alpha=4.0, adapter_names=["x", "y", "z"]))
    for key in ("explained_layer", "explained_global"):
        assert abs(span[key]["z"] - 1) < 1e-9 and abs(span[key]["x"] - 1) < 1e-9
        assert span[key]["y"] < 0.2  # an unrelated random update
    assert span["explained_layer"]["y"] >= span["explained_global"]["y"] - 1e-12
    assert abs(span["cosine"]["x"]["z"] - 1) < 1e-9
