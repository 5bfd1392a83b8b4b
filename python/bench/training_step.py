"""What a training step of the real-budget recipe costs, and what would make it cheaper.

Issue 25 asks, before the CPU-days of runs: where does a training step of HWA-LoRA go, and would
an equal-statistics dropout or a larger batch (the same examples in fewer steps) be cheaper?
This script trains the budget sweep's HWA-LoRA cell (all-MiniLM-L6-v2, every linear layer analog
with `pcm_paper`, LoRA r 8 / alpha 32 / dropout 0.1 on every linear layer, batch 32, sequence
length 64, batches grouped by length) for a few steps in four variants, each on a fresh copy of
the same analog model, in paired rounds (every round runs every variant once, in turn):

- `recipe`: the recipe as the sweep runs it;
- `rand_dropout`: every dropout (the model's and the LoRA's) keeps an element when a
  `torch.rand` draw is >= p and scales it by 1 / (1 - p): the same Bernoulli(1 - p) statistics
  as `torch.nn.functional.dropout`, from torch's uniform generator instead of `bernoulli_`;
- `no_dropout`: every dropout off: the floor that any cheaper dropout could reach;
- `batch64`: batch 64 for half the steps: the same examples in half the optimizer steps.

It reports the time per 1,000 tokens (batch x padded length) of each variant and its ratio to `recipe` (the median
of the per-round ratios), and from one profiled `recipe` run the share of the step's CPU time in
the dropout masks (`aten::bernoulli_`) and in the GEMMs (`aten::mm`, `aten::bmm`).

    python python/bench/training_step.py --glue-dir ../shared/data/glue [--tasks sst2,stsb]
        [--steps 8] [--rounds 3] [--threads 1] [--md out.md] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.profiler import profile

import lorafusion_ext as lf
from lorafusion_ext.apps.pipelines import DataConfig, task_data
from lorafusion_ext.data.glue import task_spec
from lorafusion_ext.models import DEFAULT_MODEL
from lorafusion_ext.training.loop import TrainConfig
from lorafusion_ext.training.methods import HWALoRAConfig, analog_classifier, train_hwa_lora

sys.path.insert(0, str(Path(__file__).resolve().parent))
from host_info import host  # noqa: E402

VARIANTS = ("recipe", "rand_dropout", "no_dropout", "batch64")
#: The budget sweep's recipe (python/experiments/sweep/protocol.py).
BATCH, MAX_LENGTH, GROUP_BY_LENGTH, LR = 32, 64, 50, 1e-3


def rand_dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """`F.dropout` with its mask from `torch.rand`: keep where u >= p (probability 1 - p), scaled
    by 1 / (1 - p). Same statistics, another generator call."""
    if not training or p == 0.0:
        return input
    keep = torch.rand_like(input) >= p
    out = input * keep * (1.0 / (1.0 - p))
    return input.copy_(out) if inplace else out


def no_dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    return input


@contextlib.contextmanager
def dropout_as(fn: Callable[..., Tensor] | None) -> Iterator[None]:
    """Every `nn.Dropout` (it calls `torch.nn.functional.dropout` at call time) runs `fn`."""
    if fn is None:
        yield
        return
    original = F.dropout
    F.dropout = fn  # type: ignore[assignment]
    try:
        yield
    finally:
        F.dropout = original  # type: ignore[assignment]


def run_variant(prototype: nn.Module, train_set: Any, variant: str, steps: int, seed: int) -> float:
    """Seconds per 1,000 tokens (padded batch x length, what a step computes) of `variant` on a
    copy of `prototype`: `steps` recipe steps (batch64: half as many), timed from the end of the
    first optimizer step to the end of the last, so the set-up (LoRA, optimizer, batching) and the
    first step's warm-up are left out. Per token, because batches grouped by length differ in
    length, and batch64's batches are not the recipe's."""
    model = copy.deepcopy(prototype)
    batch = 2 * BATCH if variant == "batch64" else BATCH
    n_steps = max(2, steps // 2) if variant == "batch64" else steps
    cfg = TrainConfig(steps=n_steps, batch_size=batch, seed=seed, progress=False, group_by_length=GROUP_BY_LENGTH)
    fn = {"rand_dropout": rand_dropout, "no_dropout": no_dropout}.get(variant)
    ends: list[float] = []
    tokens: list[int] = []

    def count(module: nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        tokens.append(int(ids.numel()))

    hooks = [register_optimizer_step_post_hook(lambda *_: ends.append(time.perf_counter())),
             model.register_forward_pre_hook(count, with_kwargs=True)]
    try:
        with dropout_as(fn):
            train_hwa_lora(model, train_set, HWALoRAConfig(lr=LR, head_lr=LR), cfg, description=variant)
    finally:
        for h in hooks:
            h.remove()
    if len(ends) != n_steps or len(tokens) != n_steps:
        raise RuntimeError(f"training_step: {len(ends)} optimizer steps and {len(tokens)} forwards seen, "
                           f"expected {n_steps} of each")
    return (ends[-1] - ends[0]) / (sum(tokens[1:]) / 1000)


def profile_shares(prototype: nn.Module, train_set: Any, steps: int, seed: int) -> dict[str, float]:
    """Shares of the recipe step's self CPU time: the dropout masks and the GEMMs."""
    model = copy.deepcopy(prototype)
    cfg = TrainConfig(steps=steps, batch_size=BATCH, seed=seed, progress=False, group_by_length=GROUP_BY_LENGTH)
    with profile() as prof:
        train_hwa_lora(model, train_set, HWALoRAConfig(lr=LR, head_lr=LR), cfg, description="profile")
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    by = {e.key: e.self_cpu_time_total for e in events}
    return {"bernoulli_": by.get("aten::bernoulli_", 0.0) / total,
            "gemm": (by.get("aten::mm", 0.0) + by.get("aten::bmm", 0.0)) / total}


def bench_task(task: str, glue_dir: str, model_id: str, steps: int, rounds: int) -> dict[str, Any]:
    prototype, tok = analog_classifier(model_id, task_spec(task), lf.HardwareConfig.preset("pcm_paper"), seed=0)
    _, train_set, _ = task_data(task, tok, DataConfig(glue_dir, MAX_LENGTH, None, 16, 0))
    for v in VARIANTS:  # warm-up: allocator, thread pools, first-call costs
        run_variant(prototype, train_set, v, 4, seed=0)
    per_token: dict[str, list[float]] = {v: [] for v in VARIANTS}
    ratios: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(rounds):
        times = {v: run_variant(prototype, train_set, v, steps, seed=r) for v in VARIANTS}
        for v in VARIANTS:
            per_token[v].append(times[v])
            ratios[v].append(times[v] / times["recipe"])
    return {
        "task": task,
        "variants": {v: {"ms_per_1k_tokens": 1e3 * statistics.median(per_token[v]),
                         "ratio": statistics.median(ratios[v]),
                         "ratio_min": min(ratios[v]), "ratio_max": max(ratios[v])} for v in VARIANTS},
        "profile": profile_shares(prototype, train_set, steps, seed=0),
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# What a training step of the real-budget recipe costs",
        "",
        f"Command: `{result['command']}`. Host: {result['machine']}, {result['threads']} thread(s), "
        f"torch {result['torch']}, fp32; {result['steps']} steps per variant (batch 64: half as many; "
        "timed from the end of the first step to the end of the last), "
        f"{result['rounds']} paired rounds; wall {result['wall_s']:.0f} s.",
        "",
        "| task | variant | ms per 1,000 tokens | / recipe (median, min-max over rounds) |",
        "|---|---|---:|---|",
    ]
    for t in result["tasks"]:
        for v, d in t["variants"].items():
            lines.append(f"| {t['task']} | {v} | {d['ms_per_1k_tokens']:.0f} | "
                         f"{d['ratio']:.3f} ({d['ratio_min']:.3f}-{d['ratio_max']:.3f}) |")
    lines += ["", "Share of the recipe step's self CPU time (torch profiler, one run):", "",
              "| task | dropout masks (`bernoulli_`) | GEMMs (`mm`, `bmm`) |", "|---|---:|---:|"]
    for t in result["tasks"]:
        p = t["profile"]
        lines.append(f"| {t['task']} | {100 * p['bernoulli_']:.1f} % | {100 * p['gemm']:.1f} % |")
    def spread(v: str) -> str:
        vals = [t["variants"][v]["ratio"] for t in result["tasks"]]
        return f"{100 * (1 - max(vals)):.0f}-{100 * (1 - min(vals)):.0f} %"

    lines += [
        "",
        "Variants: `recipe` is the budget sweep's HWA-LoRA cell (batch 32, LoRA dropout 0.1 and the "
        "model's own dropout 0.1); `rand_dropout` draws every dropout mask with `torch.rand` (keep where "
        "u >= p, scale 1 / (1 - p): the same statistics); `no_dropout` turns every dropout off, the floor "
        "for any cheaper dropout; `batch64` trains batch 64 for half the steps.",
        "",
        f"Per 1,000 tokens: an equal-statistics dropout from torch's own generator saves {spread('rand_dropout')}; "
        f"no dropout at all saves {spread('no_dropout')}, so that is the most a faster mask generator could "
        f"give; batch 64 saves {spread('batch64')} (its batches are not the recipe's, so its rounds vary more).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--glue-dir", required=True, help="a local GLUE folder (the layout lorafusion_ext.data.glue reads)")
    ap.add_argument("--tasks", default="sst2,stsb")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--steps", type=int, default=8, help="recipe steps per variant and round (>= 4)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--md", default=None)
    ap.add_argument("--json", default=None)
    argv = sys.argv[1:] if argv is None else argv
    a = ap.parse_args(argv)
    if a.steps < 4 or a.rounds < 1 or a.threads < 1:
        ap.error(f"--steps {a.steps}, --rounds {a.rounds}, --threads {a.threads}: expected steps >= 4, "
                 "rounds >= 1, threads >= 1")
    torch.set_num_threads(a.threads)
    h = host()
    t0 = time.perf_counter()
    tasks = [bench_task(t, a.glue_dir, a.model, a.steps, a.rounds) for t in a.tasks.split(",") if t]
    result = {"tasks": tasks, "steps": a.steps, "rounds": a.rounds, "threads": a.threads, "torch": torch.__version__,
              "machine": f"{h['model_name']} ({h['family_model']}), {h['cpus']} CPUs, torch's CPU kernels "
                         f"{torch.backends.cpu.get_cpu_capability()}",
              "command": "python python/bench/training_step.py " + " ".join(argv),
              "wall_s": time.perf_counter() - t0}
    text = markdown(result)
    print(text)
    if a.md:
        with open(a.md, "w") as f:
            f.write(text)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
