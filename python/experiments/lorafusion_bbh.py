"""LoRAFusion on BIG-Bench Hard with a decoder-only LLM (issue 13, item 5): a pool of HWA-LoRAs
on BBH tasks, then few-shot fusion on held-out tasks, on the analog model.

Protocol (every linear layer but `lm_head` an `AnalogLinear` with `--hardware`):

1. **Pool.** One HWA-LoRA (rank 8, alpha 32, every linear layer but `lm_head`) per pool task,
   trained through the hardware on `--pool-train-examples` examples of its training split
   (`lorafusion_ext.data.bbh`: a fixed split, 100 evaluation examples per task) for
   `--pool-steps` steps, seed 0. Its own exact match (t = 0) is reported.
2. **Held-out task T** (not in the pool), few-shot: the first `--shots` examples of T's training
   split; every trained method gets the same examples, steps and batch size:
   - `lorafusion`: the pool on the crossbar, fused by coefficients and DoRA magnitudes
     (`train_fusion`; coefficient lr `--coeff-lr`, the published `train.py` default 0.02);
   - `hwa_lora`: a LoRA trained through the hardware on the same examples;
   - `zero_shot_analog`: the analog base, no adaptation;
   - `digital_base`: the digital base, no adaptation (no hardware, so no drift: its 10 y value
     is its t = 0 value).
3. **Evaluation.** Exact match (BBH's) of greedy answers on the first `--eval-examples` of T's
   evaluation split, at t = 0 and t = 10 years, `--trials` programming draws each (`drift_sweep`,
   reprogrammed per trial); a seed's value is the mean over trials. Seeds change the LoRA and
   coefficient initialisation, the data order, dropout and the hardware noise.

Cells (one training run and its evaluation) are stored as they finish, one JSON file each under
`<out>/cells/` (`harness.RunFolder`; runs made before kept them in `<out>/cells.jsonl`, still
read), and skipped on a rerun (resumable at cell granularity); several processes may share one
`--out` (each claims the next cell). Pool members are saved under `<out>/pool/<task>` and the
stacked pool under `<out>/pool/all`. After every cell the report (`lorafusion_bbh.md`, `.json`,
`.png` in `--docs`) is rewritten from the finished cells, with the pending ones listed. A fresh
clone whose `--out` has no finished cell takes them from the committed report of the same
budget (`docs/results/lorafusion_bbh*.json`), so it computes only what that report lacks.

Budget (defaults) sized for 2 cores: 7 pool tasks × 30 steps of batch 4 on 40 examples; 3
held-out tasks × 3 seeds × {lorafusion, hwa_lora} × 20 steps on 5 examples; 40 evaluation
examples; prompts + answers cut to 192 tokens (tasks with short inputs were chosen). The wall
time is written into the report; a smaller pool or fewer tasks are the knobs if it runs over.

Usage:
    python python/experiments/lorafusion_bbh.py --data-dir ../shared/data/bbh
    python python/experiments/lorafusion_bbh.py --quick --data-dir ../shared/data/bbh --out /tmp/q
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lorafusion_ext import HardwareConfig, LoRAPool, lora_adapter, trainable_parameters
from lorafusion_ext.evaluation.cost import crossbar_cost_of
from lorafusion_ext.hardware import PRESETS
from lorafusion_ext.models import DEFAULT_LLM, load_generator
from lorafusion_ext.apps.pipelines import drift_evaluation, load_run, run_hwa_lora
from lorafusion_ext.tasks import DataConfig, get_task
from lorafusion_ext.training.loop import TrainConfig
from lorafusion_ext.training.methods import FusionConfig, HWALoRAConfig, analog_model, train_fusion, train_hwa_lora

# The folder's shared modules, also when a test loads this file by path.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (Cell, Claims, RunFolder, command_line, committed_reports, format_mean_std, pyplot,  # noqa: E402
                     read_json, run_queue, write_json_atomic, write_page)
from harness.report import mean_and_error  # noqa: E402
from harness.tiny_models import tiny_llama  # noqa: E402

POOL_TASKS = ("multistep_arithmetic_two", "object_counting", "hyperbaton", "word_sorting", "dyck_languages",
              "date_understanding", "navigate")
HELD_OUT = ("boolean_expressions", "sports_understanding", "web_of_lies")
METHODS = ("lorafusion", "hwa_lora", "zero_shot_analog", "digital_base")
TEN_YEARS_S = 315360000.0  # 10 × 365 days
#: BBH tasks with two possible answers: chance is 0.5 once a model answers in the task's format.
TWO_CHOICE = ("boolean_expressions", "sports_understanding", "web_of_lies", "navigate", "causal_judgement",
              "formal_fallacies", "hyperbaton")


@dataclass
class Budget:
    pool_steps: int = 30
    pool_train_examples: int = 40
    pool_batch_size: int = 4
    shots: int = 5
    steps: int = 20
    batch_size: int = 5
    eval_examples: int = 40
    max_length: int = 192
    lora_lr: float = 1e-3
    coeff_lr: float = 0.02
    seeds: tuple[int, ...] = (0, 1, 2)
    trials: int = 3


@dataclass
class Settings:
    model: str
    data_dir: str
    hardware_name: str
    out: Path
    docs: Path
    pool_tasks: tuple[str, ...]
    held_out: tuple[str, ...]
    budget: Budget
    command: str
    threads: int = 2
    progress: bool = False
    hardware: HardwareConfig = field(default=None)  # type: ignore[assignment]


# ---------------------------------------------------------------------- cells
def plan(s: Settings) -> list[Cell]:
    """Every cell in run order: the pool, then seed by seed every held-out task and method (the
    cell's `kind` is "pool" or the method)."""
    cells = [Cell(f"pool/{t}", "pool", t, "hwa_lora", 0) for t in s.pool_tasks]
    for seed in s.budget.seeds:
        cells += [Cell(f"held_out/{t}/{m}/seed{seed}", m, t, m, seed) for t in s.held_out for m in METHODS]
    return cells


def run_folder(s: Settings) -> RunFolder:
    return RunFolder(s.out / "cells", legacy_log=s.out / "cells.jsonl")


def recipe(s: Settings) -> dict:
    """The cells' recipe as the report records it (JSON types); a committed report with the same
    is adopted."""
    return json.loads(json.dumps({"budget": dataclasses.asdict(s.budget), "model": s.model,
                                  "hardware": s.hardware_name, "pool_tasks": list(s.pool_tasks)}))


def cells_from_report(s: Settings, report: dict, source: str) -> dict[str, dict]:
    """The finished cells a report holds (its per-seed values, trainable counts and cell
    counts; not the per-trial values), when its recipe is this run's. A method's values are
    its finished seeds in `--seeds` order: the seeds whose cell is not pending."""
    theirs = {"budget": report.get("budget"), "model": report.get("model"), "hardware": report.get("hardware"),
              "pool_tasks": report.get("pool_tasks")}
    if theirs != recipe(s):
        return {}
    pending = set(report.get("pending", []))
    out: dict[str, dict] = {}
    for t, v in report.get("pool", {}).items():
        out[f"pool/{t}"] = {"key": f"pool/{t}", "metric": "exact_match", "t0": v, "adopted_from": source}
    for t, methods in report.get("held_out", {}).items():
        for m, e in methods.items():
            seeds = [seed for seed in s.budget.seeds if f"held_out/{t}/{m}/seed{seed}" not in pending]
            for i, seed in enumerate(seeds[: len(e["t0"])]):
                key = f"held_out/{t}/{m}/seed{seed}"
                out[key] = {"key": key, "metric": e["metric"], "t0": e["t0"][i], "t10y": e["t10y"][i],
                            "trainable": e["trainable"], "cells_per_task": e["cells_per_task"],
                            "cells_once": e["cells_once"], "adopted_from": source}
    return out


def adopt_committed(s: Settings, folder: RunFolder) -> list[str]:
    """Into a run folder without finished cells (a fresh clone): the cells of the report in
    `--docs`, or else of a committed report (docs/results), whose recipe is this run's. The
    report's summed compute time is kept beside them (`<out>/adopted_report.json`)."""
    if not folder.empty():
        return []
    for path in [s.docs / "lorafusion_bbh.json", *committed_reports("lorafusion_bbh*.json")]:
        report = read_json(path)
        records = cells_from_report(s, report, str(path)) if report else {}
        if records:
            taken = folder.adopt(records)
            write_json_atomic(s.out / "adopted_report.json", {"source": str(path), "wall_s": report.get("wall_s", 0.0)})
            return taken
    return []


def _data(s: Settings, train_examples: int) -> DataConfig:
    return DataConfig(max_length=s.budget.max_length, train_examples=train_examples,
                      eval_examples=s.budget.eval_examples, data_dir=s.data_dir)


def _tcfg(s: Settings, steps: int, batch: int, seed: int) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=batch, seed=seed, progress=s.progress)


def _lora(s: Settings) -> HWALoRAConfig:
    return HWALoRAConfig(lr=s.budget.lora_lr)


def pool_cell(s: Settings, task: str) -> dict:
    name = f"bbh:{task}"
    record, model = run_hwa_lora(name, s.model, s.hardware, _lora(s),
                                 _tcfg(s, s.budget.pool_steps, s.budget.pool_batch_size, 0),
                                 _data(s, s.budget.pool_train_examples), out=s.out / "pool" / task)
    return {"metric": "exact_match", "t0": record.metrics["exact_match"], "trainable": trainable_parameters(model)["total"]}


def full_pool(s: Settings) -> LoRAPool:
    """The pool of the finished members (saved under <out>/pool/all once)."""
    folder = s.out / "pool" / "all"
    if (folder / "pool_config.json").is_file():
        return LoRAPool.load(folder)
    adapters, alpha = [], None
    for t in s.pool_tasks:
        _, model, _ = load_run(s.out / "pool" / t)
        a, alpha = lora_adapter(model)
        adapters.append(a)
    pool = LoRAPool.from_adapters(adapters, alpha, adapter_names=list(s.pool_tasks))
    pool.save(folder)
    return pool


def held_out_cell(s: Settings, method: str, task: str, seed: int) -> dict:
    t = get_task(f"bbh:{task}")
    data = _data(s, s.budget.shots)
    if method == "digital_base":
        model, tok = load_generator(s.model, seed=seed)
    else:
        model, tok = analog_model(s.model, t, s.hardware, seed=seed)
    train_set, dev = t.train_data(tok, data), t.eval_data(tok, data)
    tcfg = _tcfg(s, s.budget.steps, s.budget.batch_size, seed)
    extra: dict[str, Any] = {}
    if method == "lorafusion":
        pool = full_pool(s)
        train_fusion(model, pool, train_set, FusionConfig(coeff_lr=s.budget.coeff_lr), tcfg, description=f"fuse {task}")
        extra["pool"] = list(pool.adapter_names)
    elif method == "hwa_lora":
        train_hwa_lora(model, train_set, _lora(s), tcfg, description=f"hwa-lora {task}")
    if method == "digital_base":
        value = t.evaluate(model, dev)["exact_match"]
        t0 = t10y = value
        trials0 = trials10 = [value]
    else:
        sweep = drift_evaluation(model, dev, t, (0.0, TEN_YEARS_S), s.budget.trials, seed, progress=s.progress)
        trials0 = [row[0] for row in sweep.values]
        trials10 = [row[1] for row in sweep.values]
        t0, t10y = sum(trials0) / len(trials0), sum(trials10) / len(trials10)
    counts = trainable_parameters(model) if method in ("lorafusion", "hwa_lora") else {"total": 0}  # untrained
    cost = {"cells_once": 0, "cells_per_task": 0}
    if method != "digital_base":
        report = crossbar_cost_of(model)
        row = next((m for m in report.methods if method == "lorafusion" and m.method.startswith("LoRAFusion")),
                   next(m for m in report.methods if m.method == "base model (deploy)"))
        # LoRAs, coefficients and magnitudes are digital: nothing is reprogrammed per task.
        cost = {"cells_once": row.cells_once, "cells_per_task": 0}
    return {"metric": "exact_match", "t0": t0, "t10y": t10y, "t0_trials": trials0, "t10y_trials": trials10,
            "trainable": counts["total"], "trainable_by_kind": counts, **cost, **extra}


def run_cell(s: Settings, cell: Cell) -> dict:
    start = time.perf_counter()
    rec = pool_cell(s, cell.task) if cell.kind == "pool" else held_out_cell(s, cell.kind, cell.task, cell.seed)
    return {"key": cell.key, **rec, "wall_s": time.perf_counter() - start}


# ---------------------------------------------------------------------- report
def collect(s: Settings, done: dict[str, dict]) -> dict:
    held: dict[str, dict] = {}
    for t in s.held_out:
        for m in METHODS:
            recs = [done[f"held_out/{t}/{m}/seed{seed}"] for seed in s.budget.seeds
                    if f"held_out/{t}/{m}/seed{seed}" in done]
            if recs:
                held.setdefault(t, {})[m] = {"metric": "exact_match", "t0": [r["t0"] for r in recs],
                                             "t10y": [r["t10y"] for r in recs], "trainable": recs[0]["trainable"],
                                             "cells_per_task": recs[0]["cells_per_task"],
                                             "cells_once": recs[0]["cells_once"]}
    pool = {t: done[f"pool/{t}"]["t0"] for t in s.pool_tasks if f"pool/{t}" in done}
    pending = [c.key for c in plan(s) if c.key not in done]
    adopted = read_json(s.out / "adopted_report.json") or {}
    return {"held_out": held, "pool": pool, "budget": dataclasses.asdict(s.budget), "model": s.model,
            "hardware": s.hardware_name, "pool_tasks": list(s.pool_tasks), "command": s.command,
            "wall_s": adopted.get("wall_s", 0.0) + sum(r.get("wall_s", 0.0) for r in done.values()),
            "pending": pending,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                       f"{s.threads} thread(s) per worker"}


def write_report(s: Settings, done: dict[str, dict]) -> dict:
    res = collect(s, done)
    b = s.budget
    lines = ["# LoRAFusion on BIG-Bench Hard (decoder-only LLM, analog)", "",
             f"Model `{s.model}`, hardware `{s.hardware_name}`. Pool: HWA-LoRAs on {', '.join(s.pool_tasks)} "
             f"({b.pool_steps} steps × batch {b.pool_batch_size} on {b.pool_train_examples} examples each). "
             f"Held-out tasks: {b.shots} training examples, {b.steps} steps × batch {b.batch_size} for every "
             f"trained method; exact match on {b.eval_examples} evaluation examples, {b.trials} drift trials, "
             f"seeds {list(b.seeds)} (mean ± std over seeds). Split: `lorafusion_ext.data.bbh`.", "",
             "| task | method | t = 0 | t = 10 y | trainable | cells reprogrammed per task |", "|---|---|---:|---:|---:|---:|"]
    for t, methods in res["held_out"].items():
        for m, r in methods.items():
            lines.append(f"| {t} | {m} | {format_mean_std(r['t0'])} (n={len(r['t0'])}) | {format_mean_std(r['t10y'])} | "
                         f"{r['trainable']:,} | {r['cells_per_task']:,} |")
    lines += ["", "Pool members' own exact match (t = 0, one evaluation): " +
              (", ".join(f"{t} {v:.3f}" for t, v in res["pool"].items()) or "none yet"), ""]
    binary = [t for t in res["held_out"] if t in TWO_CHOICE]
    lines += ["What these numbers do not show: " + f"{len(b.seeds)} seeds, {b.eval_examples} evaluation examples per "
              f"value (exact match moves in steps of {1 / b.eval_examples:.3f}), {b.trials} drift trials. "
              + (f"{', '.join(binary)} have two possible answers: chance is 0.5 once a model answers in the task's "
                 "format, so a method near 0.5 has learned the format, not necessarily the task, and a score well "
                 "below 0.5 means answers outside the format. " if binary else "")
              + "A 135 M-parameter model's pool members barely solve their own tasks (above), so the pool carries "
                "little task skill to fuse.", ""]
    if res["pending"]:
        lines += [f"**Incomplete:** {len(res['pending'])} cells pending: " + ", ".join(res["pending"]), ""]
    lines += [f"Command: `{s.command}`", "", f"Compute: {res['wall_s'] / 3600:.2f} h summed over cells; machine: "
              f"{res['machine']}.", ""]
    write_page(s.docs, "lorafusion_bbh", "\n".join(lines), res, plot=lambda path: _plot(path, res))
    return res


def _plot(path: Path, res: dict) -> None:
    plt = pyplot()
    tasks = list(res["held_out"])
    fig, ax = plt.subplots(figsize=(max(4, 2.2 * len(tasks)), 3.2))
    width = 0.8 / len(METHODS)
    for j, m in enumerate(METHODS):
        xs, ys, es = [], [], []
        for i, t in enumerate(tasks):
            if m in res["held_out"][t]:
                mean, err = mean_and_error(res["held_out"][t][m]["t10y"])
                xs.append(i + j * width)
                ys.append(mean)
                es.append(err)
        ax.bar(xs, ys, width, yerr=es, label=m)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(tasks))], tasks, fontsize=7)
    ax.set_ylabel("exact match at 10 y")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------- main
def parse(argv: list[str] | None) -> Settings:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True, help="BBH folder (<task>.json, the official layout)")
    p.add_argument("--model", default=None, help=f"causal-LM or seq2seq id or folder (default {DEFAULT_LLM})")
    p.add_argument("--hardware", default="pcm_paper", choices=PRESETS)
    p.add_argument("--out", default="results/lorafusion_bbh")
    p.add_argument("--docs", default=None, help="where lorafusion_bbh.md/json/png go (default docs/results; --quick: --out)")
    p.add_argument("--pool-tasks", default=",".join(POOL_TASKS))
    p.add_argument("--held-out", default=",".join(HELD_OUT))
    p.add_argument("--seeds", default=None, help="comma-separated (default 0,1,2)")
    for name in ("pool_steps", "pool_train_examples", "shots", "steps", "batch_size", "eval_examples", "max_length",
                 "trials"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--report", action="store_true", help="only rewrite the report from the finished cells")
    p.add_argument("--quick", action="store_true", help="smoke run: a tiny random Llama, 2 steps, tiny subsets")
    a = p.parse_args(argv)
    b = Budget()
    pool_tasks = tuple(t for t in a.pool_tasks.split(",") if t)
    held = tuple(t for t in a.held_out.split(",") if t)
    out = Path(a.out)
    model = a.model or DEFAULT_LLM
    if a.quick:
        b = Budget(pool_steps=2, pool_train_examples=4, pool_batch_size=2, shots=2, steps=2, batch_size=2,
                   eval_examples=2, max_length=160, seeds=(0,), trials=1)
        if a.pool_tasks == ",".join(POOL_TASKS):
            pool_tasks = ("multistep_arithmetic_two", "object_counting")
        if a.held_out == ",".join(HELD_OUT):
            held = ("boolean_expressions",)
        if a.model is None:
            model = tiny_llama(out / "tiny_llama")
    for name in ("pool_steps", "pool_train_examples", "shots", "steps", "batch_size", "eval_examples", "max_length",
                 "trials"):
        v = getattr(a, name)
        if v is not None:
            if v < 1:
                p.error(f"--{name.replace('_', '-')} = {v}; expected a positive integer")
            setattr(b, name, v)
    if a.seeds:
        b.seeds = tuple(int(x) for x in a.seeds.split(","))
    for t in pool_tasks + held:
        try:
            get_task(f"bbh:{t}")
        except ValueError as exc:
            p.error(str(exc))
    if set(pool_tasks) & set(held):
        p.error(f"--held-out {held} and --pool-tasks {pool_tasks} overlap; a held-out task must not be in the pool")
    if not os.path.isdir(a.data_dir):
        p.error(f"--data-dir {a.data_dir!r} is not a folder")
    argv_list = sys.argv[1:] if argv is None else argv
    # The computing command (a --report rerun only rewrites the report of the same cells).
    command = command_line("python/experiments/lorafusion_bbh.py", argv_list, drop=("--report",))
    docs = Path(a.docs) if a.docs else (out if a.quick else Path("docs/results"))
    s = Settings(model=model, data_dir=a.data_dir, hardware_name=a.hardware, out=out, docs=docs,
                 pool_tasks=pool_tasks, held_out=held, budget=b, command=command, threads=a.threads,
                 progress=a.progress)
    s.hardware = HardwareConfig.preset(a.hardware)
    s.report_only = a.report  # type: ignore[attr-defined]
    return s


def main(argv: list[str] | None = None) -> dict:
    s = parse(argv)
    torch.set_num_threads(s.threads)
    s.out.mkdir(parents=True, exist_ok=True)
    folder = run_folder(s)
    adopted = adopt_committed(s, folder)
    if adopted:
        print(f"[lorafusion_bbh] {len(adopted)} finished cells taken from a committed report", flush=True)
    if not getattr(s, "report_only", False):
        def finished(cell: Cell, rec: dict) -> None:
            print(f"[lorafusion_bbh] {cell.key}: t0 {rec['t0']:.3f}" +
                  (f" t10y {rec['t10y']:.3f}" if "t10y" in rec else "") + f" ({rec['wall_s']:.0f} s)", flush=True)
            write_report(s, folder.load())

        run_queue(plan(s), folder, Claims(s.out / "claims"), lambda cell, done: run_cell(s, cell), after_cell=finished,
                  log=lambda msg: print(f"[lorafusion_bbh] {msg}", flush=True))
    return write_report(s, folder.load())


if __name__ == "__main__":
    main()
