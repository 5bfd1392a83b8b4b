"""How one cell of the LoRAFusion GLUE experiment trains, per method, and what it costs on the
crossbar; the pool members and the pool of a held-out task."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from harness import Cell, PendingCell
from lorafusion_ext import LoRAPool, attach_lora, attach_pool, trainable_parameters
from lorafusion_ext.nn.convert import is_head
from lorafusion_ext.evaluation.cost import crossbar_cost_of
from lorafusion_ext.data.glue import task_spec
from lorafusion_ext.evaluation.metrics import chance_level as metric_chance
from lorafusion_ext.models import load_classifier
from lorafusion_ext.nn.analog_pool import AnalogPoolLayer
from lorafusion_ext.apps.pipelines import DataConfig, RunRecord, load_run, save_run, task_data
from lorafusion_ext.training.loop import TrainConfig, evaluate, train
from lorafusion_ext.training.methods import (
    HWALoRAConfig,
    analog_classifier,
    fusion_coefficients,
    fusion_magnitudes,
    load_task_state,
    pool_from_models,
    task_state,
    train_full_finetune,
    train_fusion,
    train_hwa_lora,
)

from .protocol import Settings, fixed_pool_steps, pool_steps_for, steps_of

def data(s: Settings, task: str, tokenizer: Any, pool: bool = False):
    b = s.budget
    n = b.pool_train_examples if pool and b.pool_train_examples else b.train_examples
    return task_data(task, tokenizer, DataConfig(s.glue_dir, b.max_length, n, b.eval_examples, b.data_seed))


def tcfg(s: Settings, task: str, seed: int, desc: str, pool: bool = False, n_train: int | None = None) -> TrainConfig:
    """The training of one run on `task`: the held-out budget, or a pool member's (`pool`,
    drawing from `n_train` examples, which `--pool-epochs` needs)."""
    b = s.budget
    if pool and b.pool_epochs is not None:
        if n_train is None:
            raise ValueError("tcfg: a pool member trained for --pool-epochs needs n_train")
        steps = pool_steps_for(b, n_train, task)
    else:
        steps = fixed_pool_steps(b, task) if pool else steps_of(b, task)
    return TrainConfig(steps=steps, batch_size=b.batch_size, seed=seed, progress=s.progress, run_name=desc,
                       group_by_length=b.group_by_length)



def lora_cfg(s: Settings) -> HWALoRAConfig:
    return HWALoRAConfig(lr=s.budget.lora_lr, head_lr=s.budget.head_lr)


# ---------------------------------------------------------------------- pool
def train_pool_member(s: Settings, task: str) -> tuple[nn.Module, Any]:
    """HWA-LoRA on `task`, seed 0, saved to <out>/pool/<task>."""
    spec = task_spec(task)
    model, tok = analog_classifier(s.model, spec, s.hardware, seed=0)
    _, train_set, dev = data(s, task, tok, pool=True)
    cfg = lora_cfg(s)
    train_hwa_lora(model, train_set, cfg, tcfg(s, task, 0, f"pool {task}", pool=True, n_train=len(train_set)),
                   description=f"pool {task}")
    _save_pool_member(s, task, model, evaluate(model, dev, spec.metrics))
    return model, tok


def _save_pool_member(s: Settings, task: str, model: nn.Module, metrics: dict[str, float]) -> None:
    spec = task_spec(task)
    record = RunRecord("hwa-lora", spec.name, s.model, s.hardware.to_dict(), 0, lora=dataclasses.asdict(lora_cfg(s)),
                       metrics=metrics, trainable=trainable_parameters(model))
    save_run(s.out / "pool" / task, record, model)


def lora_model(s: Settings, task: str, seed: int, state: dict[str, torch.Tensor] | None = None
               ) -> tuple[nn.Module, Any]:
    """The analog model with this run's LoRA attached (as `train_hwa_lora` attaches it; the
    `digital_lora` deployment), holding `state` (a trained LoRA and head, `task_state`) if given."""
    cfg = lora_cfg(s)
    model, tok = analog_classifier(s.model, task_spec(task), s.hardware, seed=seed)
    attach_lora(model, cfg.rank, cfg.alpha, cfg.dropout, targets=tuple(cfg.targets))
    if state is not None:
        load_task_state(model, state)
    return model, tok


def pool_member_from_state(s: Settings, task: str, state: dict[str, torch.Tensor]) -> tuple[nn.Module, Any, dict]:
    """The pool member of `task` trained elsewhere (its LoRA and head `state`, e.g. a budget-sweep
    adapter): rebuilt, scored on the dev examples before programming, and saved to
    <out>/pool/<task> as `train_pool_member` saves it. Returns (model, tokenizer, dev metrics)."""
    spec = task_spec(task)
    model, tok = lora_model(s, task, 0, state)
    _, _, dev = data(s, task, tok)
    metrics = evaluate(model, dev, spec.metrics)
    _save_pool_member(s, task, model, metrics)
    return model, tok, metrics


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


# ---------------------------------------------------------------------- training per method
def train_head_only(s: Settings, task: str, seed: int) -> tuple[nn.Module, Any]:
    spec = task_spec(task)
    model, tok = analog_classifier(s.model, spec, s.hardware, seed=seed)
    _, train_set, _ = data(s, task, tok)
    for name, p in model.named_parameters():
        p.requires_grad_(is_head(name))
    head = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam([{"params": head, "lr": s.budget.head_lr}])
    train(model, train_set, opt, tcfg(s, task, seed, f"head_only {task}"), description=f"head_only {task}")
    return model, tok


def train_digital_lora(s: Settings, task: str, seed: int) -> tuple[nn.Module, Any]:
    spec = task_spec(task)
    cfg = lora_cfg(s)
    digital, tok = load_classifier(s.model, spec.num_labels, seed=seed)
    _, train_set, _ = data(s, task, tok)
    train_hwa_lora(digital, train_set, cfg, tcfg(s, task, seed, f"digital_lora {task}"), description=f"digital_lora {task}")
    # Deployment: the pretrained weights on the crossbar, the trained LoRA and head digital.
    model, _ = lora_model(s, task, seed, task_state(digital))
    return model, tok


def train_hwa_lora_cell(s: Settings, task: str, seed: int, lora_lr: float | None = None) -> tuple[nn.Module, Any]:
    spec = task_spec(task)
    model, tok = analog_classifier(s.model, spec, s.hardware, seed=seed)
    _, train_set, _ = data(s, task, tok)
    cfg = lora_cfg(s) if lora_lr is None else dataclasses.replace(lora_cfg(s), lr=lora_lr)
    train_hwa_lora(model, train_set, cfg, tcfg(s, task, seed, f"hwa_lora {task}"), description=f"hwa_lora {task}")
    return model, tok


def train_magnitude_only(s: Settings, task: str, seed: int, magnitude_lr: float | None = None
                          ) -> tuple[nn.Module, Any]:
    spec = task_spec(task)
    pool = pool_for(s, task)
    model, tok = analog_classifier(s.model, spec, s.hardware, seed=seed)
    _, train_set, _ = data(s, task, tok)
    attach_pool(model, pool, mode="lorahub", magnitude=True, granularity="block", init_coeff=0.0,
                pool_on_crossbar=False)
    for c in fusion_coefficients(model):
        c.requires_grad_(False)
    mags = fusion_magnitudes(model)
    head = [p for p in model.parameters() if p.requires_grad and all(p is not m for m in mags)]
    lr = s.fusion.magnitude_lr if magnitude_lr is None else magnitude_lr
    opt = torch.optim.Adam([{"params": mags, "lr": lr}, {"params": head, "lr": s.budget.head_lr}])
    train(model, train_set, opt, tcfg(s, task, seed, f"magnitude_only {task}"), description=f"magnitude_only {task}")
    return model, tok


def train_lorafusion(s: Settings, cell: Cell) -> tuple[nn.Module, Any]:
    task, seed = cell.task, cell.seed
    spec = task_spec(task)
    pool = pool_for(s, task, cell.param("K"))
    on_crossbar = cell.param("pool_on_crossbar", False if s.pool_digital else None)
    changes = {k: v for k, v in cell.params if k not in ("K", "pool_on_crossbar")}
    cfg = dataclasses.replace(s.fusion, pool_on_crossbar=on_crossbar, head_lr=s.budget.head_lr, **changes)
    model, tok = analog_classifier(s.model, spec, s.hardware, seed=seed)
    _, train_set, _ = data(s, task, tok)
    train_fusion(model, pool, train_set, cfg, tcfg(s, task, seed, f"lorafusion {task}"), description=f"lorafusion {task}")
    return model, tok


# ---------------------------------------------------------------------- reference levels
def full_finetune(s: Settings, task: str, seed: int) -> dict[str, Any]:
    """What the model can learn on `task`: every weight trained digitally (body at
    `full_finetune_lr`, head at the head lr) for the pool members' budget (the largest of the
    run), scored on the dev examples."""
    spec = task_spec(task)
    model, tok = load_classifier(s.model, spec.num_labels, seed=seed)
    _, train_set, dev = data(s, task, tok, pool=True)
    cfg = tcfg(s, task, seed, f"full_finetune {task}", pool=True, n_train=len(train_set))
    train_full_finetune(model, train_set, s.budget.full_finetune_lr, s.budget.head_lr, cfg,
                        description=f"full_finetune {task}")
    return {"metric": spec.metrics[0], "digital": evaluate(model, dev, spec.metrics)[spec.metrics[0]],
            "steps": cfg.steps}


def chance_level(s: Settings, task: str) -> dict[str, Any]:
    """The main metric of the constant predictor on the dev examples used
    (`lorafusion_ext.evaluation.metrics.chance_level`)."""
    spec = task_spec(task)
    _, tok = load_classifier(s.model, spec.num_labels, seed=0)
    _, train_set, dev = data(s, task, tok)
    value, predictor = metric_chance(spec.metrics[0], train_set.labels.numpy(), dev.labels.numpy())
    return {"metric": spec.metrics[0], "chance": value, "predictor": predictor, "dev_examples": len(dev.labels)}


# ---------------------------------------------------------------------- cost
def cells_per_task(model: nn.Module, method: str) -> dict[str, int]:
    """Crossbar cells programmed once and per new task for `method`, from
    `lorafusion_ext.evaluation.cost.crossbar_cost_of` (counted from the analog layers `model` holds, the
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


#: method -> its training for one held-out cell: fn(settings, task, seed, **cell params).
TRAIN = {"hwa_lora": train_hwa_lora_cell, "digital_lora": train_digital_lora, "head_only": train_head_only,
         "magnitude_only": train_magnitude_only}
