"""The experiment harness (`python/experiments/harness/`): resumable run folders, claims between
processes, spreads over seeds, report writing, old record layouts, and the noise-stream version
that keeps cells of two simulator versions apart. No model is trained here."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python" / "experiments"))
import harness  # noqa: E402
from harness import cells as harness_cells  # noqa: E402
from scripts import load_file  # noqa: E402


def _holder(path: Path) -> subprocess.Popen:
    """Another live process holding an flock on `path` until killed."""
    code = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _plan() -> list[harness.Cell]:
    return [harness.Cell(f"held_out/t{t}/m/seed{seed}", "held_out", f"t{t}", "m", seed) for t in (0, 1) for seed in (0, 1)]


def test_resume_skips_finished_cells_and_a_killed_run_keeps_them(tmp_path):
    folder = harness.RunFolder(tmp_path / "cells")
    claims = harness.Claims(tmp_path / "claims")  # the claim of the killed cell is this process's
    calls: list[str] = []

    def compute(cell: harness.Cell, done: dict) -> dict:
        calls.append(cell.key)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the run is killed in its third cell
        return {"key": cell.key, "t0": 0.5 + cell.seed / 10}

    with pytest.raises(KeyboardInterrupt):
        harness.run_queue(_plan(), folder, claims, compute, poll_s=0.0)
    done = folder.load()
    assert sorted(done) == sorted(c.key for c in _plan()[:2])
    assert all(r["noise_stream"] == harness.NOISE_STREAM and "finished_at" in r and r["worker"] == os.getpid()
               for r in done.values())
    assert not list((tmp_path / "cells").glob(".*"))  # no half-written file
    # The rerun computes only the unfinished cells, in plan order.
    calls.clear()
    harness.run_queue(_plan(), folder, claims, compute, poll_s=0.0)
    assert calls == [c.key for c in _plan()[2:]]
    assert harness.to_compute(_plan(), folder.load()) == []
    calls.clear()
    harness.run_queue(_plan(), folder, claims, compute, poll_s=0.0)
    assert calls == []
    assert not list((tmp_path / "claims").iterdir())  # released claims leave no file


def test_a_pending_cell_waits_for_the_cell_it_needs(tmp_path):
    folder = harness.RunFolder(tmp_path / "cells")
    plan = [harness.Cell("fuse"), harness.Cell("pool")]
    order: list[str] = []

    def compute(cell: harness.Cell, done: dict) -> dict:
        if cell.key == "fuse" and "pool" not in done:
            raise harness.PendingCell("pool not trained yet")
        order.append(cell.key)
        return {"key": cell.key}

    harness.run_queue(plan, folder, harness.Claims(tmp_path / "claims"), compute, poll_s=0.0, log=lambda m: None)
    assert order == ["pool", "fuse"]


def test_compute_once_reads_back_and_skips_a_cell_claimed_elsewhere(tmp_path):
    folder = harness.RunFolder(tmp_path, config={"steps": 3})
    claims = harness.Claims(tmp_path, suffix=".lock")
    rec = folder.compute_once("a", lambda: {"acc": 0.7}, claims)
    assert rec["acc"] == 0.7 and rec["key"] == {"steps": 3} and rec["wall_s"] >= 0
    assert folder.compute_once("a", lambda: pytest.fail("recomputed"), claims)["acc"] == 0.7
    holder = _holder(claims.path("b"))
    try:
        assert folder.compute_once("b", lambda: pytest.fail("computed twice"), claims, log=lambda m: None) is None
    finally:
        holder.kill()
        holder.wait()
    assert folder.compute_once("b", lambda: {"acc": 0.1}, claims)["acc"] == 0.1
    # Another configuration does not reuse the cells.
    assert harness.RunFolder(tmp_path, config={"steps": 4}).load() == {}


def test_claims_exclude_a_second_process_until_it_dies(tmp_path):
    claims = harness.Claims(tmp_path)
    assert claims.claim("pool/sst2") and not claims.claimed_by_other("pool/sst2")  # ours
    claims.release("pool/sst2")
    assert not claims.path("pool/sst2").exists()
    holder = _holder(claims.path("pool/rte"))
    try:
        assert claims.claimed_by_other("pool/rte") and not claims.claim("pool/rte")
    finally:
        holder.kill()
        holder.wait()
    assert not claims.claimed_by_other("pool/rte") and claims.claim("pool/rte")  # the kernel freed it
    claims.release("pool/rte")
    # A claim file naming a live pid (reused after a restart) holds nothing: no pid is trusted.
    claims.path("x").write_text(str(os.getppid()))
    assert claims.claim("x")
    claims.release("x")


def test_spreads_over_seeds():
    xs = [0.71, 0.73, 0.69]
    m, sd = harness.mean_std(xs)
    assert m == pytest.approx(statistics.mean(xs)) and sd == pytest.approx(statistics.stdev(xs))
    assert harness.format_mean_std(xs) == f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}"
    assert math.isnan(harness.mean_std([0.5])[1])  # the spread over one seed is unknown, not 0
    assert harness.format_mean_std([0.8123], digits=2, scale=100) == "81.23"
    from harness.report import mean_and_error

    assert mean_and_error([0.5]) == (0.5, 0.0)
    with pytest.raises(ValueError, match="at least one value"):
        harness.mean_std([])


def test_report_pages_command_and_settings(tmp_path):
    cmd = harness.command_line("python/experiments/x.py", ["--out", "a b", "--report"], drop=("--report",))
    assert cmd == "python python/experiments/x.py --out 'a b'"
    assert harness.command_line("x.py", [], prefix="") == "x.py"
    drawn: list[Path] = []
    harness.write_page(tmp_path / "docs", "page", "# T\n", {"a": [1, 2]}, json_newline=True,
                       plot=lambda path: (drawn.append(path), path.write_bytes(b"png")))
    assert (tmp_path / "docs" / "page.md").read_text() == "# T\n"
    assert (tmp_path / "docs" / "page.json").read_text() == json.dumps({"a": [1, 2]}, indent=2) + "\n"
    assert drawn == [tmp_path / "docs" / "page.png"]
    assert sorted(p.name for p in (tmp_path / "docs").iterdir()) == ["page.json", "page.md", "page.png"]
    harness.record_settings(tmp_path, {"command": cmd, "threads": 1})
    assert harness.recorded_settings(tmp_path) == {"command": cmd, "threads": 1}
    assert harness.recorded_settings(tmp_path / "none") is None
    assert "CPUs visible" in harness.machine() and harness.machine(2).endswith("2 torch thread(s)")


def test_old_layouts_are_read(tmp_path, monkeypatch):
    monkeypatch.setattr(harness_cells, "NOISE_STREAM", 1)  # the old layouts predate the field
    # The append-only log of the GLUE/BBH scripts before the harness, one record per line.
    log = tmp_path / "cells.jsonl"
    log.write_text(json.dumps({"key": "pool/sst2", "t0": 0.8}) + "\n\n" + json.dumps({"key": "pool/rte", "t0": 0.6}) + "\n")
    folder = harness.RunFolder(tmp_path / "cells", legacy_log=log)
    assert not folder.empty() and set(folder.load()) == {"pool/sst2", "pool/rte"}
    assert folder.get("pool/rte")["t0"] == 0.6
    folder.store("held_out/rte/m/seed0", {"key": "held_out/rte/m/seed0", "t0": 0.5})
    assert set(folder.load()) == {"pool/sst2", "pool/rte", "held_out/rte/m/seed0"}
    assert (tmp_path / "cells" / "held_out__rte__m__seed0.json").is_file() and log.read_text().count("\n") == 3
    # A cell keyed by its configuration (the paper scripts), written before the noise-stream field.
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "rank_1.json").write_text(json.dumps({"key": {"steps": 300}, "acc": 0.9}))
    assert harness.RunFolder(tmp_path / "w", config={"steps": 300}).load() == {
        "rank_1": {"key": {"steps": 300}, "acc": 0.9}}


def test_a_noise_stream_bump_leaves_old_cells_out(tmp_path, monkeypatch):
    monkeypatch.setattr(harness_cells, "NOISE_STREAM", 1)
    folder = harness.RunFolder(tmp_path, config={"steps": 300})
    (tmp_path / "old.json").write_text(json.dumps({"key": {"steps": 300}, "acc": 0.9}))  # no field: version 1
    folder.store("new", {"acc": 0.8})
    assert set(folder.load()) == {"old", "new"} and harness.LEGACY_NOISE_STREAM == 1
    monkeypatch.setattr(harness_cells, "NOISE_STREAM", 2)
    assert folder.load() == {} and set(folder.stale) == {"old", "new"}
    assert "noise stream 1" in folder.stale["old"]
    assert folder.get("old") is None
    folder.store("newer", {"acc": 0.7})
    assert list(folder.load()) == ["newer"] and folder.load()["newer"]["noise_stream"] == 2
    # Nor are such cells adopted from a report.
    fresh = harness.RunFolder(tmp_path / "fresh", config={"steps": 300})
    assert fresh.adopt({"a": {"key": {"steps": 300}, "acc": 0.9}}) == [] and fresh.load() == {}


def test_adopt_only_into_an_empty_folder(tmp_path):
    folder = harness.RunFolder(tmp_path, config={"steps": 300})
    now = harness.NOISE_STREAM  # cells of this engine's stream (older ones are never adopted)
    report = {"a": {"key": {"steps": 300}, "acc": 0.9, "noise_stream": now},
              "b": {"key": {"steps": 100}, "acc": 0.1, "noise_stream": now}}
    assert folder.adopt(report) == ["a"]  # b was computed with another recipe
    assert json.loads((tmp_path / "a.json").read_text()) == report["a"]  # as it was: no field added
    (tmp_path / "a.json").unlink()
    folder.store("c", {"acc": 0.5})
    assert folder.adopt(report) == []  # a cell deleted from a used folder stays deleted


# ---------------------------------------------------------------------- the committed results resume
# A fresh clone rerunning the command recorded in a committed page (docs/results) finds the page's
# finished cells: the script plans no cell to compute. Nothing is trained; the data folders of
# the commands are replaced by an empty folder (only their existence is checked).
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"


def _script(name: str):
    pytest.importorskip("transformers")
    return load_file(name, ROOT / "python" / "experiments" / f"{name}.py")


def _recorded_argv(report: Path, tmp_path: Path, extra: tuple[str, ...] = ()) -> list[str]:
    """The arguments of the page's recorded command, its data folder and run folder in tmp_path."""
    import shlex

    words = shlex.split(json.loads(report.read_text())["command"])
    argv = words[words.index(next(w for w in words if w.endswith(".py"))) + 1:]
    (tmp_path / "data").mkdir(exist_ok=True)
    for flag, value in (("--glue-dir", tmp_path / "data"), ("--data-dir", tmp_path / "data"),
                        ("--out", tmp_path / "run"), ("--work", tmp_path / "work")):
        if flag in argv:
            argv[argv.index(flag) + 1] = str(value)
    return [*argv, *extra]


#: The stream new cells are computed with; the committed pages were computed with stream 1
#: (device noise from torch.normal_, before the Philox device streams).
CURRENT_STREAM = harness.NOISE_STREAM
COMMITTED_STREAM = 1


def _pin_committed_stream(monkeypatch) -> None:
    """Resume as the committed pages' engine did: their cells are of stream 1. Under the current
    stream they are not the run's (test_committed_cells_are_stale_under_the_current_stream)."""
    monkeypatch.setattr(harness_cells, "NOISE_STREAM", COMMITTED_STREAM)


def test_committed_cells_are_stale_under_the_current_stream(tmp_path):
    # The Philox device streams changed every seeded programming/drift result: a cell without a
    # noise_stream field (every committed page's) is never adopted into a run of the current engine.
    assert CURRENT_STREAM == 2
    folder = harness.RunFolder(tmp_path / "w")
    assert folder.adopt({"legacy": {"key": "legacy", "acc": 0.9}}) == [] and folder.load() == {}


@pytest.mark.parametrize("page, extra", [
    ("lorafusion_short_budget.json", ()),
    ("pool100/lorafusion.json", ()),
    # Its page was run when 5e-3 and --diagnosis-task sst2 were the defaults (docs/results/index.md).
    ("lorafusion_magnitude_lr_5e-3.json", ("--magnitude-lr", "0.005", "--diagnosis-task", "sst2")),
])
def test_glue_pages_resume_with_nothing_to_compute(page, extra, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    _pin_committed_stream(monkeypatch)  # the commands' --docs and the committed reports are relative to it
    mod = _script("lorafusion_glue")
    argv = _recorded_argv(RESULTS / page, tmp_path, extra)
    assert "--out" in argv  # else the default run folder would be the checkout's
    s = mod.parse(argv)
    folder = mod.run_folder(s)
    assert harness.to_compute(mod.plan(s), folder.load())  # before: the whole plan
    taken = mod.adopt_committed(s, folder)
    # Everything the page holds is taken; what is left are the reference levels added to the
    # protocol after these pages ran (each task's chance and full fine-tune, issue 25).
    left = harness.to_compute(mod.plan(s), folder.load())
    assert taken and all(c.kind in ("chance", "reference") for c in left)
    assert sorted(c.key for c in left) == sorted([f"chance/{t}" for t in s.tasks] +
                                                 [f"reference/{t}/full_finetune" for t in s.tasks])
    assert json.loads((s.out / "adopted_report.json").read_text())["source"].endswith(page)
    # Under another noise stream, the committed cells are not the run's: all of them are recomputed.
    monkeypatch.setattr(harness_cells, "NOISE_STREAM", CURRENT_STREAM)
    assert len(harness.to_compute(mod.plan(s), mod.run_folder(s).load())) == len(mod.plan(s))


@pytest.mark.parametrize("page", ["lorafusion_bbh.json", "lorafusion_bbh_reduced.json"])
def test_bbh_pages_resume_with_nothing_to_compute(page, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    _pin_committed_stream(monkeypatch)
    mod = _script("lorafusion_bbh")
    argv = _recorded_argv(RESULTS / page, tmp_path)
    s = mod.parse(argv if "--out" in argv else [*argv, "--out", str(tmp_path / "run")])
    folder = mod.run_folder(s)
    assert mod.adopt_committed(s, folder)
    assert harness.to_compute(mod.plan(s), folder.load()) == []


def test_hwa_lora_page_resumes_with_nothing_to_compute(tmp_path, monkeypatch):
    _pin_committed_stream(monkeypatch)
    mod = _script("hwa_lora_paper")
    args = mod.parse_args(_recorded_argv(RESULTS / "hwa_lora_short_budget.json", tmp_path, ("--work", str(tmp_path / "work"))))
    runner = mod.Runner(args)
    assert set(runner.adopt(RESULTS / "hwa_lora_short_budget.json")) == set(mod.expected_cells())
    runner.reload()
    assert [c for c in mod.expected_cells() if c not in runner.cells] == []


def test_aihwkit_page_resumes_with_nothing_to_compute(tmp_path, monkeypatch):
    _pin_committed_stream(monkeypatch)
    mod = _script("aihwkit_equivalence")
    args = mod.parse_args(_recorded_argv(RESULTS / "aihwkit_equivalence.json", tmp_path, ("--work", str(tmp_path / "work"))))
    key = {k: getattr(args, k) for k in mod.KEY_FIELDS}
    folder = harness.RunFolder(tmp_path / "work" / args.config, config=key)
    note = tmp_path / "note.json"
    assert mod.adopt_committed(folder, RESULTS, args.config, key, note)
    assert set(folder.load()) == {mod.cell_name(e, seed) for e in mod.ENGINES for seed in range(args.seeds)}
    # What the page says and the JSON does not hold, for the regenerated page.
    assert json.loads(note.read_text())["cells_s"] > 0
