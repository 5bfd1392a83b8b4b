"""Where GLUE comes from: a local folder, or Hugging Face `datasets` when online; with neither,
`lorafusion demo` (what `make run` runs) stops at once, before any model is loaded, with an
error that names both ways out."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lorafusion_ext.data.glue import GLUE_SOURCES_HELP, GlueUnavailableError, check_glue

ROOT = Path(__file__).resolve().parent.parent
SHARED_GLUE = ROOT.parent / "shared" / "data" / "glue"


def _offline_env(tmp_path: Path) -> dict[str, str]:
    """No GLUE folder, no network for Hugging Face, an empty cache (nothing to fall back on)."""
    env = {k: v for k, v in os.environ.items() if k not in ("LORAFUSION_GLUE_DIR", "HF_DATASETS_CACHE")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
               HF_DATASETS_CACHE=str(tmp_path / "hf" / "datasets"), OMP_NUM_THREADS="1")
    return env


def _assert_names_both_ways_out(message: str) -> None:
    assert "--glue-dir" in message and "GLUE_DIR=" in message, message
    assert "datasets" in message and "network" in message, message


def test_demo_without_glue_offline_stops_before_loading_a_model(tmp_path):
    out = tmp_path / "demo"
    # A model path that does not exist: had the demo loaded a model first, it would fail on that.
    cmd = [sys.executable, "-m", "lorafusion_ext.apps.cli", "demo", "--out", str(out),
           "--model", str(tmp_path / "no-such-model")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_offline_env(tmp_path), capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 1, f"expected the data error (exit 1), got {proc.returncode}:\n{proc.stderr}"
    assert "lorafusion demo: error: GLUE" in proc.stderr
    assert "no-such-model" not in proc.stderr
    _assert_names_both_ways_out(proc.stderr)
    assert "Traceback" not in proc.stderr
    assert not out.exists(), "the demo started (wrote its output folder) before checking its data"


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_passes_the_glue_folder_only_when_there_is_one():
    def demo_line(*overrides: str) -> str:
        proc = subprocess.run(["make", "-n", "--no-print-directory", "run", *overrides], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        lines = [line for line in proc.stdout.splitlines() if "lorafusion demo" in line]
        assert len(lines) == 1, proc.stdout
        return lines[0]

    without = demo_line("GLUE_DIR=")
    assert "--glue-dir" not in without and "OFFLINE" not in without  # `datasets` may go online
    with_dir = demo_line("GLUE_DIR=/data/glue")
    assert '--glue-dir "/data/glue"' in with_dir


def test_local_folder_missing_files_are_named(tmp_path):
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "train.tsv").write_text("sentence\tlabel\n")
    with pytest.raises(GlueUnavailableError) as err:
        check_glue(["sst2", "rte"], tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "SST-2" / "dev.tsv") in msg and str(tmp_path / "RTE" / "train.tsv") in msg
    assert str(tmp_path / "SST-2" / "train.tsv") not in msg
    assert GLUE_SOURCES_HELP in msg
    with pytest.raises(GlueUnavailableError, match="does not exist"):
        check_glue(["sst2"], tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown GLUE task"):
        check_glue(["sst3"], tmp_path)


@pytest.mark.skipif(not SHARED_GLUE.is_dir(), reason="no GLUE copy at ../shared/data/glue")
def test_local_folder_with_the_data_passes():
    check_glue(["sst2", "mrpc", "cola", "stsb"], SHARED_GLUE)


def test_no_network_fails_in_seconds_without_offline_variables(monkeypatch):
    """Without HF_*_OFFLINE set, an unreachable hub is found by a connection probe, not after the
    hub client's retries (the .invalid domain never resolves, RFC 2606)."""
    pytest.importorskip("datasets", reason="Hugging Face `datasets` is not installed")
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
    with pytest.raises(GlueUnavailableError) as err:
        check_glue(["sst2"])
    msg = str(err.value)
    assert "cannot reach the hub" in msg and "hub.invalid" in msg and "HF_DATASETS_OFFLINE=1" in msg
    _assert_names_both_ways_out(msg)
    check_glue([])  # no GLUE task (a BBH-only run): nothing to reach, offline or not
