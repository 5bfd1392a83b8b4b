"""Microbenchmark of `lorafusion::pool_fusion` (CPU, fp32) against what a peft user writes and
against the floor.

Rows per shape (K adapters of rank r, d_in = d_out = d, M tokens):
  op/sum, op/lorahub   the op (gradients for x and the coefficients in fwd+bwd)
  loop/sum             Σ_k c_k · s · B_k(A_k(x)) over K LoRA modules (naive, peft-style)
  loop/lorahub         h = Σ_k c_k A_k(x); Δy = s Σ_k c_k B_k(h) (naive)
  floor                one LoRA of rank K·r, pre-stacked (gradient for x only)
Prints a table (best-of-reps ms) with the op/floor and loop/op ratios and writes JSON.

    python python/bench/pool_fusion.py [--quick] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Callable

import torch
from torch import Tensor

from lorafusion_ext.ops.pool import pool_fusion


def _time(fn: Callable[[], object], reps: int) -> float:
    fn()
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    # The minimum: on a shared machine, slower samples measure the neighbours, not the kernel.
    return min(samples) * 1e3


def _cases(M: int, K: int, r: int, d: int) -> dict[str, Callable[[bool], Tensor]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(M, d, generator=g).requires_grad_(True)
    A = torch.randn(K, r, d, generator=g) * 0.05
    B = torch.randn(K, d, r, generator=g) * 0.05
    c = torch.full((K,), 1.0 / K).requires_grad_(True)
    s = 2.0
    mods = [(torch.nn.Linear(d, r, bias=False), torch.nn.Linear(r, d, bias=False)) for _ in range(K)]
    with torch.no_grad():
        for k, (a, b) in enumerate(mods):
            a.weight.copy_(A[k]); b.weight.copy_(B[k])
            a.weight.requires_grad_(False); b.weight.requires_grad_(False)
    a_cat = A.reshape(K * r, d).contiguous()
    b_cat = B.permute(1, 0, 2).reshape(d, K * r).contiguous()

    def loop_sum() -> Tensor:
        y = 0
        for k, (a, b) in enumerate(mods):
            y = y + c[k] * (b(a(x)) * s)
        return y

    def loop_lorahub() -> Tensor:
        h = sum(c[k] * a(x) for k, (a, _) in enumerate(mods))
        return sum(c[k] * b(h) for k, (_, b) in enumerate(mods)) * s

    return {
        "op/sum": lambda: pool_fusion(x, A, B, c, scale=s, mode="sum"),
        "op/lorahub": lambda: pool_fusion(x, A, B, c, scale=s, mode="lorahub"),
        "loop/sum": loop_sum,
        "loop/lorahub": loop_lorahub,
        "floor": lambda: (x @ a_cat.t()) @ b_cat.t() * s,
    }


def run(quick: bool, threads: int, reps: int) -> list[dict]:
    torch.set_num_threads(threads)
    if quick:
        grid, M = list(itertools.product([4, 20], [8], [384])), 512
    else:
        grid, M = list(itertools.product([4, 20, 64], [8, 16], [384, 1024])), 2048
    rows = []
    for K, r, d in grid:
        for name, fn in _cases(M, K, r, d).items():
            with torch.no_grad():
                fwd = _time(fn, reps)
            fb = _time(lambda: fn().sum().backward(), reps)
            rows.append({"K": K, "r": r, "d": d, "tokens": M, "impl": name, "fwd_ms": fwd, "fwd_bwd_ms": fb})
    return rows


def table(rows: list[dict]) -> str:
    by = {(x["K"], x["r"], x["d"], x["impl"]): x for x in rows}
    shapes = sorted({(x["K"], x["r"], x["d"]) for x in rows})
    head = ("| K | r | d | op sum fwd / fwd+bwd | op lorahub | loop sum | loop lorahub | floor (rank K·r) "
            "| sum/floor (fwd, f+b) | loop/op f+b (sum, lorahub) |")
    out = [head, "|" + "---|" * 10]
    for K, r, d in shapes:
        g = lambda i: by[(K, r, d, i)]  # noqa: E731
        cell = lambda i: f"{g(i)['fwd_ms']:.2f} / {g(i)['fwd_bwd_ms']:.2f}"  # noqa: E731
        fl = g("floor")
        out.append(
            f"| {K} | {r} | {d} | {cell('op/sum')} | {cell('op/lorahub')} | {cell('loop/sum')} | {cell('loop/lorahub')} "
            f"| {cell('floor')} | {g('op/sum')['fwd_ms'] / fl['fwd_ms']:.2f}, {g('op/sum')['fwd_bwd_ms'] / fl['fwd_bwd_ms']:.2f} "
            f"| {g('loop/sum')['fwd_bwd_ms'] / g('op/sum')['fwd_bwd_ms']:.1f}, "
            f"{g('loop/lorahub')['fwd_bwd_ms'] / g('op/lorahub')['fwd_bwd_ms']:.1f} |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small grid for smoke use (< 1 min)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions (the minimum is reported); default 7, quick 3")
    ap.add_argument("--json", default="pool_fusion_bench.json", help="output JSON path")
    args = ap.parse_args()
    reps = args.reps or (3 if args.quick else 7)
    rows = run(args.quick, args.threads, reps)
    meta = {"threads": args.threads, "reps": reps, "dtype": "float32", "torch": torch.__version__,
            "unit": "ms (best of reps)", "rows": rows}
    with open(args.json, "w") as f:
        json.dump(meta, f, indent=2)
    print(f"times in ms (best of {reps}), fp32, {args.threads} threads, {rows[0]['tokens']} tokens; "
          "fwd+bwd = grads for x and the coefficients (floor: x)")
    print(table(rows))
    print(f"JSON: {args.json}")


if __name__ == "__main__":
    main()
