"""What learned input ranges (HardwareConfig.input_range) cost per pass.

For each shape tokens x in -> out, compares an AnalogLinear with learned ranges against the same
layer without them, in eval (forward, no gradient) and in training (forward + backward, the
ranges and the input requiring gradients; the paper preset's modifier off so that both sides do
the same weight work). The ranged layer has finished its data initialisation before timing.

Paired rounds (python/bench/crossbar_mvm.py's style): in every round the layer without ranges
runs right before the one with them, and a ratio is the median over rounds of that round's
ranged / plain time.

    python python/bench/input_range.py [--threads 1] [--reps 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Callable

import torch
from torch import nn

import lorafusion_ext as lf
from lorafusion_ext.hardware import BoundManagement, InputRange, Mapping_, Modifier, NoiseManagement, Tiles

DEFAULT_SHAPES = ((2048, 384, 1536), (2048, 1536, 384), (4096, 512, 512))


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_case(m: int, k: int, n: int, reps: int) -> dict:
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(k, n)
    with torch.no_grad():
        lin.weight.normal_(0.0, 0.02, generator=g)
    x = torch.randn(m, k, generator=g)
    # AIHWKIT's advice with learned ranges: no noise or bound management (the range replaces them).
    hw = lf.HardwareConfig.preset("pcm_paper").replace(
        mapping=Mapping_("row", 1.0), modifier=Modifier("none"), tiles=Tiles(512, 512),
        noise_management=NoiseManagement("none"), bound_management=BoundManagement("none"))
    hw_ir = hw.replace(input_range=InputRange(init_from_data=1))
    plain = {mode: lf.nn.AnalogLinear.from_linear(lin, hw, seed=1) for mode in ("eval", "train")}
    ranged = {mode: lf.nn.AnalogLinear.from_linear(lin, hw_ir, seed=1) for mode in ("eval", "train")}
    with torch.no_grad():
        for layer in ranged.values():
            layer.train()(x)  # the data initialisation
    for mode in ("eval", "train"):
        plain[mode].train(mode == "train")
        ranged[mode].train(mode == "train")
    xg = x.clone().requires_grad_(True)
    grad = torch.randn(m, n, generator=g)

    def run(mode: str, layer: nn.Module) -> Callable[[], None]:
        if mode == "eval":
            def fwd() -> None:
                with torch.no_grad():
                    layer(x)
            return fwd

        def fwd_bwd() -> None:
            xg.grad = None
            for p in layer.parameters():
                p.grad = None
            layer(xg).backward(grad)
        return fwd_bwd

    out: dict = {"shape": f"{m}x{k}->{n}"}
    for mode in ("eval", "train"):
        a, b = run(mode, plain[mode]), run(mode, ranged[mode])
        a(), b()  # warm-up
        ratios, ta, tb = [], [], []
        for _ in range(reps):
            t_a, t_b = timed(a), timed(b)
            ta.append(t_a), tb.append(t_b)
            ratios.append(t_b / t_a)
        out[mode] = {"plain_ms": 1e3 * statistics.median(ta), "ranged_ms": 1e3 * statistics.median(tb),
                     "ratio": statistics.median(ratios)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--json", default=None)
    ap.add_argument("--shapes", default=None, help="e.g. 2048x384x1536,4096x512x512")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shapes = DEFAULT_SHAPES if not args.shapes else tuple(
        tuple(int(v) for v in s.split("x")) for s in args.shapes.split(","))
    rows = [bench_case(m, k, n, args.reps) for m, k, n in shapes]
    print(f"| shape | eval plain ms | eval ranged ms | eval ratio | train plain ms | train ranged ms | train ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        e, t = r["eval"], r["train"]
        print(f"| {r['shape']} | {e['plain_ms']:.1f} | {e['ranged_ms']:.1f} | {e['ratio']:.3f} | "
              f"{t['plain_ms']:.1f} | {t['ranged_ms']:.1f} | {t['ratio']:.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"host": platform.processor() or platform.machine(), "threads": args.threads,
                       "reps": args.reps, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
