"""LoRAFusion reproduction on GLUE: leave-one-out over SST-2, CoLA, MRPC, STS-B and RTE
(issue 10, items 4 and 5).

Protocol (all on the analog model: every linear layer an `AnalogLinear` with `--hardware`,
heads digital):

1. **Pool.** For every task T, one HWA-LoRA (rank 8, alpha 32, all linear layers) trained
   through the hardware on T with the common budget and seed 0: the pool member of T. It is
   also the seed-0 `hwa_lora` result on T when T is held out (same recipe, budget and seed: the
   run is reused, not repeated), unless T's pool member has other steps (`--pool-steps`, N or
   per task) or examples than T's held-out runs: then that seed is a run of its own, task by
   task. Its own dev score is reported.
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

Cells (one training run + its drift evaluation) are stored as they finish, one JSON file each
under `<out>/cells/` (`harness.RunFolder`; runs made before kept them in `<out>/cells.jsonl`,
still read); a rerun skips finished cells, so the run is resumable at cell granularity; the pool
members are saved under `<out>/pool/<task>` (a saved run) and `<out>/pool/all` (a `LoRAPool`).
After every cell the report (`lorafusion.md`, `.json`, `.png` in `--docs`; `--page` renames them)
is rewritten from the cells done so far, listing the cells still pending. A fresh clone whose
`--out` has no finished cell takes them from the committed report of the same recipe
(`docs/results/**/lorafusion*.json`), so the command recorded in a page computes only what that
page lacks.

**At a real budget** (issue 25; the page `lorafusion.md`, the short-budget one being
`lorafusion_short_budget.md`, written with `--page lorafusion_short_budget`): the budget sweep's
recipe (batch 32, every training and dev example, length grouping 50, head lr 1e-3) with steps
per task (`--steps sst2=270,stsb=540,...`), the pool members trained to convergence (the sweep's
largest budget of each task, `--pool-steps sst2=1000,stsb=540,...`): SST-2 is held out at a
shorter budget than its pool member's (the compute cap of issue 25), so its seed-0 `hwa_lora` is
a run of its own, while the pool member of every other task is its seed-0 `hwa_lora`.
`--from-sweep DIR` takes from a budget-sweep run folder every cell it computed under the
identical recipe (`lfglue.from_sweep`: held-out `hwa_lora` / `digital_lora` at the held-out
steps, the pool members from its stored adapters and the full fine-tunes at the pool steps; a
folder of another recipe is refused; while the sweep runs, the cells it is still to compute are
waited for), and the page lists them. `--skip-unlearnable` computes each task's chance level and
full fine-tune first and leaves out the held-out cells of a task the fine-tune does not learn;
`--ablation-tasks none` runs no ablation (the page points to the short-budget page's).

The protocol's pieces are in `lfglue/`: `protocol` (budget, settings, cells), `methods` (the
training of each method, the pool, the crossbar cost), `report` (JSON, page, plot, pool span),
`from_sweep` (the cells taken from the budget sweep), `export` (the demo's pool); the run folder,
claims, spreads and page writing are the harness's.

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

`--plan` lists what each cell of a command's plan would be (finished in `--out`, reused as the
pool member it is, taken from `--from-sweep`, the sweep's but not finished yet, or computed here
with its steps), reading files only: nothing is written, no process looked at.

Several workers may share one `--out` (each claims the next cell; the script has no `--workers`
option); start one per core:
    for i in 1 2; do OMP_NUM_THREADS=1 python python/experiments/lorafusion_glue.py \
        --glue-dir ../shared/data/glue --out results/lfglue --threads 1 & done

Usage:
    python python/experiments/lorafusion_glue.py --glue-dir ../shared/data/glue --page lorafusion_short_budget \
        --pool-steps 300 --pool-train-examples 4800 --threads 1   # the short budget
    for i in 1 2; do OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python python/experiments/lorafusion_glue.py \
        --glue-dir ../shared/data/glue --out results/lfglue_real --from-sweep results/budget_sweep \
        --steps sst2=270,cola=804,mrpc=345,stsb=540,rte=234 \
        --pool-steps sst2=1000,cola=804,mrpc=345,stsb=540,rte=234 \
        --batch-size 32 --max-length 64 --train-examples all --eval-examples all --group-by-length 50 \
        --head-lr 1e-3 --lora-lr 1e-3 --seeds 0,1,2 --trials 3 --ablation-tasks none --skip-unlearnable \
        --threads 1 & done; wait   # the real budget, two workers sharing --out (no --workers option)
    python python/experiments/lorafusion_glue.py --quick --glue-dir DIR --out /tmp/q   # smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

from lorafusion_ext import HardwareConfig, trainable_parameters
from lorafusion_ext.data.glue import task_spec
from lorafusion_ext.hardware import PRESETS
from lorafusion_ext.models import DEFAULT_MODEL
from lorafusion_ext.apps.pipelines import drift_evaluation, load_run
from lorafusion_ext.training.loop import evaluate
from lorafusion_ext.training.methods import FusionConfig

# The folder's shared modules, also when a test loads this file by path.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (Cell, Claims, PendingCell, RunFolder, command_line, committed_reports, read_json,  # noqa: E402
                     record_settings, recorded_settings, run_queue, write_json_atomic)
from harness.tiny_models import tiny_bert  # noqa: E402
from lfglue.export import export_pool  # noqa: E402
from lfglue import from_sweep  # noqa: E402
from lfglue.methods import (TRAIN, cells_per_task, chance_level, data, full_finetune, lora_model, pool_for,  # noqa: E402
                            pool_member_from_state, train_lorafusion, train_pool_member)
from lfglue.protocol import (LEGACY_MAGNITUDE_LR, METHODS, POOL_FREE, TASKS, TEN_YEARS, Budget,  # noqa: E402
                             Settings, _held_out_budget, _pool_budget, budget_from_dict, comparable_budget,
                             fixed_pool_steps, parse_steps, plan, pool_is_hwa_seed0, pool_member_is_hwa,
                             run_folder, steps_of)
from lfglue.report import ADOPTED, pool_span, reference_levels, write_report  # noqa: E402

__all__ = ["METHODS", "TASKS", "Budget", "Settings", "plan", "run_folder", "claims", "pool_span", "write_report",
           "export_pool", "import_cells", "adopt_committed", "cells_from_report", "run_cell", "parse", "main"]


def claims(s: Settings) -> Claims:
    """Several workers (processes) may share one --out: each claims a cell with an flock on
    <out>/claims/<key> (`harness.Claims`), held while it computes the cell; the kernel frees the
    claim of a worker that dies, so no pid is trusted."""
    return Claims(s.out / "claims")


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
    become seed-0 `hwa_lora` cells of the tasks whose member was trained with the held-out budget
    (`pool_member_is_hwa`, per task). Returns how many cells were imported."""
    theirs = recorded_settings(source)
    if theirs is None:  # e.g. a fresh clone, whose cells came from the committed report instead
        print(f"[lorafusion_glue] --import-from {source}: no run there; nothing imported", flush=True)
        return 0
    mine = {"budget": dataclasses.asdict(s.budget), "model": s.model, "hardware": s.hardware_name}
    if (_held_out_budget(theirs["budget"]) != _held_out_budget(mine["budget"]) or theirs["model"] != mine["model"]
            or theirs["hardware"] != mine["hardware"]):
        raise ValueError(f"--import-from {source}: its budget/model/hardware differ from this run's; nothing imported")
    # Per task: whether their pool member of it is also a seed-0 hwa_lora of this run's budget.
    their_budget = budget_from_dict(theirs["budget"])
    same_pool = (_pool_budget(theirs["budget"]) == _pool_budget(mine["budget"])
                 and tuple(theirs.get("tasks", ())) == tuple(s.tasks))
    same_magnitude_lr = theirs.get("magnitude_lr", LEGACY_MAGNITUDE_LR) == s.fusion.magnitude_lr
    folder = run_folder(s)
    done = folder.load()
    source_cells = RunFolder(source / "cells", legacy_log=source / "cells.jsonl").load()
    count = 0
    for key, rec in source_cells.items():
        targets = []
        parts = key.split("/")
        if (parts[0] == "held_out" and parts[2] in POOL_FREE and "reused_from" not in rec
                and (parts[2] != "magnitude_only" or same_magnitude_lr)):
            targets.append(key)
        elif parts[0] == "pool":
            if pool_member_is_hwa(their_budget, parts[1]):
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
                folder.add(target, {**rec, "key": target, "imported_from": f"{source}:{key}"})
                done[target] = rec
                count += 1
    return count


# ---------------------------------------------------------------------- a fresh clone
def cells_from_report(s: Settings, report: dict, source: str) -> dict[str, dict]:
    """The finished cells a committed report holds, when its recipe (budget, model, hardware,
    tasks, magnitude lr) is this run's: its per-seed values, trainable parameters and cell
    counts, and its pool members' dev scores (not the per-trial values). Imported cells keep
    their source."""
    mine = json.loads(json.dumps({"budget": comparable_budget(dataclasses.asdict(s.budget)), "model": s.model,
                                  "hardware": s.hardware_name, "tasks": list(s.tasks)}))
    theirs = {k: report.get(k) for k in mine}
    if isinstance(theirs["budget"], dict):
        theirs["budget"] = comparable_budget(theirs["budget"])
    if theirs != mine or (report.get("fusion_config") or {}).get("magnitude_lr") != s.fusion.magnitude_lr:
        return {}
    imported = report.get("imported", {})
    swept = report.get("from_sweep", {})
    out: dict[str, dict] = {}

    def add(key: str, rec: dict) -> None:
        out[key] = {"key": key, **rec, "adopted_from": source,
                    **({"imported_from": imported[key]} if key in imported else {}),
                    **({"from_sweep": swept[key]} if key in swept else {})}

    for t, p in report.get("pool", {}).items():
        add(f"pool/{t}", {k: p[k] for k in ("metric", "dev", "t0", "t10y")})
    for t, entries in report.get("held_out", {}).items():
        for m, e in entries.items():
            if m not in METHODS:  # the task's reference levels (chance, full fine-tune), not a method
                continue
            for seed, t0, t10y in zip(e["seeds"], e["t0"], e["t10y"]):
                add(f"held_out/{t}/{m}/seed{seed}", {"metric": e["metric"], "t0": t0, "t10y": t10y,
                                                     "trainable": e["trainable"], "cells_per_task": e["cells_per_task"],
                                                     "cells_once": e["cells_once"]})
    for t, ref in report.get("references", {}).items():
        if ref.get("chance") is not None:
            add(f"chance/{t}", {"metric": ref["metric"], "chance": ref["chance"], "dev_examples": ref.get("dev_examples")})
        if ref.get("full_finetune_t0") is not None:
            add(f"reference/{t}/full_finetune", {"metric": ref["metric"], "digital": ref["full_finetune_t0"],
                                                 "steps": ref.get("full_finetune_steps")})
    for key, why in report.get("skipped", {}).items():  # left out: the task is not learnable
        add(key, {"metric": task_spec(key.split("/")[1]).metrics[0], "skipped": why})
    for kind, tasks in report.get("ablations", {}).items():
        for t, variants in tasks.items():
            for v, e in variants.items():
                add(f"{kind}/{t}/{v}", {"metric": e["metric"], "t0": e["t0"][0], "t10y": e["t10y"][0],
                                        "trainable": e["trainable"]})
    return out


def adopt_committed(s: Settings, folder: RunFolder) -> list[str]:
    """Into a run folder without finished cells (a fresh clone): the cells of the report in
    `--docs`, or else of a committed report (docs/results), whose recipe is this run's, so that
    the recorded command computes only what that report lacks. The report's run-level figures
    (wall time, workers, machine, the pool's span, which the cells do not hold) are kept beside
    them in `<out>/adopted_report.json`. Returns the keys taken."""
    if not folder.empty():
        return []
    for path in [s.docs / f"{s.page}.json", *committed_reports("lorafusion*.json")]:
        report = read_json(path)
        records = cells_from_report(s, report, str(path)) if report else {}
        if not records:
            continue
        taken = folder.adopt(records)
        page = path.with_suffix(".md")
        found = re.search(r"written by `(.+)`\.$", page.read_text(), re.M) if page.is_file() else None
        write_json_atomic(s.out / ADOPTED, {
            "source": str(path), "wall_s": report.get("wall_s"), "span_s": report.get("span_s"),
            "elapsed_s": report.get("elapsed_s"), "workers": report.get("workers"), "machine": report.get("machine"),
            "pool_span": report.get("pool_span"), "import_command": found.group(1) if found else ""})
        return taken
    return []


# ---------------------------------------------------------------------- one cell
def cell_from_sweep(s: Settings, cell: Cell) -> dict | None:
    """The record of `cell` taken from the budget sweep (`--from-sweep`, `lfglue.from_sweep`):
    the sweep's crossbar values (and the full fine-tune's score), with this run's trainable
    parameters and crossbar cells counted on the model the cell ends with; a pool member is
    rebuilt from the sweep's adapter and saved as a trained one is. None when the sweep has no
    such cell under this run's recipe (or, for a pool member, no stored adapter)."""
    got = from_sweep.record(s, cell)
    if got is None:
        return None
    key, rec = got
    t0 = time.perf_counter()
    metric = task_spec(cell.task).metrics[0]
    base = {"key": cell.key, "metric": metric, **from_sweep.taken(key, rec, s)}
    if cell.kind == "reference":
        return {**base, "steps": rec["steps"], "wall_s": time.perf_counter() - t0}
    extra: dict[str, Any] = {}
    if cell.kind == "pool":
        state = from_sweep.adapter(s, key)
        if state is None:  # finished before the sweep kept its adapters: trained here
            return None
        model, _, extra["dev"] = pool_member_from_state(s, cell.task, state)
    else:  # the model the cell ends with, for its counts (the sweep's values are its evaluation)
        model, _ = lora_model(s, cell.task, cell.seed)
        extra["dev"] = None  # as a computed held-out cell: the pre-programming score is the pool members'
    base.pop("digital", None)  # the digital LoRA's own score: not a field of the held-out cells
    tr = trainable_parameters(model)
    return {**base, **extra, "trainable": tr["total"], "trainable_by_kind": tr, **cells_per_task(model, cell.method),
            "wall_s": time.perf_counter() - t0}


def skip_unlearnable(s: Settings, cell: Cell, done: dict[str, dict]) -> dict | None:
    """With `--skip-unlearnable`, a held-out, ablation or diagnosis cell of a task that the full
    fine-tune does not learn (`report.reference_levels`) is left out: its record says so and
    holds no value. None when the cell is to be computed; PendingCell while the task's chance
    level or reference is not finished."""
    if not s.skip_unlearnable or cell.kind not in ("held_out", "ablation", "diagnosis"):
        return None
    ref = reference_levels(cell.task, done)
    if ref["learnable"] is None:
        raise PendingCell(f"chance/{cell.task} and reference/{cell.task}/full_finetune not both done yet")
    if ref["learnable"]:
        return None
    return {"key": cell.key, "metric": ref["metric"], "wall_s": 0.0,
            "skipped": f"{cell.task} not learnable: full fine-tune {ref['full_finetune_t0']:.4f}, "
                       f"chance {ref['chance']:.4f}"}


#: What `--plan` says of a cell: finished in --out, the pool member it is, taken from the budget
#: sweep, the sweep's but not finished yet, or computed by this run.
PLAN_SOURCES = ("done", "reused", "taken", "waited for", "computed")


def plan_sources(s: Settings) -> list[tuple[Cell, str, str]]:
    """What a run would do with each cell of its plan, read from the files only (`--plan`; no
    file written, no process looked at): done in `--out`, reused (the pool member it is), taken
    from the budget sweep (`--from-sweep`; a pool member only with its stored adapter), the
    sweep's and not finished yet (its report lists it: waited for while the sweep runs), or
    computed here, with its training steps. Returns (cell, what: one of `PLAN_SOURCES`, detail)."""
    done = run_folder(s).load()
    b = s.budget
    out = []
    for cell in plan(s):
        if cell.key in done:
            out.append((cell, "done", "in --out"))
            continue
        if cell.kind == "held_out" and cell.method == "hwa_lora" and cell.seed == 0 and pool_is_hwa_seed0(s, cell.task):
            out.append((cell, "reused", f"pool/{cell.task}"))
            continue
        key = from_sweep.sweep_key(s, cell) if s.from_sweep is not None else None
        if key is not None:
            if from_sweep._folder(s).get(key) is not None:
                if cell.kind != "pool" or from_sweep.has_adapter(s, key):
                    out.append((cell, "taken", key))
                    continue
                why = f"the sweep's {key} is finished but has no stored adapter"
            elif from_sweep.listed(s, key):
                out.append((cell, "waited for", f"the sweep's {key}, not finished (its report has it): waited for "
                                                "while the sweep runs, else computed here"))
                continue
            else:
                why = f"the sweep has no {key}"
        else:
            why = ""
        if cell.kind == "chance":
            what = "no training"
        else:
            steps = (fixed_pool_steps(b, cell.task) if cell.kind in ("pool", "reference") else steps_of(b, cell.task))
            what = f"{steps if steps is not None else 'data-dependent'} steps"
        unlearnable = (" (left out if the task is not learnable)" if s.skip_unlearnable
                       and cell.kind in ("held_out", "ablation", "diagnosis") else "")
        out.append((cell, "computed", what + (f"; {why}" if why else "") + unlearnable))
    return out


def _their_pool_is_hwa(source: Path, task: str) -> bool:
    """Whether the run in `source` (`--import-from`) has a pool member of `task` that becomes a
    seed-0 `hwa_lora` cell when imported (`import_cells`)."""
    theirs = recorded_settings(source)
    return theirs is not None and pool_member_is_hwa(budget_from_dict(theirs["budget"]), task)


def run_cell(s: Settings, cell: Cell, done: dict[str, dict]) -> dict:
    """Train and evaluate one cell (or reuse the pool member it is, or take it from the budget
    sweep, or leave it out when its task is not learnable); its record."""
    skipped = skip_unlearnable(s, cell, done)
    if skipped is not None:
        return skipped
    t0 = time.perf_counter()
    spec = task_spec(cell.task)
    metric = spec.metrics[0]
    extra: dict[str, Any] = {}
    if cell.kind == "held_out" and cell.method == "hwa_lora" and cell.seed == 0 and pool_is_hwa_seed0(s, cell.task):
        # The pool member of this task is this run (same recipe, budget, seed): reuse it.
        src = done.get(f"pool/{cell.task}")
        if src is None:
            raise PendingCell(f"pool/{cell.task} not done yet")
        rec = {k: v for k, v in src.items() if k in ("t0", "t10y", "t0_trials", "t10y_trials", "trainable",
                                                       "cells_once", "cells_per_task", "dev")}
        return {**rec, "key": cell.key, "reused_from": src["key"], "metric": metric, "wall_s": 0.0}
    if s.from_sweep is not None:
        taken = cell_from_sweep(s, cell)
        if taken is not None:
            return taken
    if s.import_from is not None and (cell.kind == "pool" or (cell.kind == "held_out" and cell.method in POOL_FREE)):
        theirs = [cell.key] + ([f"pool/{cell.task}"] if cell.method == "hwa_lora" and cell.seed == 0
                               and _their_pool_is_hwa(s.import_from, cell.task) else [])
        busy = [k for k in theirs if Claims(s.import_from / "claims").claimed_by_other(k)]
        if busy:  # the imported run is computing it: wait for the import instead of repeating it
            raise PendingCell(f"{busy[0]} is running in {s.import_from}")
    if cell.kind == "chance":
        return {"key": cell.key, **chance_level(s, cell.task), "wall_s": time.perf_counter() - t0}
    if cell.kind == "reference":
        return {"key": cell.key, **full_finetune(s, cell.task, cell.seed), "wall_s": time.perf_counter() - t0}
    if cell.kind == "pool":
        saved = s.out / "pool" / cell.task
        if (saved / "run.json").is_file() and (saved / "task_state.pt").is_file():
            # Trained and saved before an interruption: evaluate the saved member, do not retrain.
            record, model, tok = load_run(saved)
            extra["dev_at_save"] = record.metrics
        else:
            model, tok = train_pool_member(s, cell.task)
    elif cell.method == "lorafusion":
        model, tok = train_lorafusion(s, cell)
        extra["pool"] = pool_for(s, cell.task, cell.param("K")).adapter_names
        extra["pool_on_crossbar"] = cell.param("pool_on_crossbar", False if s.pool_digital else None)
    else:
        model, tok = TRAIN[cell.method](s, cell.task, cell.seed, **dict(cell.params))
    _, _, dev = data(s, cell.task, tok)
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


# ---------------------------------------------------------------------- main
def _count_or_all(text: str) -> int:
    """A positive example count, or 'all' (returned as 0)."""
    if text.strip().lower() == "all":
        return 0
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive integer or 'all'") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v}: expected a positive integer or 'all'")
    return v


def pool_steps_option(text: str, tasks: tuple[str, ...], b: Budget) -> tuple[int | None, dict[str, int] | None]:
    """`--pool-steps` (N, or TASK=N,... naming each of `tasks`) as (`Budget.pool_steps`,
    `Budget.pool_task_steps`), given the held-out steps already in `b`. Per-task steps that are
    one number for every task are recorded as that number (as `--pool-steps N`), and per-task
    steps equal to every task's held-out steps as no `--pool-steps` at all, so that equal
    protocols record equal budgets. ValueError naming `--pool-steps` and what is wrong."""
    steps, per_task = parse_steps(text, tasks, option="--pool-steps")
    if per_task is None:
        return steps, None
    if len(set(per_task.values())) == 1:
        return steps, None
    if b.task_steps is not None and per_task == b.task_steps:
        return None, None
    return None, per_task


def parse(argv: list[str] | None) -> Settings:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--glue-dir", required=True, help="GLUE folder in the official layout")
    p.add_argument("--model", default=None, help=f"model id or folder (default {DEFAULT_MODEL}; --quick: a tiny random BERT)")
    p.add_argument("--hardware", default="pcm_paper", choices=PRESETS)
    p.add_argument("--out", default="results/lorafusion_glue", help="checkpoints, pool, finished cells (cells/)")
    p.add_argument("--docs", default=None, help="where lorafusion.md/json/png go (default docs/results; --quick: --out)")
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--ablation-tasks", default="sst2,stsb",
                   help="held-out tasks of the ablations (default: the two on which every method learns above "
                        "chance at the default budget; '' or none: no ablation, the page points to "
                        "lorafusion_short_budget.md for them)")
    p.add_argument("--diagnosis-task", default="",
                   help="held-out task of the learning-rate diagnosis (e.g. sst2; default none: its results, "
                        "run with --diagnosis-task sst2, are docs/results/lorafusion_magnitude_lr_5e-3.md)")
    p.add_argument("--steps", default=None,
                   help="steps of every held-out run (and pool member): N for every task, or TASK=N,... naming "
                        "each task of --tasks (e.g. sst2=1000,stsb=540,mrpc=345,cola=804,rte=234)")
    p.add_argument("--lora-lr", type=float, default=None, help="learning rate of the LoRAs (default 1e-3)")
    p.add_argument("--head-lr", type=float, default=None,
                   help="learning rate of the task head, every method (default 1e-2; the budget sweep's 1e-3)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--train-examples", type=_count_or_all, default=None, help="a number, or 'all'")
    p.add_argument("--eval-examples", type=_count_or_all, default=None, help="a number, or 'all'")
    p.add_argument("--seeds", default=None, help="comma-separated, default 0,1,2")
    p.add_argument("--trials", type=int, default=None)
    p.add_argument("--pool-steps", default=None,
                   help="steps of the pool members: N for every task, or TASK=N,... naming each task of --tasks "
                        "(default --steps; a task whose pool steps differ from its --steps has its seed-0 hwa_lora "
                        "trained on its own, the others reuse their pool member)")
    p.add_argument("--pool-train-examples", type=int, default=None)
    p.add_argument("--pool-epochs", type=float, default=None,
                   help="train each pool member this many epochs of its examples, at most --pool-max-steps "
                        "(overrides --pool-steps): pool members trained to convergence")
    p.add_argument("--pool-max-steps", type=int, default=None)
    p.add_argument("--group-by-length", type=int, default=None,
                   help="batches of similar length, groups of this many batches (default 0: plain shuffling)")
    p.add_argument("--full-finetune-lr", type=float, default=None,
                   help="learning rate of each task's full fine-tune reference (default 5e-5)")
    p.add_argument("--magnitude-lr", type=float, default=FusionConfig().magnitude_lr,
                   help="learning rate of the DoRA magnitudes (lorafusion and magnitude_only); "
                        "docs/results/lorafusion_magnitude_lr_5e-3.md ran 5e-3")
    p.add_argument("--pool-digital", action="store_true", help="run LoRAFusion's pool digitally (ablation)")
    p.add_argument("--only", default="", help="comma-separated cell-key prefixes to run (e.g. pool/,held_out/rte/)")
    p.add_argument("--export-pool", default=None, help="write the pool without --export-held-out (and its heads) here, then stop")
    p.add_argument("--export-held-out", default="sst2")
    p.add_argument("--report", action="store_true", help="only rewrite the report from the finished cells")
    p.add_argument("--plan", action="store_true",
                   help="only list what each cell of the plan would be (done, reused, taken from --from-sweep, "
                        "waited for, or computed here with its steps); writes nothing")
    p.add_argument("--import-from", default=None,
                   help="another run's --out: import its pool-free held-out cells (same per-task budget)")
    p.add_argument("--from-sweep", default=None,
                   help="a budget-sweep run folder (python/experiments/budget_sweep.py --out): take its hwa_lora and "
                        "digital_lora cells, pool members (its seed-0 HWA-LoRA adapters) and full fine-tunes that are "
                        "cells of this run under the identical recipe; a folder of another recipe is refused")
    p.add_argument("--sweep-report", default=None,
                   help="the budget sweep's report JSON: while the sweep runs, a cell it lists as pending is waited "
                        "for, not computed here too (default: budget_sweep.json in --from-sweep, or in the "
                        "docs/results of the checkout --from-sweep is in)")
    p.add_argument("--skip-unlearnable", action="store_true",
                   help="leave out the held-out cells (and ablations) of a task whose full fine-tune stays at chance")
    p.add_argument("--page", default="lorafusion",
                   help="file name of the report in --docs, without suffix (default lorafusion; the short-budget "
                        "run's is lorafusion_short_budget)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny random BERT, 2 steps, tiny subsets")
    a = p.parse_args(argv)
    tasks = tuple(t.strip().lower() for t in a.tasks.split(",") if t.strip())
    if a.quick and a.tasks == ",".join(TASKS):
        tasks = ("sst2", "mrpc", "rte")
    for t in tasks:
        task_spec(t)
    if len(tasks) < 2:
        p.error(f"--tasks {a.tasks!r}: leave-one-out needs at least 2 tasks")
    b = Budget()
    if a.quick:
        b = Budget(steps=2, batch_size=4, max_length=24, train_examples=16, eval_examples=8, seeds=(0, 1), trials=1)
    if a.steps is not None:
        try:
            b.steps, b.task_steps = parse_steps(a.steps, tasks)
        except ValueError as e:
            p.error(str(e))
    for name in ("lora_lr", "head_lr"):
        v = getattr(a, name)
        if v is not None:
            if not v > 0:
                p.error(f"--{name.replace('_', '-')} = {v}; expected a positive learning rate")
            setattr(b, name, v)
    if a.pool_steps is not None:
        try:
            b.pool_steps, b.pool_task_steps = pool_steps_option(a.pool_steps, tasks, b)
        except ValueError as e:
            p.error(str(e))
    for name in ("batch_size", "max_length", "trials", "pool_train_examples", "pool_max_steps"):
        v = getattr(a, name)
        if v is not None:
            if v < 1:
                p.error(f"--{name.replace('_', '-')} = {v}; expected a positive integer")
            setattr(b, name, v)
    for name in ("train_examples", "eval_examples"):  # "all" (0 here): every example of the split
        v = getattr(a, name)
        if v is not None:
            setattr(b, name, v or None)
    if a.pool_epochs is not None:
        if not a.pool_epochs > 0:
            p.error(f"--pool-epochs = {a.pool_epochs}; expected a positive number")
        b.pool_epochs = a.pool_epochs
    if a.group_by_length is not None:
        if a.group_by_length < 0:
            p.error(f"--group-by-length = {a.group_by_length}; expected 0 (off) or a positive number of batches")
        b.group_by_length = a.group_by_length
    if a.full_finetune_lr is not None:
        if not a.full_finetune_lr > 0:
            p.error(f"--full-finetune-lr = {a.full_finetune_lr}; expected a positive learning rate")
        b.full_finetune_lr = a.full_finetune_lr
    if a.seeds:
        b.seeds = tuple(int(x) for x in a.seeds.split(","))
    abl = tuple(t for t in a.ablation_tasks.split(",") if t and t.strip().lower() != "none")
    if a.quick and a.ablation_tasks == "sst2,stsb":
        abl = ("rte",)
    if a.quick and a.diagnosis_task == "sst2":
        a.diagnosis_task = ""  # the diagnosis cells take the ablations' code path
    if any(t not in tasks for t in abl) or (a.diagnosis_task and a.diagnosis_task not in tasks):
        p.error(f"--ablation-tasks {abl} / --diagnosis-task {a.diagnosis_task!r}: expected tasks among {tasks}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", a.page):
        p.error(f"--page {a.page!r}: expected a file name without folder (letters, digits, _ . -)")
    if a.from_sweep and not os.path.isdir(a.from_sweep):
        # A fresh clone running a page's recorded command: the page's cells are adopted instead.
        print(f"[lorafusion_glue] --from-sweep {a.from_sweep}: no such folder; nothing is taken from a budget sweep",
              flush=True)
        a.from_sweep = None
    if not os.path.isdir(a.glue_dir):
        p.error(f"--glue-dir {a.glue_dir!r} is not a folder")
    out = Path(a.out)
    model = a.model
    if model is None:
        model = tiny_bert(out / "tiny_bert") if a.quick else DEFAULT_MODEL
    docs = Path(a.docs) if a.docs else (out if a.quick else Path("docs/results"))
    torch.set_num_threads(a.threads)
    command = command_line("python/experiments/lorafusion_glue.py", argv)
    s = Settings(model=model, glue_dir=a.glue_dir, hardware_name=a.hardware, out=out, docs=docs, tasks=tasks,
                 ablation_tasks=abl, diagnosis_task=a.diagnosis_task or None, budget=b,
                 fusion=FusionConfig(magnitude_lr=a.magnitude_lr),
                 pool_digital=a.pool_digital, only=tuple(x for x in a.only.split(",") if x), progress=a.progress,
                 command=command, threads=a.threads, from_sweep=Path(a.from_sweep) if a.from_sweep else None,
                 skip_unlearnable=a.skip_unlearnable, page=a.page,
                 sweep_report=Path(a.sweep_report) if a.sweep_report else None)
    s.hardware = HardwareConfig.preset(a.hardware)
    s.export = (Path(a.export_pool), a.export_held_out) if a.export_pool else None
    s.report_only = a.report
    s.plan_only = a.plan
    s.import_from = Path(a.import_from) if a.import_from else None
    return s


def main(argv: list[str] | None = None) -> dict:
    s = parse(argv)
    if s.plan_only:  # before anything is written
        sources = plan_sources(s)
        for cell, what, detail in sources:
            print(f"{cell.key}: {what}: {detail}")
        counts = {w: sum(what == w for _, what, _ in sources) for w in PLAN_SOURCES}
        print(f"[lorafusion_glue] --plan: {len(sources)} cells: " + ", ".join(f"{n} {w}" for w, n in counts.items()))
        return {"plan": {c.key: {"what": what, "detail": detail} for c, what, detail in sources}}
    s.out.mkdir(parents=True, exist_ok=True)
    if s.export is not None:
        folder = export_pool(s, s.export[1], s.export[0])
        print(f"[lorafusion_glue] pool written to {folder}")
        return {"exported": str(folder)}
    folder = run_folder(s)
    adopted = adopt_committed(s, folder)
    if adopted:
        print(f"[lorafusion_glue] {len(adopted)} finished cells taken from {read_json(s.out / ADOPTED)['source']}",
              flush=True)
    if s.report_only:
        recorded = recorded_settings(s.out)
        if recorded is not None:  # the command and recipe that ran the cells, not this report call's
            s.command = recorded.get("command", s.command)
            # Runs recorded before the field: the --threads of their command (argparse default 2).
            m = re.search(r"--threads[ =](\d+)", s.command)
            s.threads = recorded.get("threads", int(m.group(1)) if m else 2)
            s.fusion = dataclasses.replace(s.fusion, magnitude_lr=recorded.get("magnitude_lr", LEGACY_MAGNITUDE_LR))
        if s.import_from is not None:
            import_cells(s, s.import_from)
        done = folder.load()
        for t in s.tasks:  # the seed-0 hwa_lora that a finished pool member already is
            key = f"held_out/{t}/hwa_lora/seed0"
            if pool_is_hwa_seed0(s, t) and key not in done and f"pool/{t}" in done:
                try:
                    folder.store(key, run_cell(s, Cell(key, "held_out", t, "hwa_lora", 0), done))
                except PendingCell:  # --skip-unlearnable and the task's reference not finished
                    pass
        return write_report(s, plan(dataclasses.replace(s, only=())), folder.load())
    check_resume(s)
    if s.from_sweep is not None:
        report = from_sweep.report_path(s)
        print(f"[lorafusion_glue] --from-sweep {s.from_sweep}: {from_sweep.check(s)} budget-sweep cells of this "
              f"recipe; " + (f"its pending cells are waited for while it runs ({report})" if report else
                             "no sweep report found (--sweep-report): nothing is waited for"), flush=True)
    record_settings(s.out, {"budget": dataclasses.asdict(s.budget), "tasks": s.tasks, "model": s.model,
                            "hardware": s.hardware_name, "magnitude_lr": s.fusion.magnitude_lr,
                            "command": s.command, "threads": s.threads,
                            **({"from_sweep": str(s.from_sweep)} if s.from_sweep is not None else {}),
                            **({"skip_unlearnable": True} if s.skip_unlearnable else {})})
    all_cells = plan(dataclasses.replace(s, only=()))
    cells = plan(s)
    log = lambda msg: print(f"[lorafusion_glue] {msg}", flush=True)  # noqa: E731

    def import_more() -> None:
        if s.import_from is not None:
            n = import_cells(s, s.import_from)
            if n:
                log(f"imported {n} pool-free cells from {s.import_from}")

    def busy_in_source() -> bool:
        theirs = Claims(s.import_from / "claims") if s.import_from is not None else None
        if s.from_sweep is not None and from_sweep.running(s):  # cells may wait for the sweep's
            return True
        return theirs is not None and any(theirs.claimed_by_other(c.key) for c in all_cells)

    def finished(cell: Cell, rec: dict) -> None:
        shown = " ".join(f"{k} {rec[k]:.4f}" for k in ("t0", "t10y", "digital", "chance") if k in rec)
        log(f"{cell.key}: {shown} ({rec['metric']}, {rec['wall_s']:.0f} s)")
        write_report(s, all_cells, folder.load())  # other workers store cells too: read them all

    run_queue(cells, folder, claims(s), lambda cell, done: run_cell(s, cell, done), after_cell=finished,
              before_pass=import_more, busy_elsewhere=busy_in_source, log=log)
    return write_report(s, all_cells, folder.load())


if __name__ == "__main__":
    main()
