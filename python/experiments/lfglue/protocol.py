"""The protocol of the LoRAFusion GLUE experiment (`python/experiments/lorafusion_glue.py`): its
budget and settings, and its cells in priority order."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import Cell, RunFolder
from lorafusion_ext import HardwareConfig
from lorafusion_ext.training.methods import FusionConfig

TASKS = ("sst2", "cola", "mrpc", "stsb", "rte")
METHODS = ("lorafusion", "hwa_lora", "digital_lora", "head_only", "magnitude_only")
TEN_YEARS = 315360000.0
# Runs whose settings.json predates the recorded fusion recipe ran the published magnitude lr.
LEGACY_MAGNITUDE_LR = 5e-3


@dataclass
class Budget:
    """What every training run gets (pool members and every method alike)."""

    steps: int = 100
    batch_size: int = 16
    max_length: int = 64
    #: None: every example of the split.
    train_examples: int | None = 1600
    eval_examples: int | None = 200
    lora_lr: float = 1e-3
    head_lr: float = 1e-2
    seeds: tuple[int, ...] = (0, 1, 2)
    trials: int = 3
    data_seed: int = 0
    #: steps of every pool member (None: each task's held-out steps; a member whose steps are
    #: its task's held-out steps is also the seed-0 `hwa_lora` of its task, `pool_is_hwa_seed0`;
    #: otherwise that seed is trained on its own with the held-out steps).
    pool_steps: int | None = None
    #: examples the pool members draw from (None: `train_examples`).
    pool_train_examples: int | None = None
    #: pool members trained to convergence: this many epochs of their training examples, at
    #: most `pool_max_steps` steps (overrides `pool_steps`; None: off).
    pool_epochs: float | None = None
    pool_max_steps: int = 2000
    #: batches of similar length (groups of this many batches, `TrainConfig.group_by_length`);
    #: 0: plain shuffling, as the runs recorded before the field.
    group_by_length: int = 0
    #: learning rate of the full fine-tune (the reference of what the model learns on a task).
    full_finetune_lr: float = 5e-5
    #: steps per task (task -> steps; `--steps sst2=1000,...`), overriding `steps` (which is
    #: then their largest, for the page); None: `steps` for every task.
    task_steps: dict[str, int] | None = None
    #: pool-member steps per task (task -> steps; `--pool-steps sst2=1000,...`), overriding
    #: `pool_steps` (then None); None: `pool_steps`. E.g. a pool member trained to convergence
    #: while its task is held out at a shorter budget.
    pool_task_steps: dict[str, int] | None = None


#: Budget fields added after runs were recorded, with the value those runs had: a recorded
#: budget without them equals one with them at these values.
LATER_FIELDS = {"pool_epochs": None, "pool_max_steps": 2000, "group_by_length": 0, "full_finetune_lr": 5e-5,
                "task_steps": None, "pool_task_steps": None}


def comparable_budget(budget: dict) -> dict:
    """`budget` (a recorded `Budget` as a dict) less the later fields at their recorded-run
    values, so that budgets recorded before those fields existed compare equal."""
    return {k: v for k, v in budget.items() if not (k in LATER_FIELDS and v == LATER_FIELDS[k])}


def steps_of(b: Budget, task: str) -> int:
    """Steps of every held-out training run on `task`."""
    return b.task_steps[task] if b.task_steps else b.steps


def fixed_pool_steps(b: Budget, task: str) -> int | None:
    """Steps of the pool member of `task` when they do not depend on its data (None with
    `pool_epochs`): `pool_task_steps[task]`, else `pool_steps`, else the task's held-out steps."""
    if b.pool_epochs is not None:
        return None
    if b.pool_task_steps:
        return b.pool_task_steps[task]
    return b.pool_steps or steps_of(b, task)


def pool_steps_for(b: Budget, n_train: int, task: str) -> int:
    """Steps of the pool member of `task`, which draws from `n_train` examples."""
    if b.pool_epochs is not None:
        return max(1, min(b.pool_max_steps, math.ceil(b.pool_epochs * math.ceil(n_train / b.batch_size))))
    steps = fixed_pool_steps(b, task)
    assert steps is not None
    return steps


def parse_steps(text: str, tasks: tuple[str, ...], option: str = "--steps") -> tuple[int, dict[str, int] | None]:
    """`--steps` (or `option`, e.g. `--pool-steps`): one positive integer for every task, or
    ``TASK=N,...`` naming each of `tasks` once. Returns (steps, per-task steps or None); with
    per-task steps, `steps` is their largest. Raises ValueError naming `option` and what is wrong."""
    text = text.strip()
    if "=" not in text:
        try:
            v = int(text)
        except ValueError:
            raise ValueError(f"{option} {text!r}: expected a positive integer or TASK=N,... (e.g. sst2=1000,rte=235)"
                             ) from None
        if v < 1:
            raise ValueError(f"{option} {v}: expected a positive integer")
        return v, None
    per: dict[str, int] = {}
    for item in (x.strip() for x in text.split(",")):
        task, sep, n = item.partition("=")
        task = task.strip().lower()
        if not sep or not task:
            raise ValueError(f"{option} {text!r}: {item!r} is not TASK=N")
        try:
            v = int(n)
        except ValueError:
            raise ValueError(f"{option} {text!r}: {item!r}: {n!r} is not an integer") from None
        if v < 1:
            raise ValueError(f"{option} {text!r}: {task} = {v}; expected a positive integer")
        if task in per:
            raise ValueError(f"{option} {text!r}: {task} given twice")
        per[task] = v
    unknown = [t for t in per if t not in tasks]
    missing = [t for t in tasks if t not in per]
    if unknown or missing:
        raise ValueError(f"{option} {text!r}: " + "; ".join(
            ([f"tasks not in --tasks: {', '.join(unknown)}"] if unknown else [])
            + ([f"no steps for {', '.join(missing)}"] if missing else [])) + f" (--tasks {','.join(tasks)})")
    return max(per.values()), {t: per[t] for t in tasks}


#: A task counts as learnable when the full fine-tune's dev metric is above the constant
#: predictor's by more than this (in the metric's units: 2 points of accuracy or F1, 0.02 of
#: MCC or Pearson). Below it, the methods are not compared on the task: a tie at chance says
#: nothing about them.
LEARNABLE_MARGIN = 0.02


@dataclass
class Settings:
    model: str
    glue_dir: str
    hardware_name: str
    out: Path
    docs: Path
    tasks: tuple[str, ...]
    ablation_tasks: tuple[str, ...]
    diagnosis_task: str | None
    budget: Budget
    fusion: FusionConfig
    pool_digital: bool
    only: tuple[str, ...] = ()
    progress: bool = False
    command: str = ""
    hardware: HardwareConfig = field(default=None)  # type: ignore[assignment]
    export: tuple[Path, str] | None = None
    report_only: bool = False
    #: only list what each cell would be (`--plan`), writing nothing.
    plan_only: bool = False
    import_from: Path | None = None
    threads: int = 1  # torch threads per worker of the run that computed the cells
    #: a budget-sweep run folder whose cells of the identical protocol are taken (`lfglue.from_sweep`).
    from_sweep: Path | None = None
    #: the budget sweep's report, whose `pending` cells this run waits for (None: found beside it).
    sweep_report: Path | None = None
    #: leave out the held-out cells of a task whose full fine-tune stays at chance.
    skip_unlearnable: bool = False
    #: the report's file names (<docs>/<page>.md, .json, .png).
    page: str = "lorafusion"



ABLATIONS: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = (
    ("mode=sum", (("mode", "sum"),)),
    ("granularity=layer", (("granularity", "layer"),)),
    ("granularity=global", (("granularity", "global"),)),
    ("no_magnitude", (("magnitude", False),)),
    ("pool_digital", (("pool_on_crossbar", False),)),
)

DIAGNOSIS: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = (
    ("coeff_lr=0.005", (("coeff_lr", 0.005),)),
    ("coeff_lr=0.1", (("coeff_lr", 0.1),)),
    ("magnitude_lr=0.001", (("magnitude_lr", 1e-3),)),
    ("magnitude_lr=0.005", (("magnitude_lr", 5e-3),)),
    ("magnitude_lr=0.02", (("magnitude_lr", 2e-2),)),
    ("init=uniform_1_over_k", (("init", "uniform_1_over_k"),)),
    ("l1=0", (("l1", 0.0),)),
)


# The other side of the learning-rate diagnosis (no tuning one side only): HWA-LoRA's LoRA lr
# and the magnitudes-only baseline's lr moved like LoRAFusion's magnitude lr, and that move
# repeated on the second ablation task. (method, variant, params); seed 0.
BALANCE: tuple[tuple[str, str, tuple[tuple[str, Any], ...]], ...] = (
    ("lorafusion", "magnitude_lr=0.02", (("magnitude_lr", 2e-2),)),
    ("hwa_lora", "hwa_lora lora_lr=0.003", (("lora_lr", 3e-3),)),
    ("magnitude_only", "magnitude_only magnitude_lr=0.02", (("magnitude_lr", 2e-2),)),
)


def plan(s: Settings) -> list[Cell]:
    """Every cell of the experiment, in priority order (what runs first when several workers
    share the queue, and what an interrupted run has finished): each task's chance level and
    full fine-tune reference; the pool; seed 0 of
    `lorafusion`, `hwa_lora` (the pool member where it is one), `magnitude_only` and `head_only` on every task; seed 0
    of `digital_lora`; the capacity/optimisation diagnosis on `--diagnosis-task`; the other
    seeds of every method; then the other ablations and diagnosis cells."""
    seeds = list(s.budget.seeds)
    first = seeds[0]
    cells = [Cell(f"chance/{t}", "chance", t, "chance", 0) for t in s.tasks]
    # What the model can learn on each task (one digital full fine-tune per task), before the
    # methods: a task it cannot learn is left out of them (`skip_unlearnable`).
    cells += [Cell(f"reference/{t}/full_finetune", "reference", t, "full_finetune", first) for t in s.tasks]
    cells += [Cell(f"pool/{t}", "pool", t, "hwa_lora", 0) for t in s.tasks]

    def held(seed: int, methods: tuple[str, ...]) -> list[Cell]:
        return [Cell(f"held_out/{t}/{m}/seed{seed}", "held_out", t, m, seed) for m in methods for t in s.tasks]

    cells += held(first, ("lorafusion", "hwa_lora", "magnitude_only", "head_only"))
    def moves(params: tuple[tuple[str, Any], ...]) -> bool:  # a variant that is the run's own recipe is not one
        return dict(params).get("magnitude_lr", -1.0) != s.fusion.magnitude_lr

    diag = []
    if s.diagnosis_task:
        diag = [Cell(f"diagnosis/{s.diagnosis_task}/{n}", "diagnosis", s.diagnosis_task, "lorafusion", first, n, p)
                for n, p in DIAGNOSIS if moves(p)]
    k_pool = len(s.tasks) - 1
    ablations = []
    for t in s.ablation_tasks:
        for name, params in ABLATIONS:
            ablations.append(Cell(f"ablation/{t}/{name}", "ablation", t, "lorafusion", first, name, params))
        for k in range(1, k_pool):
            ablations.append(Cell(f"ablation/{t}/K={k}", "ablation", t, "lorafusion", first, f"K={k}", (("K", k),)))
    # Capacity vs optimisation first (coefficients only, the learning-rate sweeps), then the
    # seeds the main table needs, then the rest of the ablations.
    early = [c for c in ablations if c.variant == "no_magnitude"][:1]
    cells += held(first, ("digital_lora",))
    cells += early + diag[:4]
    for seed in seeds[1:]:
        cells += held(seed, METHODS)
    if s.diagnosis_task:
        for t in dict.fromkeys((s.diagnosis_task, *s.ablation_tasks)):
            cells += [Cell(f"diagnosis/{t}/{v}", "diagnosis", t, m, first, v, p) for m, v, p in BALANCE
                      if f"diagnosis/{t}/{v}" not in {c.key for c in diag} and (m == "hwa_lora" or moves(p))]
    cells += [c for c in ablations if c not in early]
    cells += diag[4:]
    if s.only:
        cells = [c for c in cells if any(c.key.startswith(p) for p in s.only)]
    return cells


# Cells that do not depend on the pool's content, imported from another run (--import-from)
# with the same per-task budget: the same training, seed and data give the same result.
POOL_FREE = ("hwa_lora", "digital_lora", "head_only", "magnitude_only")  # magnitude_only: c = 0, Δy = 0


_POOL_FIELDS = ("pool_steps", "pool_task_steps", "pool_train_examples", "pool_epochs", "pool_max_steps")


def _held_out_budget(budget: dict) -> dict:
    return {k: v for k, v in comparable_budget(budget).items() if k not in (*_POOL_FIELDS, "seeds")}


def _pool_budget(budget: dict) -> tuple:
    """What the pool members of a recorded budget (a `Budget` as a dict) depend on: their steps
    (one number, or per task when they differ between tasks), examples, epochs and step cap."""
    b = budget_from_dict(budget)
    per_task = b.pool_task_steps or (None if b.pool_steps else b.task_steps)
    if per_task and len(set(per_task.values())) > 1:
        steps: Any = tuple(sorted(per_task.items()))
    else:
        steps = next(iter(per_task.values())) if per_task else (b.pool_steps or b.steps)
    return (steps, b.pool_train_examples or b.train_examples, b.pool_epochs, b.pool_max_steps)


def budget_from_dict(budget: dict) -> Budget:
    """A recorded `Budget` (as a dict, e.g. read from settings.json) as a `Budget`: fields it
    lacks (recorded before they existed) take their recorded-run values (`LATER_FIELDS`), fields
    this code does not know are ignored."""
    known = {f.name for f in dataclasses.fields(Budget)}
    values = {**LATER_FIELDS, **{k: v for k, v in budget.items() if k in known}}
    if "seeds" in values:
        values["seeds"] = tuple(values["seeds"])
    return Budget(**values)


def pool_member_is_hwa(b: Budget, task: str) -> bool:
    """Whether the pool member of `task` is the same training run as a seed-0 held-out `hwa_lora`
    on `task` (same recipe, examples and steps; the pool is always seed 0): true unless its pool
    steps or examples differ from the held-out ones, or depend on data (`pool_epochs`)."""
    return (b.pool_epochs is None and b.pool_train_examples in (None, b.train_examples)
            and fixed_pool_steps(b, task) == steps_of(b, task))


def pool_is_hwa_seed0(s: Settings, task: str) -> bool:
    """Whether the pool member of `task` is also the seed-0 `hwa_lora` of `task` in this run
    (`pool_member_is_hwa`, and the run's first seed is 0): that cell then reuses the member."""
    b = s.budget
    return bool(b.seeds) and b.seeds[0] == 0 and pool_member_is_hwa(b, task)


def pool_hwa_tasks(s: Settings) -> tuple[str, ...]:
    """The tasks whose pool member is also their seed-0 `hwa_lora` (`pool_is_hwa_seed0`)."""
    return tuple(t for t in s.tasks if pool_is_hwa_seed0(s, t))


def run_folder(s: Settings) -> RunFolder:
    """The run's finished cells: one JSON file each under `<out>/cells/`; runs made before this
    layout appended them to `<out>/cells.jsonl`, still read."""
    return RunFolder(s.out / "cells", legacy_log=s.out / "cells.jsonl")
