"""Budget sweep (issue 25, item 1): from which training budget does a LoRA trained through the
hardware (HWA-LoRA) beat the same LoRA trained digitally and deployed on the same crossbar?

On all-MiniLM-L6-v2, every linear layer analog (`pcm_paper`), the heads digital, for each task
(default SST-2, STS-B, MRPC) and each budget (4 step counts on a log scale from about 100 to 3
epochs at batch 32 or 2,000 steps, whichever is smaller; `--budgets` overrides):

- `hwa_lora`: LoRA (rank 8 on every linear layer) and head trained through the hardware;
- `digital_lora`: the same recipe on the digital model, then deployed (pretrained weights on
  the crossbar, LoRA and head digital); its digital score is the ceiling (`digital`);
- `full_finetune` (largest budget, first seed): every weight trained digitally, the reference
  of what the model learns on the task.

Each crossbar evaluation programs the model anew in each of `--trials` trials and reads it at
0 s and after 10 years of drift; a seed's value is the trial mean. Seed 0 at every budget,
seeds 0-2 at the largest. Writes ``docs/results/budget_sweep.{md,json,png}`` after every cell.

Resumable: each finished cell is one JSON file under ``<out>/cells`` (skipped on a rerun),
training checkpoints every 100 steps under ``<out>/checkpoints``; a fresh clone takes the
finished cells of the committed report. ``--workers 2`` starts a second process (one torch
thread each) sharing the queue.

    nice -n 10 .venv/bin/python python/experiments/budget_sweep.py --glue-dir ../shared/data/glue --workers 2
    python python/experiments/budget_sweep.py --quick --glue-dir DIR --out /tmp/q   # smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Claims, RunFolder, command_line, read_json, run_queue, write_text  # noqa: E402
from harness.tiny_models import tiny_bert  # noqa: E402
from lorafusion_ext import HardwareConfig  # noqa: E402
from lorafusion_ext.data.glue import load_glue  # noqa: E402
from lorafusion_ext.models import DEFAULT_MODEL  # noqa: E402
from sweep import methods, report  # noqa: E402
from sweep.protocol import TASKS, Recipe, Settings, default_budgets, plan  # noqa: E402

SCRIPT = "python/experiments/budget_sweep.py"
#: Flags that do not change a result (they are dropped from the page's command).
NOT_IN_COMMAND = ("--report-only", "--no-progress")


def parse_budgets(text: str, tasks: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """'sst2=100,300,800,2000;mrpc=...' -> {task: budgets}."""
    out: dict[str, tuple[int, ...]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        task, _, steps = part.partition("=")
        try:
            values = tuple(sorted({int(v) for v in steps.split(",") if v.strip()}))
        except ValueError:
            raise SystemExit(f"--budgets: {part!r}; expected TASK=STEPS,STEPS,... with integer steps") from None
        if task not in tasks or not values or min(values) < 1:
            raise SystemExit(f"--budgets: {part!r}; expected a task of --tasks {tasks} and positive step counts")
        out[task] = values
    return out


def without_workers(args: list[str]) -> list[str]:
    """`args` less `--workers N` / `--workers=N`: how many processes ran does not change a result."""
    out, skip = [], False
    for x in args:
        if skip:
            skip = False
        elif x == "--workers":
            skip = True
        elif not x.startswith("--workers="):
            out.append(x)
    return out


def parse(argv: list[str] | None) -> tuple[Settings, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--glue-dir", required=True, help="GLUE folder (official TSV layout)")
    p.add_argument("--out", default="results/budget_sweep", help="run folder (cells, checkpoints)")
    p.add_argument("--docs", default=None, help="where budget_sweep.md/json/png go (default docs/results; --quick: --out)")
    p.add_argument("--model", default=None, help=f"model id or folder (default {DEFAULT_MODEL})")
    p.add_argument("--hardware", default="pcm_paper", help="hardware preset")
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--budgets", default="", help="per-task step counts, e.g. 'sst2=100,300,800,2000;mrpc=100,200'")
    p.add_argument("--seeds", default="0,1,2", help="seeds at the largest budget (the first also below it)")
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--lora-lr", type=float, default=1e-3)
    p.add_argument("--head-lr", type=float, default=1e-3)
    p.add_argument("--full-finetune-lr", type=float, default=5e-5)
    p.add_argument("--group-by-length", type=int, default=50, help="batches per length group (0: plain shuffling)")
    p.add_argument("--train-examples", type=int, default=None)
    p.add_argument("--eval-examples", type=int, default=None)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--workers", type=int, default=1, help="processes sharing the queue (this one included)")
    p.add_argument("--only", default="", help="comma-separated cell-key prefixes to compute (all by default)")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from the finished cells")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny random BERT, budgets 2 and 4, 2 seeds")
    a = p.parse_args(argv)
    for name in ("trials", "batch_size", "max_length", "threads", "workers"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    tasks = tuple(t.strip() for t in a.tasks.split(",") if t.strip())
    if not tasks:
        p.error("--tasks is empty")
    try:
        seeds = tuple(int(x) for x in a.seeds.split(",") if x.strip())
    except ValueError:
        p.error(f"--seeds {a.seeds!r}; expected comma-separated integers")
    if not seeds:
        p.error("--seeds is empty")
    out = Path(a.out)
    recipe = Recipe(batch_size=a.batch_size, max_length=a.max_length, lora_lr=a.lora_lr, head_lr=a.head_lr,
                    full_finetune_lr=a.full_finetune_lr, group_by_length=a.group_by_length,
                    train_examples=a.train_examples, eval_examples=a.eval_examples, seeds=seeds, trials=a.trials)
    budgets = parse_budgets(a.budgets, tasks)
    if a.quick:
        recipe = dataclasses.replace(recipe, batch_size=4, max_length=32, train_examples=16, eval_examples=16,
                                     seeds=seeds[:2], trials=1, checkpoint_every=1)
        budgets = {t: budgets.get(t, (2, 4)) for t in tasks}
    for t in tasks:
        if t not in budgets:
            n = len(load_glue(t, "train", a.glue_dir))
            budgets[t] = default_budgets(min(n, recipe.train_examples or n), recipe.batch_size)
    model = a.model or (tiny_bert(out / "tiny_bert") if a.quick else DEFAULT_MODEL)
    docs = Path(a.docs) if a.docs else (out if a.quick else Path("docs/results"))
    s = Settings(model=model, glue_dir=a.glue_dir, hardware_name=a.hardware, out=out, docs=docs, tasks=tasks,
                 budgets=budgets, recipe=recipe, threads=a.threads,
                 only=tuple(x for x in a.only.split(",") if x), progress=not a.no_progress,
                 command=command_line(SCRIPT, without_workers(sys.argv[1:] if argv is None else argv),
                                      drop=NOT_IN_COMMAND))
    s.hardware = HardwareConfig.preset(a.hardware)
    return s, a


def config(s: Settings) -> dict:
    """What a finished cell must have been computed with to be reused (budget and seed are in its key)."""
    r = dataclasses.asdict(s.recipe)
    for k in ("seeds", "checkpoint_every"):
        r.pop(k)
    return {"model": s.model, "hardware": s.hardware_name, **r}


def chance_levels(s: Settings) -> dict[str, dict]:
    """Each task's constant-predictor level on the dev examples used (cached in <out>/chance.json)."""
    path = s.out / "chance.json"
    cached = read_json(path) or {}
    key = json.dumps(config(s), sort_keys=True)
    levels = cached.get(key, {})
    missing = [t for t in s.tasks if t not in levels]
    for t in missing:
        levels[t] = methods.chance(s, t)
    if missing:
        cached[key] = levels
        write_text(path, json.dumps(cached, indent=2))
    return {t: levels[t] for t in s.tasks}


def adopt_committed(s: Settings, folder: RunFolder) -> list[str]:
    """A fresh run folder takes the finished cells of the committed report (same recipe only)."""
    data = read_json(s.docs / f"{report.NAME}.json")
    return folder.adopt(data.get("cells", {})) if data else []


def main(argv: list[str] | None = None) -> dict:
    s, a = parse(argv)
    torch.set_num_threads(s.threads)
    s.out.mkdir(parents=True, exist_ok=True)
    folder = RunFolder(s.out / "cells", config=config(s), config_field="config")
    log = lambda msg: print(f"[budget_sweep {os.getpid()}] {msg}", flush=True)  # noqa: E731
    taken = adopt_committed(s, folder)
    if taken:
        log(f"{len(taken)} finished cells taken from the committed report")
    all_cells = plan(dataclasses.replace(s, only=()))
    chance = chance_levels(s)
    if a.report_only:
        return report.write(s, all_cells, folder.load(), chance)
    helpers = []
    if a.workers > 1:
        args = [x for x in (sys.argv[1:] if argv is None else argv)]
        cmd = [sys.executable, str(Path(__file__).resolve()), *args, "--workers", "1", "--no-progress"]
        helpers = [subprocess.Popen(cmd) for _ in range(a.workers - 1)]

    def finished(cell, rec: dict) -> None:
        shown = " ".join(f"{k} {rec[k]:.4f}" for k in ("t0", "t10y", "digital") if k in rec)
        log(f"{cell.key}: {shown} ({rec['metric']}, {rec['wall_s']:.0f} s)")
        report.write(s, all_cells, folder.load(), chance)

    run_queue(plan(s), folder, Claims(s.out / "claims"),
              lambda cell, done: methods.run_cell(s, cell), after_cell=finished, log=log)
    for h in helpers:
        h.wait()
    return report.write(s, all_cells, folder.load(), chance)


if __name__ == "__main__":
    main()
