"""The build: what was compiled is reported, a mismatched torch gives a readable error, and
the CUDA kernels compile with nvcc wherever nvcc exists (CI has one, but no GPU)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import textwrap

import pytest
import torch

import lorafusion_ext as lf
from lorafusion_ext.ops import extension as _extension

from scripts import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# `make cuda-check` sets this: there the extension must have been built with CUDA, so the
# CUDA-kernel test fails instead of skipping when it was not.
EXPECT_CUDA = os.environ.get("LORAFUSION_EXPECT_CUDA") == "1"
_BUILT_CUDA = bool(lf.build_info()["with_cuda"])


def _lorafusion_ops() -> list[str]:
    return sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith("lorafusion::"))


def test_build_info_reports_torch_and_cuda():
    info = lf.build_info()
    assert info["torch_version"] == torch.__version__
    assert isinstance(info["with_cuda"], bool)
    assert info["with_cuda"] is _BUILT_CUDA
    if info["with_cuda"]:
        # A CUDA build needs a CUDA torch and nvcc, and reports the architectures it compiled.
        assert torch.version.cuda is not None
        assert info["nvcc"] and info["cuda_archs"]
        assert all(a.isdigit() and int(a) >= 50 for a in info["cuda_archs"]), info["cuda_archs"]
    else:
        assert info["cuda_archs"] == []
    if EXPECT_CUDA:
        assert info["with_cuda"], "LORAFUSION_EXPECT_CUDA=1 but the extension was built without CUDA"


@pytest.mark.skipif(not (_BUILT_CUDA or EXPECT_CUDA),
                    reason="extension built without CUDA (`make cuda-check` builds and checks one)")
def test_every_op_has_a_cuda_kernel():
    """Every op has a CPU and a CUDA kernel registered (checked at the dispatcher: no GPU needed)."""
    assert _BUILT_CUDA, "LORAFUSION_EXPECT_CUDA=1 but the extension was built without CUDA"
    ops = _lorafusion_ops()
    expected = {"lorafusion::crossbar_mvm", "lorafusion::crossbar_mvm_backward", "lorafusion::pool_fusion",
                "lorafusion::pool_fusion_backward", "lorafusion::philox_normal"}
    assert expected <= set(ops), ops
    for key in ("CPU", "CUDA"):
        needed = [n for n in ops if key == "CPU" or n not in CPU_ONLY_OPS]
        missing = [n for n in needed if not torch._C._dispatch_has_kernel_for_dispatch_key(n, key)]
        assert not missing, f"no {key} kernel for {missing}"


# The fused PCM program/drift passes exist to make the CPU fast; on CUDA the device model runs
# as plain PyTorch on the same Philox normals (philox_normal has a CUDA kernel), because
# lorafusion_ext.ops.device's fused_program / fused_drift apply to CPU tensors only.
CPU_ONLY_OPS = frozenset({"lorafusion::pcm_program", "lorafusion::pcm_drift"})


def test_cpu_only_ops_are_only_called_on_the_cpu():
    from lorafusion_ext.devices import PCMLikeModel
    from lorafusion_ext.ops import device

    assert CPU_ONLY_OPS <= set(_lorafusion_ops())
    w = torch.full((2, 3), 0.5)
    assert device.fused_program(PCMLikeModel(), w, device.PhiloxNoise(1)) is not None
    # Off the CPU (a meta tensor stands in for CUDA here) the caller gets None: the plain path.
    assert device.fused_program(PCMLikeModel(), w.to("meta"), device.PhiloxNoise(1)) is None


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


def _cmake() -> str | None:
    try:
        import cmake  # the build dependency's own binary, wherever the venv is
    except ImportError:
        return shutil.which("cmake")
    return os.path.join(cmake.CMAKE_BIN_DIR, "cmake")


@pytest.mark.skipif(_cmake() is None, reason="cmake not installed: the architecture selection cannot be run")
@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, "80;90"),
        ({"TORCH_CUDA_ARCH_LIST": "8.0;9.0+PTX"}, "80;90"),
        ({"TORCH_CUDA_ARCH_LIST": "5.0 7.5 8.6"}, "75;86"),  # sm_50: not in this nvcc
        ({"TORCH_CUDA_ARCH_LIST": "8.0", "LORAFUSION_CUDA_ARCHS": "90,100"}, "90;100"),
        ({"LORAFUSION_CUDA_ARCHS": "5.0;6.1"}, "error: none of the CUDA architectures 50;61"),
        ({"LORAFUSION_CUDA_ARCHS": "Ampere"}, "error: LORAFUSION_CUDA_ARCHS holds 'Ampere'"),
    ],
    ids=["default", "torch_list", "drops_unsupported", "ours_first", "none_left", "malformed"],
)
def test_cuda_arch_selection(env, expected, tmp_path):
    """cmake/cuda_archs.cmake: user lists respected, never an architecture nvcc cannot compile
    (a stand-in nvcc that lists CUDA 13's architectures)."""
    nvcc = tmp_path / "nvcc"
    nvcc.write_text("#!/bin/sh\nprintf 'compute_75\\ncompute_80\\ncompute_86\\ncompute_90\\ncompute_100\\n'\n")
    nvcc.chmod(0o755)
    script = tmp_path / "select.cmake"
    script.write_text(textwrap.dedent(f"""
        include("{ROOT}/cmake/cuda_archs.cmake")
        lf_select_cuda_archs("{nvcc}" "80;90" archs)
        message(NOTICE "ARCHS=${{archs}}")
    """))
    run_env = {k: v for k, v in os.environ.items() if k not in ("TORCH_CUDA_ARCH_LIST", "LORAFUSION_CUDA_ARCHS")}
    proc = subprocess.run([_cmake(), "-P", str(script)], capture_output=True, text=True, env={**run_env, **env})
    err = " ".join(proc.stderr.split())  # cmake wraps its messages
    if expected.startswith("error: "):
        assert proc.returncode != 0 and expected[len("error: "):] in err, err
    else:
        assert proc.returncode == 0, err
        assert f"ARCHS={expected}" in err
        if env.get("TORCH_CUDA_ARCH_LIST", "").startswith("5.0"):
            assert "asks for sm 50, which" in err


def _toolkit_module():
    return load_file("cuda_toolkit_root", os.path.join(ROOT, "cmake", "cuda_toolkit_root.py"))


def _fake_nvcc_root(base, major=13):
    root = base / "cuda"
    (root / "bin").mkdir(parents=True)
    (root / "include").mkdir()
    (root / "lib").mkdir()
    nvcc = root / "bin" / "nvcc"
    nvcc.write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {major}.0, V{major}.0.88'\n")
    nvcc.chmod(0o755)
    (root / "include" / "cuda_runtime_api.h").write_text("// nvcc's own\n")
    (root / "lib" / "libcudart.so.13").write_text("")
    return nvcc


def test_cuda_toolkit_root_assembles_nvcc_and_the_wheels(tmp_path, monkeypatch):
    """Without a full toolkit, the root holds nvcc's files and the wheels' headers and libraries,
    nvcc's own file winning, with unversioned .so links; a missing library is named."""
    tk = _toolkit_module()
    nvcc = _fake_nvcc_root(tmp_path)
    wheel = tmp_path / "site" / "nvidia" / "cu13"
    (wheel / "include").mkdir(parents=True)
    (wheel / "lib").mkdir()
    for h in tk.REQUIRED_HEADERS:
        (wheel / "include" / h).write_text("// wheel\n")
    for lib in tk.REQUIRED_LIBS:
        (wheel / "lib" / f"lib{lib}.so.13").write_text("")
    monkeypatch.setattr(tk, "wheel_roots", lambda major: [wheel] if major == 13 else [])
    out = tmp_path / "root"
    assert tk.main(["--nvcc", str(nvcc), "--out", str(out), "--torch-cuda", "13.0"]) == 0
    assert (out / "bin" / "nvcc").exists()
    assert (out / "include" / "cuda_runtime_api.h").read_text() == "// nvcc's own\n"
    assert (out / "include" / "cublas_v2.h").read_text() == "// wheel\n"
    for lib in tk.REQUIRED_LIBS:
        assert os.readlink(out / "lib64" / f"lib{lib}.so") == f"lib{lib}.so.13"
    assert (out / "targets" / tk.TARGET / "lib" / "libcublas.so").exists()
    assert tk.missing(out) == []

    (wheel / "lib" / "libcufft.so.13").unlink()
    out2 = tmp_path / "root2"
    assert tk.main(["--nvcc", str(nvcc), "--out", str(out2)]) == 1
    assert tk.missing(out2) == ["lib64/libcufft.so"]


def test_cuda_toolkit_root_rejects_another_cuda_major(tmp_path, capsys):
    tk = _toolkit_module()
    nvcc = _fake_nvcc_root(tmp_path, major=12)
    assert tk.main(["--nvcc", str(nvcc), "--out", str(tmp_path / "root"), "--torch-cuda", "13.0"]) == 1
    assert "is CUDA 12 but torch was built with CUDA 13.0" in capsys.readouterr().err
