"""A compact kernel benchmark for `lorafusion bench`: the crossbar MVM against F.linear and
pool_fusion against one LoRA of rank K·r, measured side by side (interleaved rounds, median).
The full benchmarks, with AIHWKIT and the naive loops, are python/bench/*.py in the source tree."""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch import nn

from lorafusion_ext.hardware import HardwareConfig, Mapping_
from lorafusion_ext.nn.analog_linear import AnalogLinear
from lorafusion_ext.ops.pool import pool_fusion


def _median_ms(fns: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for rnd in range(reps + 1):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if rnd:
                samples[name].append(time.perf_counter() - t0)
    return {k: sorted(v)[len(v) // 2] * 1e3 for k, v in samples.items()}


def kernel_benchmark(threads: int = 2, quick: bool = False, reps: int = 5) -> dict:
    """Times (ms) and ratios of the crossbar MVM (eval forward; train forward+backward) and of
    pool_fusion (forward+backward), fp32, at `threads` CPU threads."""
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    hw = HardwareConfig.preset("pcm_paper").replace(mapping=Mapping_("row", 1.0))
    shapes = [(256, 128, 256)] if quick else [(2048, 384, 1536), (2048, 1536, 384)]
    reps = 2 if quick else reps
    rows = []
    for m, k, n in shapes:
        lin = nn.Linear(k, n)
        layer = AnalogLinear.from_linear(lin, hw, seed=0)
        x = torch.randn(m, k, generator=g)
        x[:, : max(1, k // 128)] *= 30.0
        xg = x.clone().requires_grad_(True)

        def fb(mod: nn.Module) -> Callable[[], None]:
            return lambda: mod(xg).sum().backward()

        def no_grad(fn: Callable[[], object]) -> Callable[[], object]:
            def run() -> object:
                with torch.no_grad():
                    return fn()
            return run

        layer.eval()
        t = _median_ms({"linear": no_grad(lambda: lin(x)), "crossbar": no_grad(lambda: layer(x))}, reps)
        layer.train()
        tt = _median_ms({"linear": fb(lin), "crossbar": fb(layer)}, reps)
        rows.append({"kernel": "crossbar_mvm", "shape": f"{m}x{k}->{n}", "eval_ms": t["crossbar"],
                     "linear_ms": t["linear"], "eval_ratio": t["crossbar"] / t["linear"],
                     "train_ms": tt["crossbar"], "linear_train_ms": tt["linear"],
                     "train_ratio": tt["crossbar"] / tt["linear"]})
    pools = [(256, 4, 8, 128)] if quick else [(2048, 20, 8, 384), (2048, 20, 16, 1024)]
    for m, K, r, d in pools:
        x = torch.randn(m, d, generator=g, requires_grad=True)
        A = torch.randn(K, r, d, generator=g) * 0.05
        B = torch.randn(K, d, r, generator=g) * 0.05
        c = torch.full((K,), 1.0 / K, requires_grad=True)
        a_cat = A.reshape(K * r, d)
        b_cat = B.permute(1, 0, 2).reshape(d, K * r).contiguous()
        t = _median_ms({
            "op": lambda: pool_fusion(x, A, B, c, scale=2.0, mode="sum").sum().backward(),
            "floor": lambda: ((x @ a_cat.T) @ b_cat.T * 2.0).sum().backward(),
        }, reps)
        rows.append({"kernel": "pool_fusion", "shape": f"{m} tokens, K={K}, r={r}, d={d}", "fwd_bwd_ms": t["op"],
                     "floor_ms": t["floor"], "ratio_to_floor": t["op"] / t["floor"]})
    md = [f"fp32, {threads} threads, median of {reps} interleaved rounds", "",
          "| kernel | shape | ours ms | reference ms | ratio |", "|---|---|---|---|---|"]
    for r_ in rows:
        if r_["kernel"] == "crossbar_mvm":
            md.append(f"| crossbar eval fwd | {r_['shape']} | {r_['eval_ms']:.2f} | F.linear {r_['linear_ms']:.2f} | {r_['eval_ratio']:.2f} |")
            md.append(f"| crossbar train fwd+bwd | {r_['shape']} | {r_['train_ms']:.2f} | nn.Linear {r_['linear_train_ms']:.2f} | {r_['train_ratio']:.2f} |")
        else:
            md.append(f"| pool_fusion fwd+bwd | {r_['shape']} | {r_['fwd_bwd_ms']:.2f} | rank-K·r LoRA {r_['floor_ms']:.2f} | {r_['ratio_to_floor']:.2f} |")
    return {"threads": threads, "rows": rows, "markdown": "\n".join(md)}
