"""`make gpu-verify DRY_RUN=1` (python/bench/gpu_verify.py --dry-run) into a temporary folder: the
one call prepared for a lent GPU machine runs every stage it can without a GPU and writes a
well-formed report, so that it does not rot between GPU sessions.

The dry run's compile stage is skipped when `make install`'s build folder already compiled the
extension and every csrc/cuda/*.cu with nvcc (newer than its source): compiling them again takes
minutes on 2 cores. Without such a folder the dry run compiles (slow, but the same checks).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "python" / "bench" / "gpu_verify.py"
DRY = "not run (dry run)"
STAGES = ["env", "build", "tests", "noise", "half", "mvm", "pool", "hwa_lora", "decode"]


def _install_build_dir() -> Path | None:
    """The build folder of this python's editable install: `make install`'s (build/{wheel_tag}),
    or `make cuda-check`'s (build/cuda-{wheel_tag})."""
    for cache in sorted((ROOT / "build").glob("*/CMakeCache.txt")):
        folder = cache.parent
        if folder.name.startswith("gpu-verify"):
            continue
        found = re.search(r"^Python_EXECUTABLE:\w+=(.*)$", cache.read_text(errors="replace"), re.M)
        if found and os.path.abspath(found.group(1)) == os.path.abspath(sys.executable) and any(folder.glob("_C*.so")):
            return folder
    return None


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    pytest.importorskip("transformers", reason="the SmolLM2 stages need transformers (make install)")
    if shutil.which("cmake") is None:
        pytest.skip("cmake not installed: the dry run configures the build")
    out = tmp_path_factory.mktemp("gpu_verify")
    cmd = [sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)]
    build = _install_build_dir()
    if build is not None:
        cmd += ["--reuse-build", str(build)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=ROOT)
    return proc, out


def test_dry_run_succeeds_and_prints_the_summary(dry_run):
    proc, out = dry_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "== gpu-verify (dry run)" in proc.stdout
    assert "targets:" in proc.stdout and str(out / "gpu.md") in proc.stdout
    assert "randomly initialised" in proc.stdout


def test_dry_run_json_is_well_formed(dry_run):
    _, out = dry_run
    doc = json.loads((out / "gpu.json").read_text())
    assert doc["mode"] == "dry run" and doc["exit_code"] == 0 and doc["failed_stages"] == []
    assert [s["name"] for s in doc["stages"]] == STAGES
    for st in doc["stages"]:
        assert st["status"] in ("ok", "reused"), st
        assert st["budget_s"] > 0 and st["wall_s"] >= 0 and st["summary"]
        assert (out / st["log"]).exists() or st["name"] == "build"
    assert sum(b for _, b in _budgets()) <= 480  # the stage budgets fit the GPU machine's 8 minutes
    targets = {t["target"]: t for t in doc["targets"]}
    assert set(targets) == {"mvm_fp32", "mvm_bf16", "pool", "hwa_lora", "half"}
    assert all(t["status"] == DRY for t in targets.values())
    stages = {s["name"]: s for s in doc["stages"]}
    # The CPU halves ran and the GPU columns say why they are empty.
    noise = stages["noise"]["data"]["rows"]
    assert noise and all(len(r["cpu_sha256"]) == 16 and r["gpu_sha256"] == DRY for r in noise)
    half = stages["half"]["data"]["rows"]
    assert {(r["device"], r["dtype"]) for r in half} >= {("cpu", "bfloat16"), ("cpu", "float16")}
    assert all(r["rounded_once"] is True for r in half if r["device"] == "cpu")
    assert all(r["rounded_once"] == DRY for r in half if r["device"] == "cuda")
    mvm = stages["mvm"]["data"]["rows"]
    assert {r["dtype"] for r in mvm} == {"float32", "bfloat16"}
    assert all(r["passes"] >= 1 and r["linear_ms"] > 0 and r["crossbar_ms"] > 0 for r in mvm)
    assert stages["hwa_lora"]["data"]["rows"][0]["cand_ms"] > 0
    assert stages["decode"]["data"]["rows"][0]["analog_tok_s"] > 0


def test_dry_run_markdown_report(dry_run):
    _, out = dry_run
    md = (out / "gpu.md").read_text()
    assert md.startswith("# GPU verification (dry run)")
    for title in ("## Targets", "## Stages", "Same seed, same noise", "Fused crossbar MVM vs cuBLAS F.linear",
                  "Pool fusion vs its floor", "HWA-LoRA step", "SmolLM2-135M decode"):
        assert title in md
    assert DRY in md
    # Every table row has as many cells as its header.
    lines = md.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|---"):
            n = lines[i - 1].count("|")
            j = i + 1
            while j < len(lines) and lines[j].startswith("|"):
                assert lines[j].count("|") == n, lines[j]
                j += 1


def _budgets() -> list[tuple[str, int]]:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import gpu_verify
    finally:
        sys.path.pop(0)
    return list(gpu_verify.STAGES)


def test_install_doc_lists_the_stage_budgets():
    """docs/install.md's table of stages says the budgets the script uses."""
    doc = (ROOT / "docs" / "install.md").read_text()
    for name, budget in _budgets():
        assert f"| {name} | {budget} s |" in doc, name
