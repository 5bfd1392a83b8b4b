"""How one cell of the training-noise experiment trains and is evaluated, and the cells taken
from the budget sweep.

A cell is a (task, row, seed). The model is the budget sweep's (every linear layer an
`AnalogLinear` of the deployment preset, the head digital, seeded by the cell's seed); before
the training its layers are given the row's training hardware
(`lorafusion_ext.nn.deploy.set_hardware`: only the modifier and the output noise differ), a
LoRA and the head are trained through it with the sweep's recipe (`train_hwa_lora`), then the
same model gets the deployment preset back and is evaluated as the sweep evaluates
(`sweep.methods.on_crossbar`: programmed anew in each trial, read at 0 s and 10 years), and
read once unprogrammed (the target weights through the preset's converters and output noise:
what the training reached, before programming noise and drift). So rows differ only in what
the LoRA saw while training; the `modifier_x1` row is the sweep's `hwa_lora` cell exactly.
"""

from __future__ import annotations

import shutil
import time
from typing import Any, Callable

import torch
from torch import nn

from harness import Cell, RunFolder, save_adapter
from harness.cells import file_name
from lorafusion_ext.data.glue import task_spec
from lorafusion_ext.nn.deploy import set_hardware
from lorafusion_ext.tasks import get_task
from lorafusion_ext.training.loop import TrainResult
from lorafusion_ext.training.methods import analog_classifier, task_state, train_hwa_lora
from sweep import imports
from sweep.imports import Pair
from sweep.methods import data, losses, lora_cfg, on_crossbar, train_cfg

from .protocol import REFERENCE, Settings, cell_key, config, scale_row


def trained(s: Settings, cell: Cell) -> tuple[nn.Module, Any, TrainResult]:
    """(model, dev set, training result) of the cell: trained through its row's hardware, the
    deployment preset (`s.hardware`) set back on every analog layer."""
    spec = task_spec(cell.task)
    model, tok = analog_classifier(s.model, spec, s.hardware, seed=cell.seed)
    _, train_set, dev = data(s, cell.task, tok)
    set_hardware(model, s.rows[cell.variant].training_hardware(s.hardware))
    result = train_hwa_lora(model, train_set, lora_cfg(s), train_cfg(s, cell), description=cell.key)
    set_hardware(model, s.hardware)
    return model, dev, result


def unprogrammed(model: nn.Module, dev: Any, task: str) -> float:
    """The main metric of `model` read unprogrammed (eval mode, its layers' own noise streams)."""
    t = get_task(task)
    return float(t.evaluate(model, dev)[t.main_metric])


def run_cell(s: Settings, cell: Cell) -> dict[str, Any]:
    """Train and evaluate one cell (its trained LoRA and head kept under <out>/adapters); its
    checkpoints are removed once its record exists."""
    torch.set_num_threads(s.threads)
    t0 = time.perf_counter()
    model, dev, result = trained(s, cell)
    save_adapter(s.out / "adapters", cell.key, config(s), task_state(model))
    rec = {**losses(result), **on_crossbar(s, model, dev, cell.task, cell.seed)}
    rec["unprogrammed"] = unprogrammed(model, dev, cell.task)  # on_crossbar left the trained state as it was
    row = s.rows[cell.variant]
    rec.update(key=cell.key, wall_s=time.perf_counter() - t0, task=cell.task, row=cell.variant, seed=cell.seed,
               steps=int(cell.param("steps")), metric=task_spec(cell.task).metrics[0],
               modifier_scale=row.modifier_scale, train_out_noise=row.out_noise,
               training_hardware=row.training_hardware(s.hardware).to_dict())
    shutil.rmtree(s.out / "checkpoints" / file_name(cell.key), ignore_errors=True)
    return rec


# ---------------------------------------------------------------------- the budget sweep's cells
def from_sweep(s: Settings) -> dict[str, dict]:
    """This run's cells that the budget sweep has computed (`sweep.imports.from_sweep`): its
    `hwa_lora` cell at a task's steps and a seed is the row `modifier_x1` (the preset as is),
    its `digital_lora` cell the reference row."""
    baseline = scale_row(1.0).name
    pairs = [Pair("hwa_lora", lambda task, steps, seed: cell_key(task, baseline, steps, seed), {"row": baseline})
             ] if baseline in s.rows else []
    pairs.append(Pair("digital_lora", lambda task, steps, seed: cell_key(task, REFERENCE, steps, seed),
                      {"row": REFERENCE}))
    return imports.from_sweep(s, s.from_sweep, pairs, config(s))


def import_from_sweep(s: Settings) -> Callable[[RunFolder, Callable[[str], None]], None]:
    """The driver's `prepare`: add to the run folder the cells `from_sweep` finds that it lacks
    (a cell computed or imported here before is never replaced)."""
    return imports.prepare(lambda: from_sweep(s))
