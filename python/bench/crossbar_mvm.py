"""Microbenchmark of the crossbar MVM against F.linear and AIHWKIT's torch tile.

For each shape tokens x in -> out and input kind, measures side by side: F.linear and our
AnalogLinear forward in eval (paper preset, global and per-row bound management), nn.Linear
and AnalogLinear forward+backward in train (the paper's ADD_NORMAL modifier on), and AIHWKIT
1.1's AnalogLinear (TorchInferenceRPUConfig, the same configuration) in both modes.

Paired rounds: in every round each reference runs right before the op it is compared with,
and a ratio is the median over rounds of that round's op / reference time, so a slow spell of
the machine hits both sides of a ratio alike. Times in the table are per-case medians.
Reports the bound-management passes taken, the ratios, a Markdown table and JSON.

    python python/bench/crossbar_mvm.py [--threads 2] [--reps 7] [--json out.json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Callable

import torch
from torch import nn

import lorafusion_ext as lf
from lorafusion_ext.hardware import BoundManagement, Mapping_

DEFAULT_SHAPES = ((2048, 384, 1536), (2048, 1536, 384), (4096, 512, 512))


def make_input(kind: str, m: int, k: int, g: torch.Generator) -> torch.Tensor:
    """`outliers`: N(0, 1) with a few channels 30x larger, as transformer activations have (one
    pass); `normal`: plain N(0, 1), which saturates the ADC and takes several passes."""
    x = torch.randn(m, k, generator=g)
    if kind == "outliers":
        idx = torch.randperm(k, generator=g)[: max(1, k // 128)]
        x[:, idx] *= 30.0
    return x


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_case(m: int, k: int, n: int, kind: str, reps: int, with_aihwkit: bool) -> dict:
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(k, n)
    with torch.no_grad():
        lin.weight.normal_(0.0, 0.02, generator=g)
    x = make_input(kind, m, k, g)
    # The paper preset without its one-off conversion clip, so AIHWKIT sees identical weights.
    hw = lf.HardwareConfig.preset("pcm_paper").replace(mapping=Mapping_("row", 1.0))
    ours = lf.nn.AnalogLinear.from_linear(lin, hw, seed=1).eval()
    ours_row = lf.nn.AnalogLinear.from_linear(
        lin, hw.replace(bound_management=BoundManagement("iterative_per_row")), seed=1
    ).eval()
    ours_train = lf.nn.AnalogLinear.from_linear(lin, hw, seed=1).train()
    ref = ref_train = None
    if with_aihwkit:
        from aihwkit.nn import AnalogLinear as AihwkitLinear

        ref = AihwkitLinear.from_digital(lin, hw.to_aihwkit()).eval()
        ref_train = AihwkitLinear.from_digital(lin, hw.to_aihwkit()).train()
    xg = x.clone().requires_grad_(True)
    grad = torch.randn(m, n, generator=g)

    def fwd_bwd(mod: nn.Module) -> Callable[[], None]:
        def run() -> None:
            xg.grad = None
            for p in mod.parameters():
                p.grad = None
            mod(xg).backward(grad)

        return run

    # Run order within a round: each reference right before the op compared with it.
    cases: dict[str, Callable[[], object]] = {}
    with torch.no_grad():
        cases["linear_eval"] = lambda: nn.functional.linear(x, lin.weight, lin.bias)
        cases["ours_eval"] = lambda: ours(x)
        cases["ours_eval_per_row"] = lambda: ours_row(x)
        if ref is not None:
            cases["aihwkit_eval"] = lambda: ref(x)
    train_cases: dict[str, Callable[[], object]] = {
        "linear_train": fwd_bwd(lin),
        "ours_train": fwd_bwd(ours_train),
    }
    if ref_train is not None:
        train_cases["aihwkit_train"] = fwd_bwd(ref_train)

    samples: dict[str, list[float]] = {name: [] for name in [*cases, *train_cases]}
    for rnd in range(reps + 1):  # round 0 warms up
        for name, fn in cases.items():
            with torch.no_grad():
                t = timed(fn)
            if rnd:
                samples[name].append(t)
        for name, fn in train_cases.items():
            t = timed(fn)
            if rnd:
                samples[name].append(t)
    med = {name: _median(v) * 1e3 for name, v in samples.items()}

    def paired(op: str, reference: str) -> float:
        return _median([a / b for a, b in zip(samples[op], samples[reference])])

    with torch.no_grad():
        w, scales = ours.tile_weights()
        _, aux = lf.ops.crossbar_mvm(x, w.contiguous(), scales[None].contiguous(), lin.bias,
                                     torch.tensor([1, 0]), hw, return_aux=True)
        wr, sr = ours_row.tile_weights()
        _, aux_row = lf.ops.crossbar_mvm(x, wr.contiguous(), sr[None].contiguous(), lin.bias,
                                         torch.tensor([1, 0]), ours_row.hardware, return_aux=True)
    passes = int(aux.passes.max())
    row_passes = aux_row.passes.float()
    result = {
        "shape": f"{m}x{k}->{n}",
        "input": kind,
        "ms": med,
        "passes_global": passes,
        "passes_per_row_mean": float(row_passes.mean()),
        "rows_recomputed_per_row": float((row_passes > 1).float().mean()),
        "ratio_eval_vs_linear": paired("ours_eval", "linear_eval"),
        "ratio_eval_vs_linear_per_pass": paired("ours_eval", "linear_eval") / passes,
        "ratio_train_vs_linear": paired("ours_train", "linear_train"),
    }
    if ref is not None:
        result["speedup_vs_aihwkit_eval"] = 1.0 / paired("ours_eval", "aihwkit_eval")
        result["speedup_vs_aihwkit_train"] = 1.0 / paired("ours_train", "aihwkit_train")
    return result


def _median(values: list[float]) -> float:
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


def to_markdown(results: list[dict]) -> str:
    head = (
        "| shape | input | passes (global / per-row mean) | F.linear ms | ours eval ms | ours eval per-row ms "
        "| AIHWKIT eval ms | eval/linear (per pass) | speed-up vs AIHWKIT eval | Linear f+b ms | ours f+b ms "
        "| AIHWKIT f+b ms | f+b/Linear | speed-up vs AIHWKIT f+b |\n" + "|" + "---|" * 14
    )
    rows = [head]
    for r in results:
        ms = r["ms"]
        rows.append(
            f"| {r['shape']} | {r['input']} | {r['passes_global']} / {r['passes_per_row_mean']:.2f} "
            f"| {ms['linear_eval']:.2f} | {ms['ours_eval']:.2f} | {ms['ours_eval_per_row']:.2f} "
            f"| {ms.get('aihwkit_eval', float('nan')):.2f} "
            f"| {r['ratio_eval_vs_linear']:.2f} ({r['ratio_eval_vs_linear_per_pass']:.2f}) "
            f"| {r.get('speedup_vs_aihwkit_eval', float('nan')):.1f}x "
            f"| {ms['linear_train']:.2f} | {ms['ours_train']:.2f} | {ms.get('aihwkit_train', float('nan')):.2f} "
            f"| {r['ratio_train_vs_linear']:.2f} | {r.get('speedup_vs_aihwkit_train', float('nan')):.1f}x |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--quick", action="store_true", help="small shapes, 2 reps (a smoke run)")
    parser.add_argument("--no-aihwkit", action="store_true", help="skip the AIHWKIT rows")
    parser.add_argument("--inputs", default="outliers,normal", help="input kinds, comma-separated (outliers, normal)")
    args = parser.parse_args()
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    shapes = ((256, 128, 256),) if args.quick else DEFAULT_SHAPES
    reps = 2 if args.quick else args.reps
    with_aihwkit = not args.no_aihwkit
    if with_aihwkit:
        try:
            import aihwkit  # noqa: F401
        except ImportError:
            print("aihwkit is not installed: skipping its rows (pip install --no-deps aihwkit==1.1.0)")
            with_aihwkit = False
    results = [bench_case(m, k, n, kind, reps, with_aihwkit) for m, k, n in shapes for kind in args.inputs.split(",")]
    meta = {
        "dtype": "float32",
        "threads": args.threads,
        "reps": reps,
        "rounds": "paired: ratio = median over rounds of (op time / reference time in the same round)",
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "build": lf.build_info(),
    }
    print(f"crossbar_mvm benchmark: fp32, {args.threads} threads, {reps} paired rounds (ratios: median of per-round ratios)")
    print(to_markdown(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
