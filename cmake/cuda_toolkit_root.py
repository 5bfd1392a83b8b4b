"""The CUDA toolkit root that torch's CMake config is pointed at, found or assembled.

Torch's CMake config looks for one toolkit folder holding nvcc, the CUDA runtime and the
cuBLAS / cuSPARSE / cuRAND / cuSOLVER / cuFFT headers and libraries under the usual names
(`include/`, `lib64/libcublas.so`...). A full CUDA toolkit is such a folder. A GPU user who has
only nvcc (e.g. the `nvidia-cuda-nvcc` wheel or a minimal install) and a CUDA torch from the
package index has the rest in torch's `nvidia-*` wheels (`site-packages/nvidia/cu13/` for
CUDA 13, `site-packages/nvidia/<lib>/` for CUDA 12), with versioned `.so.N` names only.

This script, run by CMakeLists.txt at configure time, prints the toolkit root to use:
nvcc's own root when it is complete, else a folder it assembles under `--out` from nvcc's root
and the wheels (symbolic links: `bin`, `nvvm`, `include/*`, `lib64/*`, plus unversioned
`libX.so -> libX.so.N` links). nvcc's own files win over the wheels' where both have a file.

Usage: python cuda_toolkit_root.py --nvcc /path/to/nvcc --out build/cuda-toolkit [--torch-cuda 13.0]
Exit status 1 (and a message naming what is missing) when no complete root can be made, or
when nvcc's CUDA major version is not torch's.
"""

from __future__ import annotations

import argparse
import platform
import re
import subprocess
import sys
from pathlib import Path

# nvcc's name for this machine's target folder (targets/<name>/lib, targets/<name>/include).
TARGET = "sbsa-linux" if platform.machine() in ("aarch64", "arm64") else "x86_64-linux"

# What torch's ATen/cuda headers include and its CMake config links.
REQUIRED_HEADERS = ("cuda_runtime_api.h", "cublas_v2.h", "cublasLt.h", "cusparse.h", "curand.h",
                    "cusolverDn.h", "cufft.h", "nvrtc.h")
REQUIRED_LIBS = ("cudart", "cublas", "cublasLt", "cusparse", "curand", "cusolver", "cufft", "nvrtc")


def nvcc_major(nvcc: Path) -> int:
    out = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"release (\d+)\.(\d+)", out)
    if match is None:
        raise RuntimeError(f"cannot read the CUDA release from `{nvcc} --version`:\n{out}")
    return int(match.group(1))


def toolkit_of(nvcc: Path) -> Path:
    """nvcc's toolkit root (the folder above its bin/), through any wrapper script or link."""
    real = nvcc.resolve()
    text = real.read_bytes()[:4096]
    if text.startswith(b"#!"):  # a shell wrapper that execs the real nvcc
        match = re.search(rb"(/\S+/bin/nvcc)\b", text)
        if match is not None:
            real = Path(match.group(1).decode()).resolve()
    return real.parent.parent


def lib_dirs(root: Path) -> list[Path]:
    return [d for d in (root / "lib64", root / "lib", root / "targets" / TARGET / "lib") if d.is_dir()]


def has_lib(dirs: list[Path], name: str) -> bool:
    return any((d / f"lib{name}.so").exists() for d in dirs)


def missing(root: Path) -> list[str]:
    inc = root / "include"
    dirs = lib_dirs(root)
    gone = [f"include/{h}" for h in REQUIRED_HEADERS if not (inc / h).exists()]
    gone += [f"lib64/lib{n}.so" for n in REQUIRED_LIBS if not has_lib(dirs, n)]
    return gone


def wheel_roots(major: int) -> list[Path]:
    """The `nvidia-*` wheels' folders holding include/ and lib/, in this Python's site-packages."""
    import site

    roots: list[Path] = []
    for sp in site.getsitepackages() + [site.getusersitepackages()]:
        base = Path(sp) / "nvidia"
        if not base.is_dir():
            continue
        merged = base / f"cu{major}"  # CUDA 13 wheels: one merged tree
        if merged.is_dir():
            roots.append(merged)
        # CUDA 12 wheels: one tree per library (nvidia/cublas/include, nvidia/cublas/lib).
        roots += sorted(p for p in base.iterdir() if p.is_dir() and (p / "include").is_dir() and p != merged
                        and not re.fullmatch(r"cu\d+", p.name))
    return roots


def link(src: Path, dst: Path) -> None:
    if dst.is_symlink() or dst.exists():
        return
    dst.symlink_to(src)


def assemble(toolkit: Path, wheels: list[Path], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("bin", "nvvm"):
        if (toolkit / sub).is_dir():
            link(toolkit / sub, out / sub)
    inc = out / "include"
    lib = out / "lib64"
    inc.mkdir(exist_ok=True)
    lib.mkdir(exist_ok=True)
    link(Path("lib64"), out / "lib")
    # nvcc, run from this root, looks for its libraries and headers under targets/<arch>/.
    target = out / "targets" / TARGET
    target.mkdir(parents=True, exist_ok=True)
    link(Path("../../lib64"), target / "lib")
    link(Path("../../include"), target / "include")
    for root in [toolkit, *wheels]:  # first come, first kept: nvcc's own files win
        if (root / "include").is_dir():
            for entry in (root / "include").iterdir():
                link(entry, inc / entry.name)
        for d in lib_dirs(root):
            for entry in d.iterdir():
                if entry.is_file() or entry.is_symlink():
                    link(entry, lib / entry.name)
    # Unversioned names: the linker looks for libX.so, the wheels ship libX.so.N.
    for entry in sorted(lib.iterdir()):
        match = re.fullmatch(r"(lib.+\.so)\.\d+", entry.name)
        if match is not None:
            link(Path(entry.name), lib / match.group(1))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nvcc", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder for an assembled root")
    parser.add_argument("--torch-cuda", default="", help="torch.version.cuda, e.g. 13.0")
    args = parser.parse_args(argv)
    major = nvcc_major(args.nvcc)
    if args.torch_cuda and int(args.torch_cuda.split(".")[0]) != major:
        print(f"lorafusion_ext: {args.nvcc} is CUDA {major} but torch was built with CUDA {args.torch_cuda}; "
              f"expected an nvcc of CUDA {args.torch_cuda.split('.')[0]} (set CUDA_HOME or PATH)", file=sys.stderr)
        return 1
    toolkit = toolkit_of(args.nvcc)
    if not missing(toolkit):
        print(toolkit)
        return 0
    wheels = wheel_roots(major)
    root = assemble(toolkit, wheels, args.out)
    gone = missing(root)
    if gone:
        print(f"lorafusion_ext: no complete CUDA {major} toolkit: nvcc's root {toolkit} and the "
              f"nvidia wheels {[str(w) for w in wheels] or '(none found)'} lack {', '.join(gone)}. "
              "Install a full CUDA toolkit (CUDA_HOME), or a CUDA torch from the package index "
              "(its nvidia-* wheels hold these files).", file=sys.stderr)
        return 1
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
