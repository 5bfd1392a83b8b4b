"""GPU microbenchmark of the CUDA kernels (issue #6).

For each shape tokens x in -> out, with CUDA events (median of --reps after warm-up):
  - crossbar_mvm (pcm_paper preset, global and per-row bound management, eval) against
    torch.matmul of the same shape (the floor: cuBLAS) and against the unfused plain-PyTorch
    reference (lorafusion_ext.ops.reference.crossbar_mvm with injected noise), fp32 exact and TF32;
  - crossbar_mvm forward+backward (train) against nn.Linear forward+backward;
  - pool_fusion (sum, lorahub, mixed tasks) against its floor: two rank-K·r GEMMs
    (x @ A_catᵀ then @ B_catᵀ) with torch.matmul.

    python python/bench/cuda_kernels.py [--reps 20] [--json out.json] [--quick]

Exits with a message (status 2) when no CUDA GPU or no CUDA build of the extension is present.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Callable

import torch

DEFAULT_SHAPES = ((2048, 1024, 1024), (4096, 4096, 4096), (8192, 1024, 4096), (512, 4096, 1024))
QUICK_SHAPES = ((2048, 1024, 1024),)


def cuda_time(fn: Callable[[], object], reps: int, warmup: int = 3) -> float:
    """Median milliseconds of fn() measured with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def bench_crossbar(m: int, k: int, n: int, reps: int, tf32: bool) -> dict:
    import lorafusion_ext as lf
    from lorafusion_ext.ops import reference
    from lorafusion_ext.hardware import BoundManagement, Mapping_

    torch.backends.cuda.matmul.allow_tf32 = tf32
    g = torch.Generator(device="cuda").manual_seed(0)
    hw = lf.HardwareConfig.preset("pcm_paper").replace(mapping=Mapping_("row", 1.0))
    hw_row = hw.replace(bound_management=BoundManagement("iterative_per_row"))
    w = torch.randn(n, k, device="cuda", generator=g) * 0.02
    ms = w.abs().amax(1)
    wn = (w / ms[:, None]).contiguous()
    scales = ms[None, None].contiguous()
    x = torch.randn(m, k, device="cuda", generator=g)
    idx = torch.randperm(k, device="cuda", generator=g)[: max(1, k // 128)]
    x[:, idx] *= 30.0  # transformer-like outliers: one bound-management pass
    rng = torch.tensor([1, 0], device="cuda")
    noise = torch.randn(hw.max_passes, 1, m, n, device="cuda", generator=g)
    row = {"shape": f"{m}x{k}->{n}", "tf32": tf32}
    row["matmul_ms"] = cuda_time(lambda: torch.matmul(x, wn.t()), reps)
    row["crossbar_global_ms"] = cuda_time(lambda: lf.ops.crossbar_mvm(x, wn, scales, None, rng, hw), reps)
    row["crossbar_per_row_ms"] = cuda_time(lambda: lf.ops.crossbar_mvm(x, wn, scales, None, rng, hw_row), reps)
    _, aux = lf.ops.crossbar_mvm(x, wn, scales, None, rng, hw, return_aux=True)
    row["passes_global"] = int(aux.passes.max())
    row["reference_ms"] = cuda_time(lambda: reference.crossbar_mvm(x, wn, scales, None, hw, noise_out=noise), max(3, reps // 4))
    xg = x.clone().requires_grad_(True)
    wg = wn.clone().requires_grad_(True)
    lin = torch.nn.Linear(k, n, bias=False).cuda()

    def train_step():
        y = lf.ops.crossbar_mvm(xg, wg, scales, None, rng, hw, training=True)
        torch.autograd.grad(y.sum(), (xg, wg))

    def linear_step():
        y = lin(xg)
        torch.autograd.grad(y.sum(), (xg, lin.weight))

    row["crossbar_train_ms"] = cuda_time(train_step, reps)
    row["linear_train_ms"] = cuda_time(linear_step, reps)
    row["vs_matmul"] = row["crossbar_global_ms"] / row["matmul_ms"]
    row["vs_reference"] = row["reference_ms"] / row["crossbar_global_ms"]
    return row


def bench_pool(m: int, d: int, reps: int, tf32: bool, K: int = 20, r: int = 16, tasks: int = 4) -> dict:
    from lorafusion_ext.ops.pool import pool_fusion

    torch.backends.cuda.matmul.allow_tf32 = tf32
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(m, d, device="cuda", generator=g)
    A = torch.randn(K, r, d, device="cuda", generator=g) * 0.02
    B = torch.randn(K, d, r, device="cuda", generator=g) * 0.02
    c = torch.randn(K, device="cuda", generator=g)
    table = torch.randn(tasks, K, device="cuda", generator=g)
    ids = torch.randint(0, tasks, (m,), device="cuda", generator=g)
    a_cat = A.reshape(K * r, d)
    b_cat = B.permute(1, 0, 2).reshape(d, K * r).contiguous()
    row = {"shape": f"{m}x{d}, K={K}, r={r}", "tf32": tf32}
    row["floor_ms"] = cuda_time(lambda: (x @ a_cat.t()) @ b_cat.t(), reps)
    row["sum_ms"] = cuda_time(lambda: pool_fusion(x, A, B, c, scale=2.0, mode="sum"), reps)
    row["lorahub_ms"] = cuda_time(lambda: pool_fusion(x, A, B, c, scale=2.0, mode="lorahub"), reps)
    row["mixed_tasks_ms"] = cuda_time(lambda: pool_fusion(x, A, B, table, scale=2.0, mode="sum", task_ids=ids), reps)
    xg, cg = x.clone().requires_grad_(True), table.clone().requires_grad_(True)

    def train_step():
        y = pool_fusion(xg, A, B, cg, scale=2.0, mode="sum", task_ids=ids)
        torch.autograd.grad(y.sum(), (xg, cg))

    row["mixed_train_ms"] = cuda_time(train_step, reps)
    row["sum_vs_floor"] = row["sum_ms"] / row["floor_ms"]
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--json", type=str, default=None)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("cuda_kernels.py: no CUDA GPU visible to torch (torch.cuda.is_available() is False); "
              "run this benchmark on a machine with an NVIDIA GPU and a CUDA build of torch.", file=sys.stderr)
        return 2
    import lorafusion_ext as lf

    if not lf.build_info().get("with_cuda", False):
        print("cuda_kernels.py: lorafusion_ext was built without CUDA kernels; rebuild with a CUDA torch and "
              "nvcc on PATH: pip install --no-build-isolation .", file=sys.stderr)
        return 2
    shapes = QUICK_SHAPES if args.quick else DEFAULT_SHAPES
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    rows = {"crossbar": [], "pool": []}
    for tf32 in (False, True):
        for m, k, n in shapes:
            rows["crossbar"].append(bench_crossbar(m, k, n, args.reps, tf32))
        for m, d in ((4096, 1024), (16384, 1024)) if not args.quick else ((4096, 1024),):
            rows["pool"].append(bench_pool(m, d, args.reps, tf32))
    print("\n| shape | tf32 | matmul ms | crossbar (global) ms | per-row ms | passes | ref ms | x matmul | ref / ours | train ms | linear train ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows["crossbar"]:
        print(f"| {r['shape']} | {r['tf32']} | {r['matmul_ms']:.3f} | {r['crossbar_global_ms']:.3f} | "
              f"{r['crossbar_per_row_ms']:.3f} | {r['passes_global']} | {r['reference_ms']:.3f} | {r['vs_matmul']:.2f} | "
              f"{r['vs_reference']:.1f} | {r['crossbar_train_ms']:.3f} | {r['linear_train_ms']:.3f} |")
    print("\n| pool | tf32 | floor ms | sum ms | lorahub ms | mixed tasks ms | mixed train ms | sum / floor |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows["pool"]:
        print(f"| {r['shape']} | {r['tf32']} | {r['floor_ms']:.3f} | {r['sum_ms']:.3f} | {r['lorahub_ms']:.3f} | "
              f"{r['mixed_tasks_ms']:.3f} | {r['mixed_train_ms']:.3f} | {r['sum_vs_floor']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, **rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
