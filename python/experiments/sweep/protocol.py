"""The budget sweep's settings, its per-task budgets and its cells in priority order."""

from __future__ import annotations

import argparse
import math
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from harness import Cell
from lorafusion_ext import HardwareConfig

TASKS = ("sst2", "stsb", "mrpc")
#: Methods compared on the crossbar at every budget; `digital` (the digital LoRA without any
#: hardware, the ceiling) comes from the `digital_lora` cells, `full_finetune` is the
#: reference of what the model can learn (largest budget, one seed).
METHODS = ("hwa_lora", "digital_lora")
TEN_YEARS = 315360000.0
#: The largest budget is at least 3 epochs at the batch size, or this many steps if fewer.
MAX_STEPS = 2000


def default_budgets(n_train: int, batch_size: int, points: int = 4, max_steps: int = MAX_STEPS) -> tuple[int, ...]:
    """`points` step counts on a log scale, from about 100 to the largest, which is 3 epochs of
    `n_train` examples at `batch_size` or `max_steps`, whichever is smaller (issue 25); the
    smallest is never above a third of the largest. Rounded to 10 steps (5 below 100)."""
    if n_train < 1 or batch_size < 1 or points < 2:
        raise ValueError(f"default_budgets: n_train {n_train}, batch_size {batch_size}, points {points}; "
                         "expected positive sizes and at least 2 points")
    top = min(3 * math.ceil(n_train / batch_size), max_steps)
    low = min(100.0, top / 3)
    out = []
    for i in range(points):
        v = low * (top / low) ** (i / (points - 1))
        step = 5 if v < 100 else 10
        out.append(max(1, int(round(v / step)) * step))
    out[-1] = top  # the rule's budget exactly
    return tuple(sorted(set(out)))


@dataclass
class Recipe:
    """What every training run gets, every method alike."""

    batch_size: int = 32
    max_length: int = 64
    lora_lr: float = 1e-3
    head_lr: float = 1e-3
    full_finetune_lr: float = 5e-5
    group_by_length: int = 50
    train_examples: int | None = None
    eval_examples: int | None = None
    data_seed: int = 0
    seeds: tuple[int, ...] = (0, 1, 2)
    trials: int = 3
    checkpoint_every: int = 100


@dataclass
class Settings:
    model: str
    glue_dir: str
    hardware_name: str
    out: Path
    docs: Path
    tasks: tuple[str, ...]
    budgets: dict[str, tuple[int, ...]]
    recipe: Recipe
    threads: int = 1
    only: tuple[str, ...] = ()
    progress: bool = False
    command: str = ""
    hardware: HardwareConfig = field(default=None)  # type: ignore[assignment]
    #: Per task, the largest budget `default_budgets`' rule gives (3 epochs or MAX_STEPS): the
    #: page says where `budgets` stops below it.
    rule_top: dict[str, int] = field(default_factory=dict)


def sweep_config(s: Settings) -> dict:
    """What a finished budget-sweep cell (and its stored adapter) must have been computed with to
    be reused (budget and seed are in its key)."""
    r = dataclasses.asdict(s.recipe)
    for k in ("seeds", "checkpoint_every"):
        r.pop(k)
    return {"model": s.model, "hardware": s.hardware_name, **r}


def cell_key(task: str, method: str, steps: int, seed: int) -> str:
    return f"{task}/{method}/b{steps}/seed{seed}"


def plan(s: Settings) -> list[Cell]:
    """Every cell, cheapest useful result first: seed 0 at every budget (smallest first, both
    methods), then the full fine-tune reference, then the other seeds at the largest budget."""
    first, reference, more = [], [], []
    for task in s.tasks:
        budgets = s.budgets[task]
        for steps in budgets:
            for method in METHODS:
                first.append((steps, Cell(cell_key(task, method, steps, s.recipe.seeds[0]), "sweep", task, method,
                                          s.recipe.seeds[0], params=(("steps", steps),))))
        top = budgets[-1]
        reference.append(Cell(cell_key(task, "full_finetune", top, s.recipe.seeds[0]), "reference", task,
                              "full_finetune", s.recipe.seeds[0], params=(("steps", top),)))
        for seed in s.recipe.seeds[1:]:
            for method in METHODS:
                more.append((top, Cell(cell_key(task, method, top, seed), "sweep", task, method, seed,
                                       params=(("steps", top),))))
    ordered = [c for _, c in sorted(first, key=lambda x: x[0])] + reference + [c for _, c in sorted(more, key=lambda x: x[0])]
    return [c for c in ordered if not s.only or c.key.startswith(s.only)]


def parse_steps(text: str, tasks: tuple[str, ...]) -> dict[str, int]:
    """'sst2=740,stsb=540' -> {task: steps} (`--steps` of the one-budget sweeps: `on_device.py`,
    `training_noise.py`)."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        task, _, steps = part.partition("=")
        if task not in tasks or not steps.strip().isdigit() or int(steps) < 1:
            raise SystemExit(f"--steps: {part!r}; expected TASK=STEPS with a task of --tasks {tasks} and a positive "
                             "integer")
        out[task] = int(steps)
    return out


def add_run_arguments(p: argparse.ArgumentParser, name: str, tasks: tuple[str, ...]) -> None:
    """The options every GLUE training sweep of this folder shares (data, model, hardware, seeds,
    the `Recipe`, processes, resumption); `name` is the report's (budget_sweep, on_device)."""
    p.add_argument("--glue-dir", required=True, help="GLUE folder (official TSV layout)")
    p.add_argument("--out", default=f"results/{name}", help="run folder (cells, checkpoints)")
    p.add_argument("--docs", default=None, help=f"where {name}.md/json/png go (default docs/results; --quick: --out)")
    p.add_argument("--model", default=None, help="model id or folder (default all-MiniLM-L6-v2; --quick: a tiny BERT)")
    p.add_argument("--hardware", default="pcm_paper", help="hardware preset")
    p.add_argument("--tasks", default=",".join(tasks))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--lora-lr", type=float, default=1e-3)
    p.add_argument("--head-lr", type=float, default=1e-3)
    p.add_argument("--group-by-length", type=int, default=50, help="batches per length group (0: plain shuffling)")
    p.add_argument("--train-examples", type=int, default=None)
    p.add_argument("--eval-examples", type=int, default=None)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--workers", type=int, default=1, help="processes sharing the queue (this one included)")
    p.add_argument("--only", default="", help="comma-separated cell-key prefixes to compute (all by default)")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from the finished cells")
    p.add_argument("--no-progress", action="store_true")


def run_arguments(p: argparse.ArgumentParser, a: argparse.Namespace,
                  **recipe: object) -> tuple[tuple[str, ...], Recipe]:
    """(tasks, recipe) of the options of `add_run_arguments` (`recipe`: more `Recipe` fields);
    a bad value exits through `p.error`, naming the option."""
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
    return tasks, Recipe(batch_size=a.batch_size, max_length=a.max_length, lora_lr=a.lora_lr, head_lr=a.head_lr,
                         group_by_length=a.group_by_length, train_examples=a.train_examples,
                         eval_examples=a.eval_examples, seeds=seeds, trials=a.trials, **recipe)  # type: ignore[arg-type]


def quick_recipe(recipe: Recipe) -> Recipe:
    """The `--quick` smoke run's recipe: batches of 4 of 32 tokens, 16 training and 16 dev
    examples, the first 2 seeds, 1 drift trial, a checkpoint every step."""
    return dataclasses.replace(recipe, batch_size=4, max_length=32, train_examples=16, eval_examples=16,
                               seeds=recipe.seeds[:2], trials=1, checkpoint_every=1)
