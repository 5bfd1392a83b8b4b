"""How one cell of the on-device measurement trains and is evaluated.

A cell is a (task, method, backward setting, seed). The model is the budget sweep's (every
linear layer an `AnalogLinear` of the run's hardware, the head digital) with the setting's
backward read (`Backward.hardware`); HWA-LoRA trains a LoRA and the head through it
(`train_hwa_lora`), LoRAFusion the coefficients, magnitudes and head of the pool on the crossbar
(`train_fusion`, `pool_on_crossbar=True`), the pool less the held-out task's own member. Both
are then programmed anew and read at 0 s and 10 years (`sweep.methods.on_crossbar`).

A setting with an age (`8bit_1day`) trains on the crossbar as a chip does late in its life:
once the LoRA or the pool is attached, before the first training step, the model (its pool
tiles included) is programmed and drifted to that age (`age`, passed to the training functions
as `prepare`; device noise from its own seed, `TRAINING_CHIP_SEED`), and every step reads those
weights, compensated. `AnalogLinear` applies the global drift compensation α in eval mode
only, so `lorafusion_ext.fold_drift_compensation` folds α into the programmed scales: forward
and backward then read W(t)·α in train mode, the weights a chip with drift compensation
reads. The training modifier (weight noise) stays on, as in every other setting, so that the
recipe differs only in what the tiles hold. After the training the model is unprogrammed; the evaluation programs
its own crossbars, as for every setting.
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from harness import Cell, RunFolder
from harness.cells import file_name
from lorafusion_ext.data.glue import task_spec
from lorafusion_ext.nn.deploy import drift, fold_drift_compensation, program, unprogram
from lorafusion_ext.nn.pool import POOL_WEIGHTS, LoRAPool
from lorafusion_ext.training.methods import FusionConfig, analog_classifier, train_fusion, train_hwa_lora
from sweep import imports
from sweep.methods import data, lora_cfg, losses, on_crossbar, train_cfg

from .protocol import BACKWARDS, Settings, cell_key

#: Added to a cell's seed to seed the programming and drift of the crossbar an aged setting
#: trains on: a chip other than the ones the evaluation programs (seeded with the cell's seed).
TRAINING_CHIP_SEED = 7919


def fusion_cfg(s: Settings) -> FusionConfig:
    """`FusionConfig`'s recipe with the run's head lr and the pool on the crossbar."""
    return FusionConfig(head_lr=s.recipe.head_lr, pool_on_crossbar=True)


@functools.lru_cache(maxsize=4)
def _load_pool(folder: str) -> LoRAPool:
    return LoRAPool.load(folder)


def pool_digest(folder: Path) -> str:
    """The first 16 hex digits of the SHA-256 of the pool's weights (which pool a cell used)."""
    return hashlib.sha256((Path(folder) / POOL_WEIGHTS).read_bytes()).hexdigest()[:16]


def leave_one_out(pool: LoRAPool, task: str) -> LoRAPool:
    """`pool` less the member named `task`, if it has one (the held-out task's own LoRA)."""
    keep = [k for k, name in enumerate(pool.adapter_names) if name != task]
    layers = {n: (pool.layer(n).A[keep].clone(), pool.layer(n).B[keep].clone()) for n in pool.layer_names}
    return LoRAPool(layers, pool.alpha, [pool.adapter_names[k] for k in keep])


@torch.no_grad()
def age(model: nn.Module, age_s: float, seed: int) -> None:
    """Program `model` (every analog layer, pool tiles included), drift it to `age_s` s and
    `fold_drift_compensation`: the crossbar an aged setting trains on. The device noise comes from
    a generator seeded with `seed + TRAINING_CHIP_SEED`; the result depends on nothing else, so a
    resumed run rebuilds the same crossbar before its checkpoint is loaded over it."""
    g = torch.Generator().manual_seed(seed + TRAINING_CHIP_SEED)
    program(model, g)
    drift(model, age_s, g)
    fold_drift_compensation(model)


def train(s: Settings, cell: Cell, model: nn.Module, train_set: Any) -> dict[str, Any]:
    """Train `model` by the cell's method, on the aged crossbar if its setting has an age; what
    the record keeps of the training."""
    age_s = BACKWARDS[cell.variant].age_s
    prepare = None if age_s is None else functools.partial(age, age_s=age_s, seed=cell.seed)
    if cell.method == "hwa_lora":
        return losses(train_hwa_lora(model, train_set, lora_cfg(s), train_cfg(s, cell), description=cell.key,
                                     prepare=prepare))
    pool = leave_one_out(_load_pool(str(s.pool)), cell.task)
    result = train_fusion(model, pool, train_set, fusion_cfg(s), train_cfg(s, cell), description=cell.key,
                          prepare=prepare)
    return {**losses(result), "pool": list(pool.adapter_names)}


def run_cell(s: Settings, cell: Cell) -> dict[str, Any]:
    """Train and evaluate one cell; its checkpoints are removed once its record exists."""
    torch.set_num_threads(s.threads)
    t0 = time.perf_counter()
    setting = BACKWARDS[cell.variant]
    spec = task_spec(cell.task)
    model, tok = analog_classifier(s.model, spec, setting.hardware(s.hardware), seed=cell.seed)
    _, train_set, dev = data(s, cell.task, tok)
    rec = train(s, cell, model, train_set)
    unprogram(model)  # the evaluation programs its own crossbars
    rec.update(on_crossbar(s, model, dev, cell.task, cell.seed))
    rec.update(key=cell.key, wall_s=time.perf_counter() - t0, task=cell.task, method=cell.method, seed=cell.seed,
               backward=cell.variant, steps=int(cell.param("steps")), metric=spec.metrics[0])
    shutil.rmtree(s.out / "checkpoints" / file_name(cell.key), ignore_errors=True)
    return rec


# ---------------------------------------------------------------------- the budget sweep's cells
def from_sweep(s: Settings, config: dict) -> dict[str, dict]:
    """This run's cells that the budget sweep has computed (`sweep.imports.from_sweep`; `config`:
    this run's): its `hwa_lora` cell at a task's steps and a seed is the `hwa_lora` / `ideal`
    cell, the same computation (`analog_classifier` of the preset seeded by the seed, no
    `prepare`, the sweep's data, `TrainConfig` and `on_crossbar`; the `unprogram` before the
    evaluation is a no-op on a model trained without a programmed crossbar). Nothing is imported
    when the preset has a backward read of its own (the ideal setting then trains otherwise)."""
    if BACKWARDS["ideal"].hardware(s.hardware) != s.hardware:
        return {}
    pair = imports.Pair("hwa_lora", lambda task, steps, seed: cell_key(task, "hwa_lora", "ideal", steps, seed),
                        {"backward": "ideal"})
    return imports.from_sweep(s, s.from_sweep, [pair], config)


def import_from_sweep(s: Settings, config: dict) -> Callable[[RunFolder, Callable[[str], None]], None]:
    """The driver's `prepare`: add to the run folder the cells `from_sweep` finds that it lacks
    (a cell computed or imported here before is never replaced)."""
    return imports.prepare(lambda: from_sweep(s, config))
