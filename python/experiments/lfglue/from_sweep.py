"""Cells of the LoRAFusion GLUE experiment taken from a budget-sweep run folder
(`python/experiments/budget_sweep.py`, `--from-sweep DIR`) instead of computed again.

A cell is taken only when the sweep computed the same training and evaluation:

- the recipe: the sweep records it in each cell (`sweep.protocol.sweep_config`: model,
  hardware, batch size, sequence length, LoRA / head / full fine-tune learning rates, length
  grouping, training and dev examples, data seed, drift trials); this run's is built by the same
  function from its `Budget`, and the two must be equal, as must the noise stream
  (`harness.RunFolder` checks both);
- what the recipe record leaves to the code, the same in both scripts: the LoRA
  (`HWALoRAConfig` defaults: rank 8, alpha 32, dropout, all linear layers, with only the two
  learning rates set), the model built by `analog_classifier` / `load_classifier` with the
  cell's seed, `train_hwa_lora` / `train_full_finetune` with a `TrainConfig` of the cell's
  steps, batch size, seed and length grouping (the sweep's checkpoints restore every RNG state,
  so they do not change the run), and `drift_evaluation` at 0 s and 10 years (`TEN_YEARS`
  equal in both) with the cell's seed;
- the cell: task, method, steps and seed in the sweep's key
  (``{task}/{hwa_lora|digital_lora|full_finetune}/b{steps}/seed{seed}``). A held-out
  `hwa_lora` / `digital_lora` cell is the sweep's cell at the task's held-out steps; a pool
  member (seed-0 HWA-LoRA on its task, at the task's pool steps, `--pool-steps` N or per task, on
  the held-out training examples) is the sweep's `hwa_lora` seed-0 cell at those steps together
  with its stored adapter (`harness.adapters`: the LoRA and head it trained, from which the pool
  is stacked); the full fine-tune reference is the sweep's `full_finetune` cell at the task's pool
  steps. When a task's pool steps differ from its held-out steps, its pool member and its seed-0
  `hwa_lora` are two sweep cells (e.g. ``sst2/hwa_lora/b1000/seed0`` and ``sst2/hwa_lora/b270/seed0``).

A sweep folder of another recipe is refused as a whole (`check`), naming the fields that differ.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from harness import Cell, PendingCell, RunFolder, adapter_path, load_adapter, read_json

from .protocol import TEN_YEARS, Settings, fixed_pool_steps, steps_of

# The budget sweep's protocol module (python/experiments/sweep), a sibling package.
from sweep import protocol as sweep_protocol  # noqa: E402  (python/experiments is on sys.path)

#: Held-out methods the sweep computes (the others need the pool or are not in the sweep).
SWEEP_METHODS = ("hwa_lora", "digital_lora")


def sweep_config(s: Settings) -> dict:
    """The budget-sweep cell config (`sweep.protocol.sweep_config`) this run's cells have: a
    sweep cell with another config was computed under another recipe."""
    b = s.budget
    recipe = sweep_protocol.Recipe(batch_size=b.batch_size, max_length=b.max_length, lora_lr=b.lora_lr,
                                   head_lr=b.head_lr, full_finetune_lr=b.full_finetune_lr,
                                   group_by_length=b.group_by_length, train_examples=b.train_examples,
                                   eval_examples=b.eval_examples, data_seed=b.data_seed, trials=b.trials)
    theirs = sweep_protocol.Settings(model=s.model, glue_dir=s.glue_dir, hardware_name=s.hardware_name, out=Path(),
                                     docs=Path(), tasks=s.tasks, budgets={}, recipe=recipe)
    return sweep_protocol.sweep_config(theirs)


def _folder(s: Settings) -> RunFolder:
    assert s.from_sweep is not None
    return RunFolder(s.from_sweep / "cells", config=sweep_config(s), config_field="config")


def check(s: Settings) -> int:
    """Refuse (ValueError) a `--from-sweep` folder that is not a budget-sweep run or whose cells
    were computed under another recipe, naming the fields that differ; also the two constants the
    recipe record leaves out. Returns how many of its cells match."""
    assert s.from_sweep is not None
    if sweep_protocol.TEN_YEARS != TEN_YEARS:  # the evaluation times: the same constant in both
        raise ValueError(f"--from-sweep: the sweep reads at {sweep_protocol.TEN_YEARS} s, this run at {TEN_YEARS} s")
    folder = _folder(s)
    records = list(folder.records())
    if not records:
        raise ValueError(f"--from-sweep {s.from_sweep}: no budget-sweep cells in {s.from_sweep / 'cells'}")
    done = folder.load()
    if done:
        return len(done)
    mine = sweep_config(s)
    have = next((r.get("config") for _, r in records if isinstance(r.get("config"), dict)), {}) or {}
    diff = sorted(k for k in set(have) | set(mine) if have.get(k) != mine.get(k))
    if not diff:
        raise ValueError(f"--from-sweep {s.from_sweep}: its cells have this recipe but another noise stream "
                         f"({sorted(set(folder.stale.values()))}); nothing can be taken")
    shown = ", ".join(f"{k}: sweep {have.get(k)!r}, this run {mine.get(k)!r}" for k in diff)
    raise ValueError(f"--from-sweep {s.from_sweep}: its cells were computed under another recipe ({shown}); "
                     "pass the sweep's settings (e.g. --batch-size 32 --train-examples all --eval-examples all "
                     "--group-by-length 50 --head-lr 1e-3) or leave --from-sweep out")


def sweep_key(s: Settings, cell: Cell) -> str | None:
    """The budget-sweep cell that is `cell` under this run's recipe, or None when the sweep has
    no such cell (another kind of cell, a variant, a pool member or reference whose budget is
    not the held-out recipe's)."""
    b = s.budget
    if cell.params or cell.kind not in ("held_out", "pool", "reference"):
        return None
    if cell.kind == "held_out":
        if cell.method not in SWEEP_METHODS:
            return None
        return sweep_protocol.cell_key(cell.task, cell.method, steps_of(b, cell.task), cell.seed)
    # Pool members and the reference train on the pool's examples for the pool's steps.
    steps = fixed_pool_steps(b, cell.task)
    if steps is None or b.pool_train_examples not in (None, b.train_examples):
        return None
    if cell.kind == "pool":
        return sweep_protocol.cell_key(cell.task, "hwa_lora", steps, 0)
    return sweep_protocol.cell_key(cell.task, "full_finetune", steps, cell.seed)


def record(s: Settings, cell: Cell) -> tuple[str, dict] | None:
    """(sweep key, the sweep's finished record) of `cell` when the sweep has it under this run's
    recipe and noise stream; None otherwise (the cell is computed here). PendingCell while the
    running sweep is still to compute it (`will_come`)."""
    if s.from_sweep is None:
        return None
    key = sweep_key(s, cell)
    if key is None:
        return None
    rec = _folder(s).get(key)
    if rec is None and will_come(s, key):
        raise PendingCell(f"the budget sweep is computing {key} ({s.from_sweep})")
    return None if rec is None else (key, rec)


def report_path(s: Settings) -> Path | None:
    """The budget sweep's report (its JSON lists the cells it has still to compute, `pending`):
    `--sweep-report`, else `budget_sweep.json` in the run folder or in the `docs/results` of the
    checkout the run folder is in (the sweep's defaults: ``--out results/budget_sweep``, report in
    ``docs/results``); None when there is none."""
    assert s.from_sweep is not None
    if s.sweep_report is not None:
        return s.sweep_report
    for path in (s.from_sweep / "budget_sweep.json", s.from_sweep.parent.parent / "docs" / "results" / "budget_sweep.json"):
        if path.is_file():
            return path
    return None


def running(s: Settings) -> bool:
    """Whether a process of the sweep holds a claim in its run folder now (a live process whose
    pid a claim file names). Read from the files only: no lock is taken on the sweep's claims,
    which could make its workers skip a cell."""
    assert s.from_sweep is not None
    folder = s.from_sweep / "claims"
    if not folder.is_dir():
        return False
    for path in folder.iterdir():
        try:
            pid = int(path.read_text().strip() or 0)
        except (OSError, ValueError):
            continue
        if pid > 0:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            except PermissionError:  # alive, another user's
                return True
            return True
    return False


def will_come(s: Settings, key: str) -> bool:
    """Whether the running sweep may still compute cell `key`: this run then waits for it instead
    of computing it too. True while a sweep process runs and its report lists `key` as pending or
    has `key`'s task without `key`'s budget: the report is rewritten after each of the sweep's
    cells, so one written before the sweep was restarted with other budgets lists stale ones;
    waiting for a cell that does not come costs time until the sweep ends, computing one that
    comes costs the cell."""
    return listed(s, key) and running(s)


def listed(s: Settings, key: str) -> bool:
    """Whether the sweep's report lists cell `key` as pending or has its task without its
    budget (what `will_come` waits for while the sweep runs), read from the report only: no
    process is looked at (`--plan`)."""
    path = report_path(s)
    report = read_json(path) if path is not None else None
    if not report:
        return False
    if key in (report.get("pending") or []):
        return True
    # A budget the report does not plan for its task: the report predates a restart of the sweep
    # with other budgets, and the running sweep may plan it now. A budget it plans, not pending,
    # is not in its plan for this seed: it never comes.
    task, _, budget = key.split("/")[:3]
    planned = ((report.get("tasks") or {}).get(task) or {}).get("budgets")
    return planned is not None and budget.startswith("b") and budget[1:].isdigit() and int(budget[1:]) not in planned


def has_adapter(s: Settings, key: str) -> bool:
    """Whether the sweep stored an adapter for cell `key` (its config not read: `adapter` checks it)."""
    assert s.from_sweep is not None
    return adapter_path(s.from_sweep / "adapters", key).is_file()


def adapter(s: Settings, key: str) -> dict[str, Any] | None:
    """The trained state (LoRA, head) the sweep stored for cell `key`, or None (cells finished
    before the sweep kept them); ValueError when it was stored under another config."""
    assert s.from_sweep is not None
    return load_adapter(s.from_sweep / "adapters", key, sweep_config(s))


def taken(key: str, rec: dict, s: Settings) -> dict[str, Any]:
    """The fields of a sweep record that a LoRAFusion cell holds, and where they come from."""
    out = {k: rec[k] for k in ("t0", "t10y", "t0_trials", "t10y_trials", "digital") if k in rec}
    return {**out, "from_sweep": f"{s.from_sweep}:{key}", "sweep_wall_s": rec.get("wall_s"),
            "sweep_config": rec.get("config")}
