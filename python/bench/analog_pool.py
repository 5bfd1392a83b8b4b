"""The LoRA pool on the crossbar (`AnalogPoolLayer`): what the digital mixing between its two
MVMs costs, and what a LoRAFusion training step costs against an HWA-LoRA step.

1. Pool stage, forward + backward (gradients for x and the coefficients), training mode
   (`pcm_paper`: weight modifier on), against the two crossbar MVMs it needs on their own
   (shrink to K·r, expand from K·r; gradient for x), at K = 20, r = 8 on the MiniLM shapes
   (d_in, d_out) in {(384, 384), (384, 1536), (1536, 384)} with M = 2048 tokens, fp32.
2. One training step of all-MiniLM-L6-v2, every linear layer analog (`pcm_paper`), batch 32 x
   seq 64: LoRAFusion (analog pool of K = 6, r = 8, lorahub, block coefficients, magnitudes)
   against HWA-LoRA (r = 8 on every linear layer, dropout 0.1).

Both are measured in paired rounds: in each round the reference and the candidate run back to
back, and the reported ratio is the median of the per-round ratios, so that a slow spell of the
machine hits both alike.

    python python/bench/analog_pool.py [--threads 2] [--rounds 15] [--skip-model] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable

import torch
from paired_timing import paired

from lorafusion_ext.hardware import HardwareConfig
from lorafusion_ext.nn import AnalogPoolLayer
from lorafusion_ext.nn.analog_pool import pool_seeds

SHAPES = ((384, 384), (384, 1536), (1536, 384))


def pool_stage(M: int, K: int, r: int, d_in: int, d_out: int, rounds: int, mode: str) -> dict[str, float]:
    hw = HardwareConfig.preset("pcm_paper")
    g = torch.Generator().manual_seed(0)
    A = torch.randn(K, r, d_in, generator=g) * 0.05
    B = torch.randn(K, d_out, r, generator=g) * 0.05
    pool = AnalogPoolLayer(A, B, hw, pool_seeds(0)).train()
    shrink, expand = pool.shrink, pool.expand
    x = torch.randn(M, d_in, generator=g).requires_grad_(True)
    c = torch.full((K,), 1.0 / K).requires_grad_(True)
    v = torch.randn(M, K * r, generator=g).requires_grad_(True)
    gu = torch.randn(M, K * r, generator=g)
    gy = torch.randn(M, d_out, generator=g)

    def two_mvms() -> None:
        shrink(x).backward(gu)
        expand(v).backward(gy)

    def stage() -> None:
        pool(x, c, 2.0, mode).backward(gy)

    return paired(two_mvms, stage, rounds)


def training_step(rounds: int, threads: int) -> dict[str, float]:
    from lorafusion_ext.nn.convert import attach_lora, attach_pool, convert_to_analog
    from lorafusion_ext.models import DEFAULT_MODEL, load_classifier
    from lorafusion_ext.nn.pool import LoRAPool

    hw = HardwareConfig.preset("pcm_paper")

    def analog_model():
        model, _ = load_classifier(DEFAULT_MODEL, 2, seed=0)
        return convert_to_analog(model, hw, seed=0)

    hwa = attach_lora(analog_model(), 8, 32.0, 0.1, targets=(r".*",))
    fus = analog_model()
    g = torch.Generator().manual_seed(1)
    layers = {}
    for name, mod in fus.named_modules():
        if type(mod).__name__ == "AnalogLinear":
            layers[name] = (torch.randn(6, 8, mod.in_features, generator=g) * 0.05,
                            torch.randn(6, mod.out_features, 8, generator=g) * 0.05)
    attach_pool(fus, LoRAPool(layers, alpha=32.0), mode="lorahub", magnitude=True, granularity="block")
    gen = torch.Generator().manual_seed(2)
    batch = {"input_ids": torch.randint(1000, 20000, (32, 64), generator=gen),
             "attention_mask": torch.ones(32, 64, dtype=torch.int64),
             "labels": torch.randint(0, 2, (32,), generator=gen)}
    opts = {}
    for name, model in (("hwa", hwa), ("fus", fus)):
        model.train()
        opts[name] = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step(name: str, model: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            loss = model(**batch).loss
            opts[name].zero_grad()
            loss.backward()
            opts[name].step()
        return run

    out = paired(step("hwa", hwa), step("fus", fus), rounds)
    out["pool_tiles"] = sum(1 for m in fus.modules() if isinstance(m, AnalogPoolLayer)) * 2
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--skip-model", action="store_true", help="only the pool-stage microbenchmark")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result: dict = {"threads": args.threads, "dtype": "float32", "tokens": args.tokens, "K": 20, "r": 8,
                    "hardware": "pcm_paper (training mode)", "pool_stage": {}}
    print(f"pool stage vs its two crossbar MVMs, fwd+bwd, M={args.tokens}, K=20, r=8, {args.threads} threads, "
          f"median of {args.rounds} paired rounds\n")
    print("| d_in -> d_out | mode | two MVMs (ms) | pool stage (ms) | ratio (min-max) |")
    print("|---|---|---|---|---|")
    for d_in, d_out in SHAPES:
        for mode in ("lorahub", "sum"):
            row = pool_stage(args.tokens, 20, 8, d_in, d_out, args.rounds, mode)
            result["pool_stage"][f"{d_in}->{d_out}/{mode}"] = row
            print(f"| {d_in} -> {d_out} | {mode} | {row['ref_ms']:.2f} | {row['cand_ms']:.2f} | "
                  f"{row['ratio']:.3f} ({row['ratio_min']:.2f}-{row['ratio_max']:.2f}) |")
    if not args.skip_model:
        rounds = max(5, args.rounds // 2)
        row = training_step(rounds, args.threads)
        result["training_step"] = row
        print(f"\nMiniLM training step, batch 32 x seq 64, median of {rounds} paired rounds: HWA-LoRA "
              f"{row['ref_ms']:.0f} ms, LoRAFusion (analog pool K=6) {row['cand_ms']:.0f} ms, ratio "
              f"{row['ratio']:.3f} ({row['ratio_min']:.2f}-{row['ratio_max']:.2f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
