"""How one cell of the budget sweep trains and is evaluated, per method, and each task's
chance level."""

from __future__ import annotations

import json
import shutil
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from harness import Cell, read_json, save_adapter, write_text
from harness.cells import file_name
from lorafusion_ext import attach_lora
from lorafusion_ext.apps.pipelines import DataConfig, drift_evaluation, task_data
from lorafusion_ext.data.glue import task_spec
from lorafusion_ext.evaluation.metrics import chance_level
from lorafusion_ext.models import load_classifier
from lorafusion_ext.training.loop import TrainConfig, TrainResult
from lorafusion_ext.training.methods import (HWALoRAConfig, analog_classifier, load_task_state, task_state,
                                             train_full_finetune, train_hwa_lora)

from .protocol import TEN_YEARS, Recipe, Settings, sweep_config


def data(s: Settings, task: str, tokenizer: Any):
    """(task, training set, dev set) with the recipe's sizes."""
    r = s.recipe
    return task_data(task, tokenizer, DataConfig(s.glue_dir, r.max_length, r.train_examples, r.eval_examples,
                                                 r.data_seed))


def lora_config(recipe: Recipe) -> HWALoRAConfig:
    """The LoRA of every LoRA cell: `HWALoRAConfig`'s defaults (r 8, alpha 32, dropout 0.1, every
    linear layer) at the recipe's LoRA and head learning rates. Not in `sweep_config`: a reader of
    the stored adapters (the HWA-LoRA page) compares its own LoRA config with this one."""
    return HWALoRAConfig(lr=recipe.lora_lr, head_lr=recipe.head_lr)


def lora_cfg(s: Settings) -> HWALoRAConfig:
    return lora_config(s.recipe)


def train_cfg(s: Settings, cell: Cell) -> TrainConfig:
    """The cell's training, checkpointed every `checkpoint_every` steps under <out>/checkpoints
    so that a run killed mid-cell resumes where it stopped."""
    r = s.recipe
    return TrainConfig(steps=int(cell.param("steps")), batch_size=r.batch_size, seed=cell.seed,
                       checkpoint_dir=str(s.out / "checkpoints" / file_name(cell.key)),
                       checkpoint_every=r.checkpoint_every, resume=True, progress=s.progress,
                       run_name=cell.key, group_by_length=r.group_by_length)


def keep_adapter(s: Settings, cell: Cell, model: nn.Module) -> None:
    """Store the cell's trained LoRA and head under <out>/adapters (`harness.adapters`): the
    LoRAFusion pool and the HWA-LoRA page reuse the runs of the same recipe."""
    save_adapter(s.out / "adapters", cell.key, sweep_config(s), task_state(model))


def on_crossbar(s: Settings, model: nn.Module, dev: Any, task: str, seed: int) -> dict[str, Any]:
    """Programmed and read at 0 s and 10 years, `trials` trials (reprogrammed each): the trial
    means ("t0", "t10y") and every trial."""
    sweep = drift_evaluation(model, dev, task, times=(0.0, TEN_YEARS), trials=s.recipe.trials, seed=seed,
                             progress=False)
    return {"t0": sweep.mean[0], "t10y": sweep.mean[1],
            "t0_trials": [v[0] for v in sweep.values], "t10y_trials": [v[1] for v in sweep.values]}


def losses(result: TrainResult) -> dict[str, float]:
    """The mean loss of the last 20 steps and the step count."""
    tail = result.losses[-20:]
    return {"final_loss": float(np.mean(tail)) if tail else float("nan"), "steps": result.steps}


def hwa_lora(s: Settings, cell: Cell) -> dict[str, Any]:
    """A LoRA (and the head) trained through the hardware, then evaluated on it."""
    model, tok = analog_classifier(s.model, task_spec(cell.task), s.hardware, seed=cell.seed)
    task, train_set, dev = data(s, cell.task, tok)
    result = train_hwa_lora(model, train_set, lora_cfg(s), train_cfg(s, cell), description=cell.key)
    keep_adapter(s, cell, model)
    return {**losses(result), **on_crossbar(s, model, dev, cell.task, cell.seed)}


def digital_lora(s: Settings, cell: Cell) -> dict[str, Any]:
    """The same LoRA recipe trained digitally; its digital score (the ceiling), then the
    pretrained weights on the crossbar with that LoRA and head, digital as in HWA-LoRA."""
    spec = task_spec(cell.task)
    cfg = lora_cfg(s)
    digital, tok = load_classifier(s.model, spec.num_labels, seed=cell.seed)
    task, train_set, dev = data(s, cell.task, tok)
    result = train_hwa_lora(digital, train_set, cfg, train_cfg(s, cell), description=cell.key)
    keep_adapter(s, cell, digital)
    ceiling = task.evaluate(digital, dev)[task.main_metric]
    model, _ = analog_classifier(s.model, spec, s.hardware, seed=cell.seed)
    attach_lora(model, cfg.rank, cfg.alpha, cfg.dropout, targets=tuple(cfg.targets))
    load_task_state(model, task_state(digital))
    return {**losses(result), "digital": ceiling, **on_crossbar(s, model, dev, cell.task, cell.seed)}


def full_finetune(s: Settings, cell: Cell) -> dict[str, Any]:
    """Every weight trained digitally (the body at `full_finetune_lr`, the head at `head_lr`):
    the reference of what the model can learn on the task."""
    spec = task_spec(cell.task)
    model, tok = load_classifier(s.model, spec.num_labels, seed=cell.seed)
    task, train_set, dev = data(s, cell.task, tok)
    result = train_full_finetune(model, train_set, s.recipe.full_finetune_lr, s.recipe.head_lr, train_cfg(s, cell),
                                 description=cell.key)
    return {**losses(result), "digital": task.evaluate(model, dev)[task.main_metric]}


TRAIN = {"hwa_lora": hwa_lora, "digital_lora": digital_lora, "full_finetune": full_finetune}


def run_cell(s: Settings, cell: Cell) -> dict[str, Any]:
    """Train and evaluate one cell; its checkpoints are removed once its record exists."""
    torch.set_num_threads(s.threads)
    t0 = time.perf_counter()
    rec = TRAIN[cell.method](s, cell)
    rec.update(key=cell.key, wall_s=time.perf_counter() - t0, task=cell.task, method=cell.method, seed=cell.seed,
               budget=int(cell.param("steps")), metric=task_spec(cell.task).metrics[0])
    shutil.rmtree(s.out / "checkpoints" / file_name(cell.key), ignore_errors=True)
    return rec


def chance(s: Settings, task: str) -> dict[str, Any]:
    """The main metric of the constant predictor on the dev examples used
    (`lorafusion_ext.evaluation.metrics.chance_level`)."""
    spec = task_spec(task)
    _, tok = load_classifier(s.model, spec.num_labels, seed=0)
    _, train_set, dev = data(s, task, tok)
    value, predictor = chance_level(spec.metrics[0], train_set.labels.numpy(), dev.labels.numpy())
    return {"metric": spec.metrics[0], "value": value, "predictor": predictor, "dev_examples": len(dev.labels)}


def chance_levels(s: Settings, config: dict) -> dict[str, dict]:
    """Each task of `s.tasks`' `chance` on the dev examples used, cached in <out>/chance.json
    under `config` (what the run's cells are computed with)."""
    path = s.out / "chance.json"
    cached = read_json(path) or {}
    key = json.dumps(config, sort_keys=True)
    levels = cached.get(key, {})
    missing = [t for t in s.tasks if t not in levels]
    for t in missing:
        levels[t] = chance(s, t)
    if missing:
        cached[key] = levels
        write_text(path, json.dumps(cached, indent=2))
    return {t: levels[t] for t in s.tasks}
