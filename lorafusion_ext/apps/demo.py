"""The embedded default job (`lorafusion demo`, `make run`).

On all-MiniLM-L6-v2 with every linear layer analog (pcm_paper): a pool of HWA-LoRAs (by
default the one packaged in `lorafusion_ext/assets/glue_pool`, trained by
`python/experiments/lorafusion_glue.py` on CoLA, MRPC, STS-B and RTE; `pool="train"` trains
one on `pool_tasks` instead), LoRAFusion on a held-out task beside HWA-LoRA on that task with
the same budget, a drift table for both (0 s ... 10 y), one analog model switching between all
tasks, trainable-parameter and crossbar-cost tables and a drift plot, written to
`out/report.md`, `out/results.json` and `out/drift.png`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lorafusion_ext.assets import GLUE_POOL, load_packaged_pool
from lorafusion_ext.evaluation.cost import crossbar_cost_of
from lorafusion_ext.data.glue import task_spec
from lorafusion_ext.models import resolve_model_path
from lorafusion_ext.evaluation.drift_sweep import DEFAULT_TIMES, DriftSweepResult, format_time
from lorafusion_ext.hardware import HardwareConfig
from lorafusion_ext.apps.pipelines import (
    DataConfig,
    RunRecord,
    drift_evaluation,
    head_module,
    load_run,
    multi_task_switching,
    run_fusion,
    run_hwa_lora,
    run_pool,
    task_data,
)
from lorafusion_ext.training.loop import TrainConfig
from lorafusion_ext.training.methods import FusionConfig, HWALoRAConfig, task_state


@dataclass
class DemoConfig:
    """The demo's job. `pool`: "packaged" (the pool shipped in `lorafusion_ext.assets`, trained
    on MiniLM by the GLUE experiment), "train" (train one HWA-LoRA per `pool_tasks` first), or
    a folder written by `python/experiments/lorafusion_glue.py --export-pool`. The default
    budget is the experiment's: both methods get the same steps, examples and head lr."""

    out: str = "results/demo"
    model: str = "sentence-transformers/all-MiniLM-L6-v2"
    glue_dir: str | None = None
    pool: str = "packaged"
    pool_tasks: tuple[str, ...] = ("mrpc", "cola", "stsb")
    task: str = "sst2"
    steps: int = 100
    batch_size: int = 16
    lr: float = 1e-3
    head_lr: float = 1e-2
    train_examples: int | None = 1600
    eval_examples: int | None = 200
    max_length: int = 64
    trials: int = 3
    seed: int = 0
    hardware: str = "pcm_paper"
    quick: bool = False
    progress: bool = True
    log: str | None = None


def _plot(path: Path, sweeps: dict[str, DriftSweepResult], metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, s in sweeps.items():
        t = [max(x, 1.0) for x in s.times]  # 0 s on a log axis is drawn at 1 s
        std = [0.0 if math.isnan(v) else v for v in s.std]
        ax.errorbar(t, s.mean, yerr=std, marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xticks([max(x, 1.0) for x in next(iter(sweeps.values())).times])
    ax.set_xticklabels([format_time(x) for x in next(iter(sweeps.values())).times])
    ax.set_xlabel("time after programming")
    ax.set_ylabel(metric)
    ax.set_title("Drift on the analog crossbar (mean ± std over trials)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def spec_name(task: str) -> str:
    return task_spec(task).name


def _pool_on_crossbar(model: torch.nn.Module) -> bool:
    """Whether the model's LoRAFusion layers hold their pool as analog layers."""
    from lorafusion_ext.nn.analog_linear import AnalogLinear
    from lorafusion_ext.nn.fusion import LoRAFusionLinear

    return any(isinstance(sub, AnalogLinear) for m in model.modules() if isinstance(m, LoRAFusionLinear)
               for name, sub in m.named_modules() if name and not name.startswith("base"))


def run_demo(cfg: DemoConfig, hardware: HardwareConfig) -> str:
    """Run the demo; returns the Markdown report (also written to `cfg.out`/report.md)."""
    t_start = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    steps, train_n, eval_n, trials = cfg.steps, cfg.train_examples, cfg.eval_examples, cfg.trials
    times = DEFAULT_TIMES
    if cfg.quick:
        steps, train_n, eval_n, trials = 2, 32, 16, 1
        times = (0.0, 31536000.0)
    if cfg.pool not in ("packaged", "train") and not Path(cfg.pool).is_dir():
        raise ValueError(f"demo: pool = {cfg.pool!r}; expected 'packaged', 'train' or a pool folder")
    data = DataConfig(cfg.glue_dir, cfg.max_length, train_n, eval_n, cfg.seed)
    # The papers' recipes, but for the LoRA and head learning rates: in 100 steps the paper's
    # 2e-4 (LoRA) and 1e-3 (the freshly initialised head) barely move; both methods get the
    # same head learning rate (the GLUE experiment's short budget, docs/results/lorafusion_short_budget.md).
    lcfg = HWALoRAConfig(lr=cfg.lr, head_lr=cfg.head_lr)
    tcfg = TrainConfig(steps=steps, batch_size=cfg.batch_size, seed=cfg.seed, progress=cfg.progress, log=cfg.log)
    fcfg = FusionConfig(head_lr=cfg.head_lr)

    # 1. The pool: one HWA-LoRA per source task, through the hardware (packaged or trained).
    packaged = None
    if cfg.pool == "train":
        pool, pool_records = run_pool(cfg.pool_tasks, cfg.model, hardware, lcfg, tcfg, data, out / "pool_runs")
        pool_dir = out / "pool_runs" / "pool"
        pool_origin = f"trained here ({steps} steps per task)"
    else:
        packaged = load_packaged_pool() if cfg.pool == "packaged" else load_packaged_pool(cfg.pool)
        if resolve_model_path(packaged.model) != resolve_model_path(cfg.model):
            raise ValueError(f"demo: the pool {cfg.pool!r} was trained on {packaged.model}, not {cfg.model}; "
                             "use pool='train' (--pool train) for another model")
        if spec_name(cfg.task) in packaged.tasks:
            raise ValueError(f"demo: task {cfg.task!r} is a member of the pool {packaged.tasks}; expected a held-out task")
        pool, pool_dir = packaged.pool, GLUE_POOL if cfg.pool == "packaged" else Path(cfg.pool)
        pool_records = [RunRecord("hwa-lora", t, packaged.model, {}, 0, metrics=m["dev"])
                        for t, m in packaged.provenance["members"].items()]
        pool_origin = (f"packaged ({pool_dir.name}: trained by python/experiments/lorafusion_glue.py, "
                       f"{packaged.provenance['budget']['steps']} steps per task, {packaged.provenance['hardware']})")
    # 2. The held-out task: HWA-LoRA and LoRAFusion.
    hwa_record, hwa_model = run_hwa_lora(cfg.task, cfg.model, hardware, lcfg, tcfg, data, out / f"hwa-lora-{cfg.task}")
    fus_record, fus_model = run_fusion(cfg.task, cfg.model, hardware, pool_dir, fcfg, tcfg, data, out / f"lorafusion-{cfg.task}")
    # 3. Drift of both on the held-out task.
    _, tok = load_run(out / f"hwa-lora-{cfg.task}")[1:]
    spec, _, dev = task_data(cfg.task, tok, data)
    sweeps = {
        "HWA-LoRA": drift_evaluation(hwa_model, dev, spec, times, trials, cfg.seed, progress=cfg.progress),
        "LoRAFusion": drift_evaluation(fus_model, dev, spec, times, trials, cfg.seed, progress=cfg.progress),
    }
    _plot(out / "drift.png", sweeps, spec.metrics[0])
    # 4. One analog model serving every HWA-LoRA task: adapters and heads swapped per task.
    switch_tasks = {}
    if packaged is not None:  # each member: its LoRA from the pool, its packaged head
        for k, name in enumerate(pool.adapter_names):
            t_spec, _, t_dev = task_data(name, tok, data)
            state = {}
            for layer in pool.layer_names:
                state[f"{layer}.lora_A"] = pool.layer(layer).A[k]
                state[f"{layer}.lora_B"] = pool.layer(layer).B[k]
            weight, bias = packaged.heads[name]
            head = torch.nn.Linear(weight.shape[1], weight.shape[0])
            with torch.no_grad():
                head.weight.copy_(weight)
                head.bias.copy_(bias)
            switch_tasks[name] = (state, head, t_dev, t_spec)
    run_dirs = [] if packaged is not None else [out / "pool_runs" / r.task for r in pool_records]
    for run_dir in run_dirs + [out / f"hwa-lora-{cfg.task}"]:
        record, model, rtok = load_run(run_dir)
        t_spec, _, t_dev = task_data(record.task, rtok, data)
        head_name, head = head_module(model)
        state = {k: v for k, v in task_state(model).items() if not k.startswith(head_name + ".")}
        switch_tasks[record.task] = (state, head, t_dev, t_spec)
    shared = hwa_model  # its analog base weights are the pretrained ones, as every run's
    switching = multi_task_switching(shared, switch_tasks, times=(0.0, times[-1]), trials=1, seed=cfg.seed,
                                     progress=cfg.progress)
    # 5. Trainable parameters and crossbar cost.
    lora_count = hwa_record.trainable["lora"]
    fus_count = fus_record.trainable["coefficients"] + fus_record.trainable["magnitudes"]
    # Counted from the analog layers the fused model holds: its base and its pool on the crossbar.
    cost = crossbar_cost_of(fus_model, model_name=cfg.model)
    elapsed = time.perf_counter() - t_start

    metric = spec.metrics[0]
    lines = [
        "# lorafusion_ext demo",
        "",
        f"Model {cfg.model}, every linear layer analog ({cfg.hardware}); heads digital. Pool tasks: "
        f"{', '.join(r.task for r in pool_records)}, pool {pool_origin}; held-out task: {spec.name}. "
        f"LoRAFusion's pool {'on the crossbar' if _pool_on_crossbar(fus_model) else 'digital'}. {steps} training steps of "
        f"{cfg.batch_size} per task (LoRA lr {lcfg.lr:g}, head lr {cfg.head_lr:g}) on at most {train_n} training examples; dev metrics on at most {eval_n} "
        f"examples; drift: {trials} trials per time, reprogrammed each trial. Wall time {elapsed:.0f} s.",
        "",
        "## Pool: HWA-LoRA per source task (dev metrics of the analog model before programming"
        + ("; from the pool's provenance, on the experiment's dev subsample)" if packaged is not None else ")"),
        "",
        "| task | " + " | ".join(["metrics"]) + " |",
        "|---|---|",
        *[f"| {r.task} | {', '.join(f'{k} {v:.4f}' for k, v in r.metrics.items())} |" for r in pool_records],
        "",
        f"## Held-out task {spec.name}: {metric} after drift (mean ± std over trials)",
        "",
        "| time | HWA-LoRA | LoRAFusion |",
        "|---|---|---|",
    ]
    h, f = sweeps["HWA-LoRA"], sweeps["LoRAFusion"]

    def pm(mean: float, std: float) -> str:
        return f"{mean:.4f}" + ("" if math.isnan(std) else f" ± {std:.4f}")

    for i, t in enumerate(h.times):
        lines.append(f"| {format_time(t)} | {pm(h.mean[i], h.std[i])} | {pm(f.mean[i], f.std[i])} |")
    lines += [
        "",
        "## One analog model, tasks switched by swapping adapters and heads (HWA-LoRA)",
        "",
        "| task | metric | t = 0 | t = " + format_time(times[-1]) + " |",
        "|---|---|---|---|",
        *[f"| {name} | {s.metric} | {s.mean[0]:.4f} | {s.mean[-1]:.4f} |" for name, s in switching.items() if name != "mean"],
        "",
        "## Trainable parameters (held-out task)",
        "",
        "| method | coefficients | magnitudes | LoRA | head | total |",
        "|---|---|---|---|---|---|",
    ]
    for name, rec in (("HWA-LoRA", hwa_record), ("LoRAFusion", fus_record)):
        tr = rec.trainable
        lines.append(f"| {name} | {tr['coefficients']:,} | {tr['magnitudes']:,} | {tr['lora']:,} | {tr['head']:,} | {tr['total']:,} |")
    lines += [
        "",
        f"LoRAFusion trains {fus_count:,} adapter parameters, {100 * fus_count / lora_count:.2f} % of the "
        f"{lora_count:,} of a LoRA (heads excluded).",
        "",
        "## Crossbar cost",
        "",
        cost.to_markdown(),
        "",
        "![drift](drift.png)",
    ]
    report = "\n".join(lines)
    (out / "report.md").write_text(report + "\n")
    results = {
        "config": {**asdict(cfg), "hardware": hardware.to_dict(), "steps": steps, "trials": trials},
        "pool": [asdict(r) for r in pool_records],
        "hwa_lora": asdict(hwa_record),
        "lorafusion": asdict(fus_record),
        "drift": {k: {"times": s.times, "values": s.values, "mean": s.mean, "std": [None if math.isnan(x) else x for x in s.std]}
                  for k, s in sweeps.items()},
        "switching": {k: {"times": s.times, "values": s.values} for k, s in switching.items()},
        "trainable_ratio": fus_count / lora_count,
        "pool_on_crossbar": _pool_on_crossbar(fus_model),
        "pool_origin": pool_origin,
        "cost": json.loads(cost.to_json()),
        "wall_time_s": elapsed,
        "torch_threads": torch.get_num_threads(),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return report
