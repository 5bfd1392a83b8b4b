"""Time-dependent IR drop in inference: our CPU kernel against AIHWKIT 1.1's
TorchInferenceRPUConfigIRDropT tile, and against our own crossbar MVM without IR drop, side by
side (paired rounds: each round runs the three back to back; ratios are the medians of the
per-round ratios).

The configuration is AIHWKIT's IRDropT default (ONE_PASS, 8-bit DAC/ADC, 128 time steps,
8 segments, 0.15 Ω per cell, integrated-current quantisation on) on 512 x 512 tiles, without
output noise so that the outputs compare (they differ only where one sits on an ADC rounding
boundary: by one ADC step).
AIHWKIT's pure-torch IR drop builds [tokens, segments, columns / 2, time steps] tensors, so the
default shapes are small.

    python python/bench/ir_drop.py [--threads 1] [--reps 3] [--shapes 32x384x384,128x384x384]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

import lorafusion_ext as lf

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))


def _aihwkit_layer(lin: nn.Linear, rpu) -> nn.Module:
    from aihwkit_harness import aihwkit_layer

    return aihwkit_layer(lin, rpu)


def bench_shape(m: int, k: int, n: int, reps: int) -> dict:
    from aihwkit.simulator.configs import TorchInferenceRPUConfigIRDropT

    rpu = TorchInferenceRPUConfigIRDropT()
    rpu.forward.out_noise = 0.0  # deterministic, so that the last column compares the models
    rpu.mapping.max_input_size = 512
    rpu.mapping.max_output_size = 512
    torch.manual_seed(0)
    lin = nn.Linear(k, n)
    hw = lf.HardwareConfig.from_aihwkit(rpu)
    cases = {
        "ours_ir_drop": lf.nn.AnalogLinear.from_linear(lin, hw, seed=0).eval(),
        "ours_no_ir_drop": lf.nn.AnalogLinear.from_linear(lin, hw.replace(ir_drop=lf.hardware.IRDrop()), seed=0).eval(),
        "aihwkit_ir_drop": _aihwkit_layer(lin, rpu).eval(),
    }
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(1))
    times: dict[str, list[float]] = {name: [] for name in cases}
    with torch.no_grad():
        for name, mod in cases.items():  # warm-up
            mod(x)
        for _ in range(reps):
            for name, mod in cases.items():
                t = time.perf_counter()
                mod(x)
                times[name].append(time.perf_counter() - t)
        a, b = cases["ours_ir_drop"](x), cases["aihwkit_ir_drop"](x)
        diff = (a - b).abs().max().item()
        equal = (a == b).float().mean().item()

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    return {
        "shape": f"{m}x{k}->{n}",
        "ms": {name: 1e3 * statistics.median(v) for name, v in times.items()},
        "speedup_vs_aihwkit": ratio("aihwkit_ir_drop", "ours_ir_drop"),
        "cost_vs_no_ir_drop": ratio("ours_ir_drop", "ours_no_ir_drop"),
        "max_abs_diff_vs_aihwkit": diff,
        "fraction_equal_to_aihwkit": equal,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--shapes", default="32x384x384,128x384x384", help="tokens x in x out, comma-separated")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", module="aihwkit")
    shapes = []
    for s in args.shapes.split(","):
        try:
            m, k, n = (int(v) for v in s.split("x"))
        except ValueError:
            raise SystemExit(f"--shapes: {s!r}; expected tokens x in x out, e.g. 32x384x384") from None
        shapes.append((m, k, n))
    results = [bench_shape(m, k, n, args.reps) for m, k, n in shapes]
    print(f"IR drop benchmark: fp32, {args.threads} threads, {args.reps} paired rounds, "
          f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}")
    print("| shape | ours ms | AIHWKIT ms | speed-up vs AIHWKIT | ours without IR drop ms | cost of IR drop "
          "| outputs equal to AIHWKIT | max abs diff |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        ms = r["ms"]
        print(f"| {r['shape']} | {ms['ours_ir_drop']:.1f} | {ms['aihwkit_ir_drop']:.0f} | {r['speedup_vs_aihwkit']:.0f}x | "
              f"{ms['ours_no_ir_drop']:.2f} | {r['cost_vs_no_ir_drop']:.0f}x | {100 * r['fraction_equal_to_aihwkit']:.2f} % "
              f"| {r['max_abs_diff_vs_aihwkit']:.2g} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "reps": args.reps, "results": results}, indent=2))
    return results


if __name__ == "__main__":
    main()
