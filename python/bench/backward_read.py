"""Cost of the backward read (HardwareConfig.backward, issue 27) against the ideal backward of the
same layer: the input gradient of `crossbar_mvm_backward` (frozen weights, as in HWA-LoRA and
LoRAFusion), paired rounds (each round times the three, rotating which goes first). Two reads:
`same` (the forward's periphery, pcm_paper: 8-bit converters, output noise 0.04, abs-max noise
management, iterative-global bound management, where one saturating token re-runs the whole
read) and `per_row` (the same with iterative-per-row bound management: AIHWKIT's C++ tiles).

    python python/bench/backward_read.py [--threads 1 2] [--rounds 9]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

import lorafusion_ext as lf
from lorafusion_ext.ops.kwargs import op_kwargs

SHAPES = ((2048, 384, 1536), (2048, 1536, 384), (4096, 512, 512))


def _backward_call(hw: lf.HardwareConfig, m: int, k: int, n: int):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(m, k, generator=g)
    x[:, :4] *= 20.0  # outlier features, as transformer activations have
    w = torch.randn(n, k, generator=g)
    wn = w / w.abs().amax(1, keepdim=True)
    scales = w.abs().amax(1)[None, None].contiguous()
    gy = torch.randn(m, n, generator=g) * 1e-3
    kw = op_kwargs(hw)
    _, s, mask, _, rng = torch.ops.lorafusion.crossbar_mvm(x, wn, scales, None, torch.tensor([1, 0]), None, None,
                                                           **kw, training=True, need_aux=True)

    def call() -> None:
        torch.ops.lorafusion.crossbar_mvm_backward(gy, x, wn, scales, rng, s, mask, None, **kw, training=True,
                                                   need_grad_x=True, need_grad_weight=False)
    return call


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    base = lf.HardwareConfig.preset("pcm_paper")
    same = base.forward_periphery
    per_row = dataclasses.replace(same, bound_management=lf.hardware.BoundManagement("iterative_per_row"))
    configs = {"ideal": base, "same": base.replace(backward=same), "per_row": base.replace(backward=per_row)}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for m, k, n in SHAPES:
            calls = {name: _backward_call(hw, m, k, n) for name, hw in configs.items()}
            for fn in calls.values():
                fn()  # warm up
            names = list(calls)
            ratios: dict[str, list[float]] = {name: [] for name in names[1:]}
            t_ideal = []
            for r in range(args.rounds):
                times = {}
                order = names[r % 3:] + names[:r % 3]
                for name in order:
                    t0 = time.perf_counter()
                    calls[name]()
                    times[name] = time.perf_counter() - t0
                for name in ratios:
                    ratios[name].append(times[name] / times["ideal"])
                t_ideal.append(times["ideal"])
            text = ", ".join(f"{name}/ideal {statistics.median(v):.3f} ({min(v):.3f}-{max(v):.3f})"
                             for name, v in ratios.items())
            print(f"threads {threads}  {m}x{k}->{n}: ideal {statistics.median(t_ideal) * 1e3:.1f} ms, {text}",
                  flush=True)


if __name__ == "__main__":
    main()
