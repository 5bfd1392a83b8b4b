"""LoRAFusion reproduction on GLUE: leave-one-out over SST-2, CoLA, MRPC, STS-B and RTE
(issue 10, items 4 and 5).

Protocol (all on the analog model: every linear layer an `AnalogLinear` with `--hardware`,
heads digital):

1. **Pool.** For every task T, one HWA-LoRA (rank 8, alpha 32, all linear layers) trained
   through the hardware on T with the common budget and seed 0: the pool member of T. It is
   also the seed-0 `hwa_lora` result on T when T is held out (same recipe, budget and seed: the
   run is reused, not repeated). Its own dev score is reported.
2. **Held-out task T.** The pool is the members of the other tasks (in `--tasks` order).
   Methods, each with the same steps, batch size, training examples and head learning rate:
   - `lorafusion`: the pool fused by trained coefficients and DoRA magnitudes
     (`train_fusion`, `FusionConfig` defaults; `--magnitude-lr` sets the magnitudes' lr, also
     `magnitude_only`'s), the pool on the crossbar when the checkout's
     `attach_pool` supports it (`pool_on_crossbar=None`);
   - `hwa_lora`: a LoRA trained through the hardware (the pool members' recipe);
   - `digital_lora`: the same LoRA recipe trained on the digital model (no hardware: no
     noise, no quantisation), then deployed: the analog model (pretrained weights on the
     crossbar) gets the trained LoRA and head, digital as in HWA-LoRA;
   - `head_only`: only the digital head is trained, on the analog model;
   - `magnitude_only`: the DoRA magnitudes and the head, with the fusion coefficients frozen
     at 0 (the pool contributes nothing; the digital pool is used so that a path that
     multiplies by 0 adds no simulated read noise).
3. **Evaluation.** Every trained model is programmed and read at t = 0 and t = 10 years
   (`drift_sweep`, `--trials` trials, reprogrammed each trial); a seed's value is the mean over
   its trials. The task's main metric (accuracy; MCC for CoLA; F1 for MRPC; Pearson for STS-B)
   on a fixed subsample of the dev set.
4. **Ablations** (held-out `--ablation-tasks`, seed 0): `sum` vs `lorahub`, `layer` and
   `global` vs `block` coefficients, no magnitudes, the pool digital vs on the crossbar, pool
   size K (the first K pool members in `--tasks` order).
5. **Diagnosis** (held-out `--diagnosis-task`, seed 0; off by default): learning-rate sweeps of
   the coefficients and magnitudes, the coefficient initialisation, and the same moves on the
   other methods (`BALANCE`).

Cells (one training run + its drift evaluation) are appended to `<out>/cells.jsonl` as they
finish; a rerun skips finished cells, so the run is resumable at cell granularity; the pool
members are saved under `<out>/pool/<task>` (a saved run) and `<out>/pool/all` (a `LoRAPool`).
After every cell the report (`lorafusion.md`, `lorafusion.json`, `lorafusion.png` in `--docs`)
is rewritten from the cells done so far, listing the cells still pending.

Budget (defaults): 100 steps of batch 16, sequence length 64 (batches trimmed to their longest
row), a fixed subsample of 1600 training examples (seed 0), 200 dev examples, 3 seeds, 3 drift
trials at t = 0 and 10 y; LoRA lr 1e-3, head lr 1e-2 for every method; the magnitudes' lr
`--magnitude-lr` (FusionConfig's default). The default run has 91 cells: 5 pool members (also
the seed-0 `hwa_lora`), 70 other held-out cells, 16 ablations; `--diagnosis-task sst2` adds 12.
Measured (2026-12-02, docs/results/pool100): the default run from an empty --out, 2 workers
of 1 thread on the 2-core machine with nothing else heavy running, took 5,665 s (1.57 h) from
start to the last worker's exit, within the 2.5 h target; its 91 cells add up to 11,190 s of
cell time (38-201 s each; the 5 seed-0 `hwa_lora` cells reuse the pool members).
`--pool-steps 300 --pool-train-examples 4800` (docs/results) adds 5 longer pool members
(6,403 s of cell time in all, up to 2,279 s each, measured on a busy machine). `--seeds 0,1`
or `--ablation-tasks sst2` cut the run.

Several workers may share one `--out` (each claims the next cell); start one per core:
    for i in 1 2; do OMP_NUM_THREADS=1 python python/experiments/lorafusion_glue.py \
        --glue-dir ../shared/data/glue --out results/lfglue --threads 1 & done

Usage:
    python python/experiments/lorafusion_glue.py --glue-dir ../shared/data/glue
    python python/experiments/lorafusion_glue.py --quick --glue-dir DIR --out /tmp/q   # smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import math
import os
import platform
import re
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from lorafusion_ext.nn.convert import attach_lora, attach_pool, is_head, trainable_parameters
from lorafusion_ext.evaluation.cost import crossbar_cost_of
from lorafusion_ext.data.glue import task_spec
from lorafusion_ext.hardware import PRESETS, HardwareConfig
from lorafusion_ext.models import DEFAULT_MODEL, load_classifier
from lorafusion_ext.nn.analog_pool import AnalogPoolLayer
from lorafusion_ext.nn.pool import LoRAPool
from lorafusion_ext.apps.pipelines import DataConfig, RunRecord, drift_evaluation, load_run, save_run, task_data
from lorafusion_ext.training.loop import TrainConfig, evaluate, train
from lorafusion_ext.training.methods import (
    FusionConfig,
    HWALoRAConfig,
    analog_classifier,
    fusion_coefficients,
    fusion_magnitudes,
    load_task_state,
    pool_from_models,
    task_state,
    train_fusion,
    train_hwa_lora,
)

# The folder's shared modules, also when a test loads this file by path.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cell_log import append_cell, load_cells  # noqa: E402
from process_lock import ProcessLock  # noqa: E402
from seed_stats import format_mean_std, mean_std  # noqa: E402

TASKS = ("sst2", "cola", "mrpc", "stsb", "rte")
METHODS = ("lorafusion", "hwa_lora", "digital_lora", "head_only", "magnitude_only")
TEN_YEARS = 315360000.0
# Runs whose settings.json predates the recorded fusion recipe ran the published magnitude lr.
LEGACY_MAGNITUDE_LR = 5e-3


# ---------------------------------------------------------------------- configuration
@dataclass
class Budget:
    """What every training run gets (pool members and every method alike)."""

    steps: int = 100
    batch_size: int = 16
    max_length: int = 64
    train_examples: int = 1600
    eval_examples: int = 200
    lora_lr: float = 1e-3
    head_lr: float = 1e-2
    seeds: tuple[int, ...] = (0, 1, 2)
    trials: int = 3
    data_seed: int = 0
    #: steps of the pool members (None: `steps`; then a member is also the seed-0 `hwa_lora`
    #: of its task; otherwise that seed is trained on its own with `steps`).
    pool_steps: int | None = None
    #: examples the pool members draw from (None: `train_examples`).
    pool_train_examples: int | None = None


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
    import_from: Path | None = None
    threads: int = 1  # torch threads per worker of the run that computed the cells


# ---------------------------------------------------------------------- cells
class PendingCell(Exception):
    """A cell that cannot run yet (e.g. its pool members are not trained): it stays pending."""


@dataclass(frozen=True)
class Cell:
    """One training run and its drift evaluation. `key` is unique and stable across reruns."""

    key: str
    kind: str  # "pool" | "held_out" | "ablation" | "diagnosis"
    task: str
    method: str
    seed: int
    variant: str = ""
    params: tuple[tuple[str, Any], ...] = ()

    def param(self, name: str, default: Any = None) -> Any:
        return dict(self.params).get(name, default)


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
    share the queue, and what an interrupted run has finished): the pool; seed 0 of
    `lorafusion`, `hwa_lora` (reused), `magnitude_only` and `head_only` on every task; seed 0
    of `digital_lora`; the capacity/optimisation diagnosis on `--diagnosis-task`; the other
    seeds of every method; then the other ablations and diagnosis cells."""
    cells = [Cell(f"pool/{t}", "pool", t, "hwa_lora", 0) for t in s.tasks]

    def held(seed: int, methods: tuple[str, ...]) -> list[Cell]:
        return [Cell(f"held_out/{t}/{m}/seed{seed}", "held_out", t, m, seed) for m in methods for t in s.tasks]

    seeds = list(s.budget.seeds)
    first = seeds[0]
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


def _held_out_budget(budget: dict) -> dict:
    return {k: v for k, v in budget.items() if k not in ("pool_steps", "pool_train_examples", "seeds")}


def _pool_budget(budget: dict) -> tuple:
    return (budget.get("pool_steps") or budget["steps"], budget.get("pool_train_examples") or budget["train_examples"])


def check_resume(s: Settings) -> None:
    """Refuse to continue a run in `--out` with another magnitude lr: its finished cells would be
    mixed with cells of a different recipe."""
    path = s.out / "settings.json"
    if not path.is_file():
        return
    theirs = json.loads(path.read_text()).get("magnitude_lr", LEGACY_MAGNITUDE_LR)
    if theirs != s.fusion.magnitude_lr:
        raise ValueError(f"--magnitude-lr {s.fusion.magnitude_lr:g}: the run in {s.out} used {theirs:g}; "
                         f"pass --magnitude-lr {theirs:g} to resume it, or another --out")


def import_cells(s: Settings, source: Path) -> int:
    """Append to this run's cells the pool-free held-out cells of the run in `source` when that
    run's per-task budget, model and hardware equal this one's: `hwa_lora`, `digital_lora`,
    `head_only`, and `magnitude_only` when it ran with this run's magnitude lr. Its pool members
    are imported too (copied to <out>/pool) when they had this run's tasks and pool budget, and
    become seed-0 `hwa_lora` cells when they were trained with the per-task budget. Returns how
    many cells were imported."""
    theirs = json.loads((source / "settings.json").read_text())
    mine = {"budget": dataclasses.asdict(s.budget), "model": s.model, "hardware": s.hardware_name}
    if (_held_out_budget(theirs["budget"]) != _held_out_budget(mine["budget"]) or theirs["model"] != mine["model"]
            or theirs["hardware"] != mine["hardware"]):
        raise ValueError(f"--import-from {source}: its budget/model/hardware differ from this run's; nothing imported")
    their_pool_is_hwa = _pool_budget(theirs["budget"]) == (theirs["budget"]["steps"], theirs["budget"]["train_examples"])
    same_pool = (_pool_budget(theirs["budget"]) == _pool_budget(mine["budget"])
                 and tuple(theirs.get("tasks", ())) == tuple(s.tasks))
    same_magnitude_lr = theirs.get("magnitude_lr", LEGACY_MAGNITUDE_LR) == s.fusion.magnitude_lr
    cells_path = s.out / "cells.jsonl"
    done, source_cells = load_cells(cells_path), load_cells(source / "cells.jsonl")
    count = 0
    for key, rec in source_cells.items():
        targets = []
        parts = key.split("/")
        if (parts[0] == "held_out" and parts[2] in POOL_FREE and "reused_from" not in rec
                and (parts[2] != "magnitude_only" or same_magnitude_lr)):
            targets.append(key)
        elif parts[0] == "pool":
            if their_pool_is_hwa:
                targets.append(f"held_out/{parts[1]}/hwa_lora/seed0")
            if same_pool and (source / "pool" / parts[1] / "run.json").is_file():
                dest = s.out / "pool" / parts[1]
                if not dest.exists():
                    # Copied whole, then renamed into place: an interrupted copy leaves no member.
                    tmp = s.out / "pool" / f".{parts[1]}.import-{os.getpid()}"
                    shutil.rmtree(tmp, ignore_errors=True)
                    shutil.copytree(source / "pool" / parts[1], tmp)
                    try:
                        os.replace(tmp, dest)
                    except OSError:  # another worker placed it first
                        shutil.rmtree(tmp, ignore_errors=True)
                if (dest / "run.json").is_file() and (dest / "task_state.pt").is_file():
                    targets.append(key)
        for target in targets:
            if target not in done:
                append_cell(cells_path, {**rec, "key": target, "imported_from": f"{source}:{key}"})
                done[target] = rec
                count += 1
    return count


# Several workers (processes) may share one --out: each claims a cell with an flock on
# <out>/claims/<key> (`process_lock.ProcessLock`), held while it computes the cell; the kernel
# frees the claim of a worker that dies, so no pid is trusted.
_CLAIMS: dict[Path, ProcessLock] = {}


def _claim_path(out: Path, key: str) -> Path:
    return out / "claims" / key.replace("/", "__")


def claim(out: Path, key: str) -> bool:
    path = _claim_path(out, key)
    if path in _CLAIMS:
        return True
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = ProcessLock(path)
    if not lock.try_acquire():
        return False
    _CLAIMS[path] = lock
    return True


def claimed_by_other(out: Path, key: str) -> bool:
    path = _claim_path(out, key)
    if path in _CLAIMS or not path.exists():
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # fails only while another process holds it
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def release(out: Path, key: str) -> None:
    lock = _CLAIMS.pop(_claim_path(out, key), None)
    if lock is not None:
        lock.release()


# ---------------------------------------------------------------------- training per method
def _data(s: Settings, task: str, tokenizer: Any, pool: bool = False):
    b = s.budget
    n = b.pool_train_examples if pool and b.pool_train_examples else b.train_examples
    return task_data(task, tokenizer, DataConfig(s.glue_dir, b.max_length, n, b.eval_examples, b.data_seed))


def _tcfg(s: Settings, seed: int, desc: str, pool: bool = False) -> TrainConfig:
    steps = s.budget.pool_steps if pool and s.budget.pool_steps else s.budget.steps
    return TrainConfig(steps=steps, batch_size=s.budget.batch_size, seed=seed, progress=s.progress, run_name=desc)


def _pool_is_hwa_seed0(s: Settings) -> bool:
    b = s.budget
    return (b.pool_steps in (None, b.steps) and b.pool_train_examples in (None, b.train_examples)
            and b.seeds and b.seeds[0] == 0)


def _lora_cfg(s: Settings) -> HWALoRAConfig:
    return HWALoRAConfig(lr=s.budget.lora_lr, head_lr=s.budget.head_lr)


def train_pool_member(s: Settings, task: str) -> tuple[nn.Module, Any]:
    """HWA-LoRA on `task`, seed 0, saved to <out>/pool/<task>."""
    spec = task_spec(task)
    model, tok = analog_classifier(s.model, spec, s.hardware, seed=0)
    _, train_set, dev = _data(s, task, tok, pool=True)
    cfg = _lora_cfg(s)
    train_hwa_lora(model, train_set, cfg, _tcfg(s, 0, f"pool {task}", pool=True), description=f"pool {task}")
    record = RunRecord("hwa-lora", spec.name, s.model, s.hardware.to_dict(), 0, lora=dataclasses.asdict(cfg),
                       metrics=evaluate(model, dev, spec.metrics), trainable=trainable_parameters(model))
    save_run(s.out / "pool" / task, record, model)
    return model, tok


def full_pool(s: Settings) -> LoRAPool:
    """The pool of every task's member (saved to <out>/pool/all once all members exist)."""
    folder = s.out / "pool" / "all"
    if (folder / "pool.safetensors").is_file():
        pool = LoRAPool.load(folder)
        if list(pool.adapter_names) == [task_spec(t).name for t in s.tasks]:
            return pool
    missing = [t for t in s.tasks if not (s.out / "pool" / t / "run.json").is_file()]
    if missing:
        raise PendingCell(f"pool members {missing} not trained yet")
    models = [load_run(s.out / "pool" / t)[1] for t in s.tasks]
    pool = pool_from_models(models, [task_spec(t).name for t in s.tasks])
    pool.save(folder)
    return pool


def pool_for(s: Settings, held_out: str, k: int | None = None) -> LoRAPool:
    """The members of every task but `held_out` (the first `k` of them), in `--tasks` order."""
    pool = full_pool(s)
    keep = [i for i, t in enumerate(s.tasks) if t != held_out][: k or None]
    layers = {n: (pool.layer(n).A[keep].clone(), pool.layer(n).B[keep].clone()) for n in pool.layer_names}
    return LoRAPool(layers, pool.alpha, [pool.adapter_names[i] for i in keep])


def _train_head_only(s: Settings, task: str, seed: int) -> tuple[nn.Module, Any]:
    spec = task_spec(task)
    model, tok = analog_classifier(s.model, spec, s.hardware, seed=seed)
    _, train_set, _ = _data(s, task, tok)
    for name, p in model.named_parameters():
        p.requires_grad_(is_head(name))
    head = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam([{"params": head, "lr": s.budget.head_lr}])
    train(model, train_set, opt, _tcfg(s, seed, f"head_only {task}"), description=f"head_only {task}")
    return model, tok


def _train_digital_lora(s: Settings, task: str, seed: int) -> tuple[nn.Module, Any]:
    spec = task_spec(task)
    cfg = _lora_cfg(s)
    digital, tok = load_classifier(s.model, spec.num_labels, seed=seed)
    _, train_set, _ = _data(s, task, tok)
    train_hwa_lora(digital, train_set, cfg, _tcfg(s, seed, f"digital_lora {task}"), description=f"digital_lora {task}")
    # Deployment: the pretrained weights on the crossbar, the trained LoRA and head digital.
    model, _ = analog_classifier(s.model, spec, s.hardware, seed=seed)
    attach_lora(model, cfg.rank, cfg.alpha, cfg.dropout, targets=tuple(cfg.targets))
    load_task_state(model, task_state(digital))
    return model, tok


def _train_hwa_lora(s: Settings, task: str, seed: int, lora_lr: float | None = None) -> tuple[nn.Module, Any]:
    spec = task_spec(task)
    model, tok = analog_classifier(s.model, spec, s.hardware, seed=seed)
    _, train_set, _ = _data(s, task, tok)
    cfg = _lora_cfg(s) if lora_lr is None else dataclasses.replace(_lora_cfg(s), lr=lora_lr)
    train_hwa_lora(model, train_set, cfg, _tcfg(s, seed, f"hwa_lora {task}"), description=f"hwa_lora {task}")
    return model, tok


def _train_magnitude_only(s: Settings, task: str, seed: int, magnitude_lr: float | None = None
                          ) -> tuple[nn.Module, Any]:
    spec = task_spec(task)
    pool = pool_for(s, task)
    model, tok = analog_classifier(s.model, spec, s.hardware, seed=seed)
    _, train_set, _ = _data(s, task, tok)
    attach_pool(model, pool, mode="lorahub", magnitude=True, granularity="block", init_coeff=0.0,
                pool_on_crossbar=False)
    for c in fusion_coefficients(model):
        c.requires_grad_(False)
    mags = fusion_magnitudes(model)
    head = [p for p in model.parameters() if p.requires_grad and all(p is not m for m in mags)]
    lr = s.fusion.magnitude_lr if magnitude_lr is None else magnitude_lr
    opt = torch.optim.Adam([{"params": mags, "lr": lr}, {"params": head, "lr": s.budget.head_lr}])
    train(model, train_set, opt, _tcfg(s, seed, f"magnitude_only {task}"), description=f"magnitude_only {task}")
    return model, tok


def _train_lorafusion(s: Settings, cell: Cell) -> tuple[nn.Module, Any]:
    task, seed = cell.task, cell.seed
    spec = task_spec(task)
    pool = pool_for(s, task, cell.param("K"))
    on_crossbar = cell.param("pool_on_crossbar", False if s.pool_digital else None)
    changes = {k: v for k, v in cell.params if k not in ("K", "pool_on_crossbar")}
    cfg = dataclasses.replace(s.fusion, pool_on_crossbar=on_crossbar, head_lr=s.budget.head_lr, **changes)
    model, tok = analog_classifier(s.model, spec, s.hardware, seed=seed)
    _, train_set, _ = _data(s, task, tok)
    train_fusion(model, pool, train_set, cfg, _tcfg(s, seed, f"lorafusion {task}"), description=f"lorafusion {task}")
    return model, tok


# ---------------------------------------------------------------------- cost
def cells_per_task(model: nn.Module, method: str) -> dict[str, int]:
    """Crossbar cells programmed once and per new task for `method`, from
    `lorafusion_ext.cost.crossbar_cost_of` (counted from the analog layers `model` holds, the
    pool's tiles included). LoRAs, heads, coefficients and magnitudes are digital."""
    report = crossbar_cost_of(model)
    rows = {m.method: m for m in report.methods}
    if method == "lorafusion":
        row = next(m for m in report.methods if m.method.startswith("LoRAFusion"))
        if not any(isinstance(m, AnalogPoolLayer) for m in model.modules()):
            row = rows["base model (deploy)"]  # a digital pool occupies no cell
    elif method in ("hwa_lora", "digital_lora"):
        row = rows["HWA-LoRA (digital LoRA)"]
    else:  # head and magnitudes are digital: nothing reprogrammed
        row = rows["base model (deploy)"]
    return {"cells_once": row.cells_once, "cells_per_task": row.cells_per_task}


# ---------------------------------------------------------------------- one cell
def run_cell(s: Settings, cell: Cell, done: dict[str, dict]) -> dict:
    t0 = time.perf_counter()
    spec = task_spec(cell.task)
    metric = spec.metrics[0]
    extra: dict[str, Any] = {}
    if cell.kind == "held_out" and cell.method == "hwa_lora" and cell.seed == 0 and _pool_is_hwa_seed0(s):
        # The pool member of this task is this run (same recipe, budget, seed): reuse it.
        src = done.get(f"pool/{cell.task}")
        if src is None:
            raise PendingCell(f"pool/{cell.task} not done yet")
        rec = {k: v for k, v in src.items() if k in ("t0", "t10y", "t0_trials", "t10y_trials", "trainable",
                                                       "cells_once", "cells_per_task", "dev")}
        return {**rec, "key": cell.key, "reused_from": src["key"], "metric": metric, "wall_s": 0.0}
    if s.import_from is not None and (cell.kind == "pool" or (cell.kind == "held_out" and cell.method in POOL_FREE)):
        theirs = [cell.key] + ([f"pool/{cell.task}"] if cell.method == "hwa_lora" and cell.seed == 0 else [])
        busy = [k for k in theirs if claimed_by_other(s.import_from, k)]
        if busy:  # the imported run is computing it: wait for the import instead of repeating it
            raise PendingCell(f"{busy[0]} is running in {s.import_from}")
    if cell.kind == "pool":
        saved = s.out / "pool" / cell.task
        if (saved / "run.json").is_file() and (saved / "task_state.pt").is_file():
            # Trained and saved before an interruption: evaluate the saved member, do not retrain.
            record, model, tok = load_run(saved)
            extra["dev_at_save"] = record.metrics
        else:
            model, tok = train_pool_member(s, cell.task)
    elif cell.method == "lorafusion":
        model, tok = _train_lorafusion(s, cell)
        extra["pool"] = pool_for(s, cell.task, cell.param("K")).adapter_names
        extra["pool_on_crossbar"] = cell.param("pool_on_crossbar", False if s.pool_digital else None)
    else:
        train_fn: Callable[[Settings, str, int], tuple[nn.Module, Any]] = {
            "hwa_lora": _train_hwa_lora, "digital_lora": _train_digital_lora, "head_only": _train_head_only,
            "magnitude_only": _train_magnitude_only}[cell.method]
        model, tok = train_fn(s, cell.task, cell.seed, **dict(cell.params))
    _, _, dev = _data(s, cell.task, tok)
    # The analog model's score before programming: reported for the pool members only.
    dev_metrics = None
    if cell.kind == "pool":
        dev_metrics = extra.pop("dev_at_save", None) or evaluate(model, dev, spec.metrics)
    sweep = drift_evaluation(model, dev, spec, (0.0, TEN_YEARS), s.budget.trials, seed=cell.seed, progress=False)
    t0_trials = [row[0] for row in sweep.values]
    t10_trials = [row[1] for row in sweep.values]
    tr = trainable_parameters(model)
    cost = cells_per_task(model, cell.method)
    return {
        "key": cell.key, "metric": metric, "dev": dev_metrics,
        "t0": float(sum(t0_trials) / len(t0_trials)), "t10y": float(sum(t10_trials) / len(t10_trials)),
        "t0_trials": t0_trials, "t10y_trials": t10_trials, "trainable": tr["total"], "trainable_by_kind": tr,
        **cost, **extra, "wall_s": time.perf_counter() - t0,
    }


# ---------------------------------------------------------------------- report
def _fmt(xs: list[float]) -> str:
    if not xs:
        return "pending"
    return format_mean_std(xs) + ("" if len(xs) > 1 else " (1 seed)")


def collect(s: Settings, cells: list[Cell], done: dict[str, dict]) -> dict:
    """The JSON report: held_out, ablations (incl. diagnosis), pool, pending cells."""
    held: dict[str, dict] = {}
    for t in s.tasks:
        metric = task_spec(t).metrics[0]
        for m in METHODS:
            recs = [done.get(f"held_out/{t}/{m}/seed{seed}") for seed in s.budget.seeds]
            got = [r for r in recs if r is not None]
            entry = {"metric": metric, "t0": [r["t0"] for r in got], "t10y": [r["t10y"] for r in got],
                     "seeds": [seed for seed, r in zip(s.budget.seeds, recs) if r is not None],
                     "trainable": got[0]["trainable"] if got else None,
                     "cells_per_task": got[0]["cells_per_task"] if got else None,
                     "cells_once": got[0]["cells_once"] if got else None}
            held.setdefault(t, {})[m] = entry
    ablations: dict[str, dict] = {}
    for c in cells:
        if c.kind in ("ablation", "diagnosis") and c.key in done:
            r = done[c.key]
            ablations.setdefault(c.kind, {}).setdefault(c.task, {})[c.variant] = {
                "metric": r["metric"], "t0": [r["t0"]], "t10y": [r["t10y"]], "trainable": r["trainable"],
                "params": dict(c.params), "seeds": [0]}
    pool = {c.task: {k: done[c.key][k] for k in ("metric", "dev", "t0", "t10y")}
            for c in cells if c.kind == "pool" and c.key in done}
    pending = [c.key for c in cells if c.key not in done]
    imported = {k: r["imported_from"] for k, r in done.items() if "imported_from" in r}
    wall = sum(r.get("wall_s", 0.0) for r in done.values())
    ends = [r["finished_at"] for r in done.values() if "finished_at" in r]
    span = (max(ends) - min(ends)) if len(ends) > 1 else None
    # First computed cell's start to the last one's end: the run's wall clock when it ran in one go.
    computed = [r for r in done.values()
                if "finished_at" in r and "imported_from" not in r and "reused_from" not in r]
    elapsed = (max(r["finished_at"] for r in computed) - min(r["finished_at"] - r.get("wall_s", 0.0) for r in computed)
               if computed else None)
    return {"held_out": held, "ablations": ablations, "pool": pool, "budget": dataclasses.asdict(s.budget),
            "fusion_config": dataclasses.asdict(s.fusion), "hardware": s.hardware_name, "model": s.model,
            "tasks": list(s.tasks), "complete": not pending, "pending": pending, "imported": imported,
            "command": s.command,
            "wall_s": wall, "span_s": span, "elapsed_s": elapsed,
            "workers": len({r.get("worker") for r in done.values() if "worker" in r}), "threads": s.threads,
            "machine": _machine()}


def _machine() -> str:
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs visible, torch {torch.__version__}"


def _plot(path: Path, res: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(res["held_out"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    width = 0.8 / len(METHODS)
    for ax, when in zip(axes, ("t0", "t10y")):
        for j, m in enumerate(METHODS):
            xs, ys, es = [], [], []
            for i, t in enumerate(tasks):
                vals = res["held_out"][t][m][when]
                if vals:
                    mean, sd = mean_std(vals)
                    xs.append(i + (j - (len(METHODS) - 1) / 2) * width)
                    ys.append(mean)
                    es.append(0.0 if math.isnan(sd) else sd)
            ax.bar(xs, ys, width, yerr=es, capsize=2, label=m)
        ax.set_xticks(range(len(tasks)))
        ax.set_xticklabels([f"{t}\n({res['held_out'][t][METHODS[0]]['metric']})" for t in tasks])
        ax.set_title({"t0": "t = 0", "t10y": "t = 10 years"}[when])
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("dev metric (mean ± std over seeds)")
    axes[1].legend(fontsize=8)
    fig.suptitle("Held-out GLUE task: LoRAFusion vs baselines on the analog model")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(s: Settings, cells: list[Cell], done: dict[str, dict]) -> dict:
    res = collect(s, cells, done)
    if (s.out / "pool" / "all" / "pool.safetensors").is_file():
        res["pool_span"] = pool_span(LoRAPool.load(s.out / "pool" / "all"))
    s.docs.mkdir(parents=True, exist_ok=True)
    (s.docs / "lorafusion.json").write_text(json.dumps(res, indent=2) + "\n")
    _plot(s.docs / "lorafusion.png", res)
    b = s.budget
    status = ("**Complete**: every cell below finished." if res["complete"] else
              f"**Incomplete**: {len(res['pending'])} of {len(cells)} cells are pending (listed at the end); "
              "tables show only finished cells, and a method with fewer seeds says so. Rerun the command to "
              "complete them (finished cells are skipped).")
    lines = [
        "# LoRAFusion on GLUE: leave-one-out reproduction on the analog model",
        "",
        status,
        "",
        f"Model `{s.model}`, every linear layer analog (`{s.hardware_name}`), heads digital. Tasks: "
        f"{', '.join(s.tasks)}; each held out in turn, the pool being the HWA-LoRAs of the others "
        f"(K = {len(s.tasks) - 1}).",
        "",
        ("Budget, identical for every method and every pool member: " if _pool_is_hwa_seed0(s) else
         f"Pool members: {b.pool_steps or b.steps} steps on at most {b.pool_train_examples or b.train_examples} "
         "examples. Budget, identical for every method on the held-out task: ")
        + f"{b.steps} steps of batch {b.batch_size}, "
        f"sequence length {b.max_length}, at most {b.train_examples} training examples (a fixed subsample, "
        f"seed {b.data_seed}), head learning rate {b.head_lr:g}; LoRA (rank 8, alpha 32, all linear layers) "
        f"learning rate {b.lora_lr:g}; LoRAFusion `FusionConfig` {_fusion_text(s.fusion)}. Dev metric on at most "
        f"{b.eval_examples} dev examples (fixed subsample). Seeds {list(b.seeds)}; each seed's value is the mean "
        f"over {b.trials} programming + drift trials (reprogrammed each trial) at t = 0 and t = 10 years.",
        "",
        "Methods: `lorafusion` (pool fused by coefficients + DoRA magnitudes, pool "
        + ("digital: `--pool-digital`" if s.pool_digital else "on the crossbar") + "), `hwa_lora` (LoRA trained "
        "through the hardware" + ("; its seed-0 run is the pool member of that task, reused" if _pool_is_hwa_seed0(s)
                                  else "") + "), `digital_lora` (the same "
        "LoRA recipe trained on the digital model, then deployed with the pretrained weights on the crossbar), "
        "`head_only` (only the head), `magnitude_only` (DoRA magnitudes + head, coefficients frozen at 0).",
        "",
        "## Pool members (HWA-LoRA per task, seed 0)",
        "",
        "| task | metric | dev (analog, not programmed) | t = 0 | t = 10 y |",
        "|---|---|---|---|---|",
    ]
    for t in s.tasks:
        p = res["pool"].get(t)
        lines.append(f"| {t} | {task_spec(t).metrics[0]} | " + (
            f"{p['dev'][p['metric']]:.3f} | {p['t0']:.3f} | {p['t10y']:.3f} |" if p else "pending | pending | pending |"))
    lines += ["", "## Held-out task: mean ± std over seeds", "",
              "| task | method | t = 0 | t = 10 y | trainable params | cells programmed once | cells reprogrammed per task |",
              "|---|---|---|---|---|---|---|"]
    for t in s.tasks:
        for m in METHODS:
            e = res["held_out"][t][m]
            tr = "" if e["trainable"] is None else f"{e['trainable']:,}"
            cp = "" if e["cells_per_task"] is None else f"{e['cells_per_task']:,}"
            co = "" if e["cells_once"] is None else f"{e['cells_once']:,}"
            lines.append(f"| {t} ({e['metric']}) | {m} | {_fmt(e['t0'])} | {_fmt(e['t10y'])} | {tr} | {co} | {cp} |")
    gap = _gap(res, s)
    if gap:
        lines += ["", gap]
    for kind, title in (("ablation", "Ablations (seed 0; the `lorafusion` seed-0 cell is the reference)"),
                        ("diagnosis", "Diagnosis (seed 0)")):
        block = res["ablations"].get(kind)
        if not block:
            continue
        lines += ["", f"## {title}", "", "| held-out task | variant | t = 0 | t = 10 y | trainable |", "|---|---|---|---|---|"]
        for t, variants in block.items():
            ref = done.get(f"held_out/{t}/lorafusion/seed0")
            if ref:
                lines.append(f"| {t} | reference (`lorafusion` seed 0) | {ref['t0']:.3f} | {ref['t10y']:.3f} | {ref['trainable']:,} |")
            for v, e in variants.items():
                lines.append(f"| {t} | {v} | {e['t0'][0]:.3f} | {e['t10y'][0]:.3f} | {e['trainable']:,} |")
    span = res.get("pool_span")
    if span:
        lines += ["", "## What the pool can express (weights only, no training)", "",
                  "Fraction of each task's own HWA-LoRA update ΔW = s·B·A that the other pool members can "
                  "reproduce by least squares (`pool_span`): per-layer coefficients (`sum` mode) and one global "
                  "vector; and the largest |cosine similarity| of its flattened update with another member's.", "",
                  "| held-out task | explained, per-layer c | explained, global c | max abs cosine to another member |",
                  "|---|---|---|---|"]
        for t in span["members"]:
            cos = max(abs(v) for k, v in span["cosine"][t].items() if k != t)
            lines.append(f"| {t} | {span['explained_layer'][t]:.3f} | {span['explained_global'][t]:.3f} | {cos:.3f} |")
    lines += ["", "![held-out results](lorafusion.png)", "",
              "## Reproduce", "", "```", s.command, "```", "",
              f"Wall time of the finished cells: {res['wall_s']:.0f} s (`wall_s`: the sum of each cell's own wall "
              f"time; cells ran in {res['workers']} worker process(es) of {res['threads']} torch thread(s) each, "
              f"sharing the CPUs with other jobs" + (f"; first to last finished cell: {res['span_s']:.0f} s" if res['span_s'] else "")
              + (f"; first cell's start to last cell's end: {res['elapsed_s']:.0f} s ({res['elapsed_s'] / 3600:.2f} h)"
                 if res.get('elapsed_s') else "")
              + f"). Machine: {res['machine']}."]
    if res["imported"]:
        source_cmd = ""
        if s.import_from is not None and (s.import_from / "settings.json").is_file():
            source_cmd = json.loads((s.import_from / "settings.json").read_text()).get("command", "")
        lines += ["", f"{len(res['imported'])} cells were imported (`--import-from`) from a run with the same per-task "
                  "budget, model and hardware (same training, seed and data, so the same result); the JSON's "
                  "`imported` maps each to its source" + (f", written by `{source_cmd}`" if source_cmd else "") + "."]
    if res["pending"]:
        lines += ["", "## Pending cells", "", ", ".join(f"`{k}`" for k in res["pending"])]
    (s.docs / "lorafusion.md").write_text("\n".join(lines) + "\n")
    return res


def _fusion_text(f: FusionConfig) -> str:
    return ", ".join(f"{k} {v}" for k, v in dataclasses.asdict(f).items() if k != "head_lr")


def _gap(res: dict, s: Settings) -> str:
    """Mean gap (points) of lorafusion to hwa_lora at t = 0 over the tasks where both exist."""
    diffs = []
    for t in s.tasks:
        a, b = res["held_out"][t]["lorafusion"]["t0"], res["held_out"][t]["hwa_lora"]["t0"]
        if a and b:
            diffs.append(100 * (mean_std(b)[0] - mean_std(a)[0]))
    if not diffs:
        return ""
    return (f"Mean gap `hwa_lora` − `lorafusion` at t = 0 over {len(diffs)} task(s) with both: "
            f"{sum(diffs) / len(diffs):.1f} points (metric × 100).")


# ---------------------------------------------------------------------- pool span (diagnosis)
@torch.no_grad()
def pool_span(pool: LoRAPool) -> dict:
    """How much of each member's weight update ΔW_T = s B_T A_T the other members can express.

    For held-out T, per layer: the least-squares fit min_c ‖ΔW_T − Σ_k c_k ΔW_k‖_F over the
    other members k (`sum` mode with one coefficient per layer: a superset of what `block`
    and `global` coefficients can reach); `explained_layer` is 1 − Σ residual² / Σ ‖ΔW_T‖²
    over the layers; `explained_global` the same with one coefficient vector for the whole
    model. `cosine` is the cosine similarity of the flattened updates of every member pair.
    A small explained fraction means the pool cannot reproduce the held-out task's own LoRA
    update: the fusion must find another solution or rely on magnitudes and head."""
    names = list(pool.adapter_names)
    K = len(names)
    flat = {n: (pool.layer(n).B.double() @ pool.layer(n).A.double()).reshape(K, -1) for n in pool.layer_names}
    gram_layers = {n: v @ v.t() for n, v in flat.items()}  # [K, K] per layer
    gram_total = sum(gram_layers.values())
    out: dict[str, Any] = {"members": names, "explained_layer": {}, "explained_global": {}}
    for t in range(K):
        others = [k for k in range(K) if k != t]
        target_sq = float(gram_total[t, t])
        res_layer = 0.0
        for g in gram_layers.values():
            G = g[others][:, others]
            b = g[others, t]
            c = torch.linalg.lstsq(G, b.unsqueeze(1)).solution.squeeze(1)
            res_layer += float(g[t, t] - 2 * c @ b + c @ G @ c)
        G = gram_total[others][:, others]
        b = gram_total[others, t]
        c = torch.linalg.lstsq(G, b.unsqueeze(1)).solution.squeeze(1)
        res_global = float(gram_total[t, t] - 2 * c @ b + c @ G @ c)
        out["explained_layer"][names[t]] = 1 - res_layer / target_sq
        out["explained_global"][names[t]] = 1 - res_global / target_sq
    norms = gram_total.diagonal().sqrt()
    out["cosine"] = {names[i]: {names[j]: float(gram_total[i, j] / (norms[i] * norms[j])) for j in range(K)}
                     for i in range(K)}
    return out


# ---------------------------------------------------------------------- the demo's pool
def export_pool(s: Settings, held_out: str, folder: Path) -> Path:
    """Write the pool for held-out `held_out` (the other members), their heads and their
    provenance into `folder`, as `lorafusion_ext.assets.load_packaged_pool` reads it."""
    from safetensors.torch import save_file

    from lorafusion_ext.assets import HEADS, PROVENANCE

    pool = pool_for(s, held_out)
    done = load_cells(s.out / "cells.jsonl")
    heads, members = {}, {}
    for t in s.tasks:
        if t == held_out:
            continue
        state = torch.load(s.out / "pool" / t / "task_state.pt", weights_only=True)
        heads[f"{task_spec(t).name}.weight"] = state["classifier.weight"].contiguous()
        heads[f"{task_spec(t).name}.bias"] = state["classifier.bias"].contiguous()
        rec = done[f"pool/{t}"]
        members[task_spec(t).name] = {k: rec[k] for k in ("metric", "dev", "t0", "t10y")}
    pool.save(folder)
    save_file(heads, str(folder / HEADS))
    settings = json.loads((s.out / "settings.json").read_text())
    # The run's own command, less what the pool does not depend on (imports from another run).
    pool_command = re.sub(r" --import-from \S+", "", settings.get("command", "python python/experiments/lorafusion_glue.py"))
    provenance = {
        "source": "python/experiments/lorafusion_glue.py (pool members: HWA-LoRA per task, seed 0)",
        "regenerate": f"{pool_command} --only pool/ && python python/experiments/lorafusion_glue.py "
                      f"--glue-dir {shlex.quote(s.glue_dir)} --out {s.out} --export-pool {folder} "
                      f"--export-held-out {held_out}",
        "model": settings["model"], "hardware": settings["hardware"], "budget": settings["budget"],
        "held_out": task_spec(held_out).name, "members": members,
        "lora": {"rank": pool.rank, "alpha": pool.alpha, "targets": "every linear layer but the head"},
    }
    (folder / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n")
    for f in folder.iterdir():
        f.chmod(0o644)  # shipped in the package: readable by every user
    return folder


# ---------------------------------------------------------------------- quick mode
_WORDS = ("the a an is was of and to in it that he she they not no yes good bad movie film man woman said "
          "company year new first one two people will would can could").split()


def tiny_bert(folder: Path) -> str:
    """A 2-layer BERT (hidden 32), randomly initialised (seed 0), saved as a local model."""
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_WORDS, *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"],
             *"abcdefghijklmnopqrstuvwxyz.,'"]
    (folder / "vocab.txt").write_text("\n".join(vocab))
    transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=64)
    transformers.BertModel(cfg).save_pretrained(folder)
    return str(folder)


# ---------------------------------------------------------------------- main
def parse(argv: list[str] | None) -> Settings:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--glue-dir", required=True, help="GLUE folder in the official layout")
    p.add_argument("--model", default=None, help=f"model id or folder (default {DEFAULT_MODEL}; --quick: a tiny random BERT)")
    p.add_argument("--hardware", default="pcm_paper", choices=PRESETS)
    p.add_argument("--out", default="results/lorafusion_glue", help="checkpoints, pool, cells.jsonl")
    p.add_argument("--docs", default=None, help="where lorafusion.md/json/png go (default docs/results; --quick: --out)")
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--ablation-tasks", default="sst2,stsb",
                   help="held-out tasks of the ablations (default: the two on which every method learns above "
                        "chance at the default budget)")
    p.add_argument("--diagnosis-task", default="",
                   help="held-out task of the learning-rate diagnosis (e.g. sst2; default none: its results, "
                        "run with --diagnosis-task sst2, are docs/results/lorafusion_magnitude_lr_5e-3.md)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--train-examples", type=int, default=None)
    p.add_argument("--eval-examples", type=int, default=None)
    p.add_argument("--seeds", default=None, help="comma-separated, default 0,1,2")
    p.add_argument("--trials", type=int, default=None)
    p.add_argument("--pool-steps", type=int, default=None,
                   help="steps of the pool members (default --steps; when they differ, the pool members are not "
                        "reused as the seed-0 hwa_lora)")
    p.add_argument("--pool-train-examples", type=int, default=None)
    p.add_argument("--magnitude-lr", type=float, default=FusionConfig().magnitude_lr,
                   help="learning rate of the DoRA magnitudes (lorafusion and magnitude_only); "
                        "docs/results/lorafusion_magnitude_lr_5e-3.md ran 5e-3")
    p.add_argument("--pool-digital", action="store_true", help="run LoRAFusion's pool digitally (ablation)")
    p.add_argument("--only", default="", help="comma-separated cell-key prefixes to run (e.g. pool/,held_out/rte/)")
    p.add_argument("--export-pool", default=None, help="write the pool without --export-held-out (and its heads) here, then stop")
    p.add_argument("--export-held-out", default="sst2")
    p.add_argument("--report", action="store_true", help="only rewrite the report from the finished cells")
    p.add_argument("--import-from", default=None,
                   help="another run's --out: import its pool-free held-out cells (same per-task budget)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny random BERT, 2 steps, tiny subsets")
    a = p.parse_args(argv)
    b = Budget()
    if a.quick:
        b = Budget(steps=2, batch_size=4, max_length=24, train_examples=16, eval_examples=8, seeds=(0, 1), trials=1)
    for name in ("steps", "batch_size", "max_length", "train_examples", "eval_examples", "trials", "pool_steps",
                 "pool_train_examples"):
        v = getattr(a, name)
        if v is not None:
            if v < 1:
                p.error(f"--{name.replace('_', '-')} = {v}; expected a positive integer")
            setattr(b, name, v)
    if a.seeds:
        b.seeds = tuple(int(x) for x in a.seeds.split(","))
    tasks = tuple(t.strip().lower() for t in a.tasks.split(",") if t.strip())
    if a.quick and a.tasks == ",".join(TASKS):
        tasks = ("sst2", "mrpc", "rte")
    for t in tasks:
        task_spec(t)
    if len(tasks) < 2:
        p.error(f"--tasks {a.tasks!r}: leave-one-out needs at least 2 tasks")
    abl = tuple(t for t in a.ablation_tasks.split(",") if t)
    if a.quick and a.ablation_tasks == "sst2,stsb":
        abl = ("rte",)
    if a.quick and a.diagnosis_task == "sst2":
        a.diagnosis_task = ""  # the diagnosis cells take the ablations' code path
    if any(t not in tasks for t in abl) or (a.diagnosis_task and a.diagnosis_task not in tasks):
        p.error(f"--ablation-tasks {abl} / --diagnosis-task {a.diagnosis_task!r}: expected tasks among {tasks}")
    if not os.path.isdir(a.glue_dir):
        p.error(f"--glue-dir {a.glue_dir!r} is not a folder")
    out = Path(a.out)
    model = a.model
    if model is None:
        model = tiny_bert(out / "tiny_bert") if a.quick else DEFAULT_MODEL
    docs = Path(a.docs) if a.docs else (out if a.quick else Path("docs/results"))
    torch.set_num_threads(a.threads)
    argv_list = sys.argv[1:] if argv is None else argv
    command = "python python/experiments/lorafusion_glue.py " + " ".join(shlex.quote(x) for x in argv_list)
    s = Settings(model=model, glue_dir=a.glue_dir, hardware_name=a.hardware, out=out, docs=docs, tasks=tasks,
                 ablation_tasks=abl, diagnosis_task=a.diagnosis_task or None, budget=b,
                 fusion=FusionConfig(magnitude_lr=a.magnitude_lr),
                 pool_digital=a.pool_digital, only=tuple(x for x in a.only.split(",") if x), progress=a.progress,
                 command=command, threads=a.threads)
    s.hardware = HardwareConfig.preset(a.hardware)
    s.export = (Path(a.export_pool), a.export_held_out) if a.export_pool else None
    s.report_only = a.report
    s.import_from = Path(a.import_from) if a.import_from else None
    return s


def main(argv: list[str] | None = None) -> dict:
    s = parse(argv)
    s.out.mkdir(parents=True, exist_ok=True)
    if s.export is not None:
        folder = export_pool(s, s.export[1], s.export[0])
        print(f"[lorafusion_glue] pool written to {folder}")
        return {"exported": str(folder)}
    if s.report_only:
        settings_path = s.out / "settings.json"
        if settings_path.is_file():  # the command and recipe that ran the cells, not this report call's
            recorded = json.loads(settings_path.read_text())
            s.command = recorded.get("command", s.command)
            # Runs recorded before the field: the --threads of their command (argparse default 2).
            m = re.search(r"--threads[ =](\d+)", s.command)
            s.threads = recorded.get("threads", int(m.group(1)) if m else 2)
            s.fusion = dataclasses.replace(s.fusion, magnitude_lr=recorded.get("magnitude_lr", LEGACY_MAGNITUDE_LR))
        if s.import_from is not None:
            import_cells(s, s.import_from)
        done = load_cells(s.out / "cells.jsonl")
        for t in s.tasks:  # the seed-0 hwa_lora that a finished pool member already is
            key = f"held_out/{t}/hwa_lora/seed0"
            if _pool_is_hwa_seed0(s) and key not in done and f"pool/{t}" in done:
                append_cell(s.out / "cells.jsonl", run_cell(s, Cell(key, "held_out", t, "hwa_lora", 0), done))
        return write_report(s, plan(dataclasses.replace(s, only=())), load_cells(s.out / "cells.jsonl"))
    check_resume(s)
    (s.out / "settings.json").write_text(json.dumps({"budget": dataclasses.asdict(s.budget), "tasks": s.tasks,
                                                     "model": s.model, "hardware": s.hardware_name,
                                                     "magnitude_lr": s.fusion.magnitude_lr,
                                                     "command": s.command, "threads": s.threads}, indent=2))
    cells_path = s.out / "cells.jsonl"
    all_cells = plan(dataclasses.replace(s, only=()))
    cells = plan(s)
    while True:
        ran, waiting = False, False
        if s.import_from is not None:
            n = import_cells(s, s.import_from)
            if n:
                print(f"[lorafusion_glue] imported {n} pool-free cells from {s.import_from}", flush=True)
        for cell in cells:
            done = load_cells(cells_path)
            if cell.key in done:
                continue
            if claimed_by_other(s.out, cell.key):
                waiting = True
                continue
            if not claim(s.out, cell.key):
                waiting = True
                continue
            try:
                rec = run_cell(s, cell, done)
            except PendingCell as why:
                release(s.out, cell.key)
                waiting = waiting or any(claimed_by_other(s.out, c.key) for c in cells) or (
                    s.import_from is not None and any(claimed_by_other(s.import_from, c.key) for c in all_cells))
                print(f"[lorafusion_glue] {cell.key}: waits ({why})", flush=True)
                continue
            rec["finished_at"] = time.time()
            rec["worker"] = os.getpid()
            append_cell(cells_path, rec)
            release(s.out, cell.key)
            print(f"[lorafusion_glue] {cell.key}: t0 {rec['t0']:.4f} t10y {rec['t10y']:.4f} "
                  f"({rec['metric']}, {rec['wall_s']:.0f} s)", flush=True)
            # Other workers append cells too: the report is written from the file.
            write_report(s, all_cells, load_cells(cells_path))
            ran = True
            break  # back to the top: the highest-priority cell that can run now
        if ran:
            continue
        if not waiting:
            break
        time.sleep(20)  # cells of other workers (e.g. pool members) are in flight
    return write_report(s, all_cells, load_cells(cells_path))


if __name__ == "__main__":
    main()
