"""The host a benchmark ran on, for its report: CPU model, vector extensions, and the ones the
extension's kernels were compiled for."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import lorafusion_ext as lf


def host() -> dict:
    """The CPU model, its vector extensions and the ones the extension was compiled for."""
    info: dict = {"machine": platform.machine(), "cpus": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    fields = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        fields.setdefault(k.strip(), v.strip())
    flags = set(fields.get("flags", "").split())
    info["model_name"] = fields.get("model name", platform.processor() or "unknown")
    info["family_model"] = f"family {fields.get('cpu family', '?')} model {fields.get('model', '?')}"
    info["cpu_isa"] = [f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512vl") if f in flags]
    built = lf.build_info().get("cpu_flags", "")
    info["build_flags"] = built
    info["kernels_isa"] = "AVX-512" if "-mavx512f" in built else ("AVX2" if "-mavx2" in built else "scalar")
    return info
