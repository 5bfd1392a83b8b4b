"""The build: what was compiled is reported, a mismatched torch gives a readable error, and
the CUDA kernels compile with nvcc wherever nvcc exists (CI has one, but no GPU)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

import pytest
import torch

import lorafusion_ext as lf
from lorafusion_ext import _extension

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_build_info_reports_torch_and_cuda():
    info = lf.build_info()
    assert info["torch_version"] == torch.__version__
    assert isinstance(info["with_cuda"], bool)
    if not torch.cuda.is_available():
        assert info["with_cuda"] is False and info["cuda_archs"] == []


def test_torch_mismatch_is_one_readable_error(monkeypatch):
    monkeypatch.setattr(_extension, "_read_build_info", lambda: {"torch_version": "0.0.1"})
    with pytest.raises(ImportError, match=r"built against torch 0.0.1 .*pip install --no-build-isolation"):
        _extension.load()


def test_ops_are_registered():
    assert hasattr(torch.ops.lorafusion, "crossbar_mvm")
    tags = torch.ops.lorafusion.crossbar_mvm.default.tags
    assert torch.Tag.nondeterministic_seeded in tags


CUDA_SOURCES = sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed: the CUDA kernels cannot be compiled here")
@pytest.mark.skipif(not CUDA_SOURCES, reason="no CUDA kernels in csrc/cuda yet (the CUDA issue adds them)")
@pytest.mark.parametrize("source", CUDA_SOURCES, ids=os.path.basename)
def test_cuda_kernels_compile_with_nvcc(source, tmp_path):
    cmd = ["nvcc", "-std=c++17", "-O2", "--threads=2", "-gencode", "arch=compute_80,code=sm_80",
           "-gencode", "arch=compute_90,code=sm_90", "-I", os.path.join(ROOT, "csrc", "include"),
           "-c", source, "-o", str(tmp_path / "k.o")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not installed: the header check cannot be compiled")
def test_normal_bound_holds_for_every_uniform(tmp_path):
    """kNormalMaxAbs, which lets the crossbar skip a bound-management pass that must fail,
    bounds every normal the Philox/Box-Muller header can produce (exhaustive over 2^24)."""
    exe = tmp_path / "normal_bound"
    build = subprocess.run(["g++", "-std=c++17", "-O2", "-ffp-contract=off", "-I", os.path.join(ROOT, "csrc", "include"),
                            os.path.join(ROOT, "tests", "cpp", "normal_bound.cpp"), "-o", str(exe)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
