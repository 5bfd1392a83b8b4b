"""End-to-end pipelines behind the CLI: train HWA-LoRA / a pool / LoRAFusion on any task
(`lorafusion_ext.tasks`: GLUE classification, SQuAD extractive QA), save and reload runs,
evaluate across drift times, switch tasks on one analog model."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from lorafusion_ext.nn.convert import HEAD_NAMES, attach_lora, attach_pool, trainable_parameters
from lorafusion_ext.data.glue import TaskSpec
from lorafusion_ext.data.tokenize import EncodedDataset
from lorafusion_ext.evaluation.drift_sweep import DEFAULT_TIMES, DriftSweepResult, drift_sweep
from lorafusion_ext.hardware import HardwareConfig
from lorafusion_ext.nn.pool import LoRAPool
from lorafusion_ext.tasks import DataConfig, Task, get_task
from lorafusion_ext.training import distributed
from lorafusion_ext.training.loop import TrainConfig
from lorafusion_ext.training.methods import (
    FusionConfig,
    HWALoRAConfig,
    analog_model,
    fusion_coefficients,
    load_task_state,
    pool_from_models,
    task_state,
    train_fusion,
    train_hwa_lora,
)


def task_data(task: "str | Task", tokenizer: Any, data: DataConfig) -> tuple[Task, EncodedDataset, Any]:
    """(task, tokenised training set, evaluation set in the form `task.evaluate` takes)."""
    t = get_task(task)
    return t, t.train_data(tokenizer, data), t.eval_data(tokenizer, data)


def eval_data(task: "str | Task", tokenizer: Any, data: DataConfig) -> tuple[Task, Any]:
    """(task, evaluation set): the evaluation side of `task_data` alone."""
    t = get_task(task)
    return t, t.eval_data(tokenizer, data)


@dataclass
class RunRecord:
    """What a saved run is: enough to rebuild the model and load its trained state."""

    method: str  # "hwa-lora" | "lorafusion"
    task: str
    model: str
    hardware: dict
    seed: int
    lora: dict = field(default_factory=dict)
    fusion: dict = field(default_factory=dict)
    pool_dir: str | None = None
    metrics: dict = field(default_factory=dict)
    trainable: dict = field(default_factory=dict)
    data: str = ""  # the data and split used (e.g. SQuAD's offline article split)


def save_run(folder: str | Path, record: RunRecord, model: nn.Module) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.json").write_text(json.dumps(asdict(record), indent=2))
    torch.save(task_state(model), folder / "task_state.pt")
    return folder


def load_run(folder: str | Path) -> tuple[RunRecord, nn.Module, Any]:
    """Rebuild a saved run's analog model with its trained adapters/coefficients and head."""
    folder = Path(folder)
    meta = folder / "run.json"
    if not meta.is_file():
        raise FileNotFoundError(f"{folder} is not a saved run: {meta} is missing")
    record = RunRecord(**json.loads(meta.read_text()))
    hw = HardwareConfig.from_dict(record.hardware)
    if record.method == "hwa-lora":
        cfg = HWALoRAConfig(**{**record.lora, "targets": tuple(record.lora["targets"]),
                               "analog_targets": tuple(record.lora["analog_targets"])})
        model, tok = analog_model(record.model, get_task(record.task), hw, seed=record.seed,
                                  analog_targets=cfg.analog_targets)
        attach_lora(model, cfg.rank, cfg.alpha, cfg.dropout, targets=cfg.targets)
    elif record.method == "lorafusion":
        if not record.pool_dir:
            raise ValueError(f"{meta}: a lorafusion run needs pool_dir")
        fcfg = FusionConfig(**record.fusion)
        model, tok = analog_model(record.model, get_task(record.task), hw, seed=record.seed)
        attach_pool(model, pool_for_model(LoRAPool.load(record.pool_dir), model), mode=fcfg.mode,
                    magnitude=fcfg.magnitude, granularity=fcfg.granularity, pool_on_crossbar=fcfg.pool_on_crossbar)
    else:
        raise ValueError(f"{meta}: method = {record.method!r}; expected 'hwa-lora' or 'lorafusion'")
    load_task_state(model, torch.load(folder / "task_state.pt", weights_only=True))
    return record, model, tok


def run_hwa_lora(task: str, model_id: str, hardware: HardwareConfig, cfg: HWALoRAConfig, tcfg: TrainConfig,
                 data: DataConfig, out: str | Path | None = None) -> tuple[RunRecord, nn.Module]:
    t = get_task(task)
    model, tok = analog_model(model_id, t, hardware, seed=tcfg.seed, analog_targets=cfg.analog_targets)
    _, train, dev = task_data(t, tok, data)
    train_hwa_lora(model, train, cfg, tcfg, description=f"hwa-lora {t.name}")
    record = RunRecord("hwa-lora", t.name, model_id, hardware.to_dict(), tcfg.seed, lora=asdict(cfg),
                       metrics=t.evaluate(model, dev), trainable=trainable_parameters(model),
                       data=t.describe_data(data))
    if out is not None and distributed.is_main():
        save_run(out, record, model)
    return record, model


def run_pool(tasks: Sequence[str], model_id: str, hardware: HardwareConfig, cfg: HWALoRAConfig, tcfg: TrainConfig,
             data: DataConfig, out: str | Path | None = None) -> tuple[LoRAPool, list[RunRecord]]:
    """One HWA-LoRA per source task, stacked into a pool (saved to `out`/pool, each task's run
    to `out`/<task>, with ":" written "-": `bbh-navigate`)."""
    if not tasks:
        raise ValueError("run_pool: no source tasks given")
    models, records = [], []
    for task in tasks:
        run_out = None if out is None else Path(out) / get_task(task).name.replace(":", "-")
        record, model = run_hwa_lora(task, model_id, hardware, cfg, tcfg, data, run_out)
        models.append(model)
        records.append(record)
    pool = pool_from_models(models, [r.task for r in records])
    if out is not None and distributed.is_main():
        pool.save(Path(out) / "pool")
    return pool, records


def run_fusion(task: str, model_id: str, hardware: HardwareConfig, pool_dir: str | Path, cfg: FusionConfig,
               tcfg: TrainConfig, data: DataConfig, out: str | Path | None = None,
               lora_num: int | None = None) -> tuple[RunRecord, nn.Module]:
    """LoRAFusion on `task` with the pool in `pool_dir` (its first `lora_num` adapters)."""
    pool = LoRAPool.load(pool_dir)
    if lora_num is not None:
        pool = select_adapters(pool, lora_num)
    t = get_task(task)
    model, tok = analog_model(model_id, t, hardware, seed=tcfg.seed)
    _, train, dev = task_data(t, tok, data)
    train_fusion(model, pool_for_model(pool, model), train, cfg, tcfg, description=f"fuse {t.name}")
    record = RunRecord("lorafusion", t.name, model_id, hardware.to_dict(), tcfg.seed, fusion=asdict(cfg),
                       pool_dir=str(pool_dir), metrics=t.evaluate(model, dev),
                       trainable=trainable_parameters(model), data=t.describe_data(data))
    if out is not None and distributed.is_main():
        if lora_num is not None:  # the run must reload the same K adapters
            record.pool_dir = str(pool.save(Path(out) / "pool"))
        save_run(out, record, model)
    return record, model


def pool_for_model(pool: LoRAPool, model: nn.Module) -> LoRAPool:
    """`pool` on the layers that `model` has: a pool trained on classifiers holds the pooler
    (`bert.pooler.dense`), which a span-head model for extractive QA does not have (its head
    reads the token states, not the pooled one), so that layer's adapters are left out.

    Raises:
        ValueError: `model` has none of the pool's layers.
    """
    present = {n for n, _ in model.named_modules()}
    kept = [n for n in pool.layer_names if n in present]
    if not kept:
        raise ValueError(f"the pool's layers ({pool.layer_names[:3]}...) are not modules of the model; expected the "
                         "pool to come from the same base model")
    if len(kept) == len(pool.layer_names):
        return pool
    layers = {n: (pool.layer(n).A, pool.layer(n).B) for n in kept}
    return LoRAPool(layers, pool.alpha, list(pool.adapter_names))


def select_adapters(pool: LoRAPool, k: int) -> LoRAPool:
    """A pool of the first `k` adapters of `pool`."""
    if not 1 <= k <= pool.num_adapters:
        raise ValueError(f"lora_num = {k}; the pool has {pool.num_adapters} adapters (expected 1..{pool.num_adapters})")
    layers = {n: (pool.layer(n).A[:k].clone(), pool.layer(n).B[:k].clone()) for n in pool.layer_names}
    return LoRAPool(layers, pool.alpha, pool.adapter_names[:k])


def drift_evaluation(model: nn.Module, dev: Any, spec: "Task | TaskSpec | str", times: Sequence[float] = DEFAULT_TIMES,
                     trials: int = 3, seed: int = 0, reprogram_each_trial: bool = True,
                     progress: bool = True) -> DriftSweepResult:
    """The task's main metric after drift, mean and std over `trials`, at each time (s).
    `dev` is the task's evaluation set (`task_data` / `eval_data`)."""
    task = get_task(spec)
    main = task.main_metric
    return drift_sweep(model, lambda m: task.evaluate(m, dev)[main], times=tuple(times), trials=trials,
                       reprogram_each_trial=reprogram_each_trial, seed=seed, metric=main, progress=progress)


def head_module(model: nn.Module) -> tuple[str, nn.Module]:
    for name in HEAD_NAMES:
        if hasattr(model, name):
            return name, getattr(model, name)
    raise ValueError(f"the model has no task head among {HEAD_NAMES}")


def multi_task_switching(model: nn.Module, tasks: dict[str, tuple[dict, nn.Module, EncodedDataset, TaskSpec]],
                         times: Sequence[float] = (0.0,), trials: int = 1, seed: int = 0,
                         progress: bool = True) -> dict[str, DriftSweepResult]:
    """One analog model, programmed once per trial, serving several tasks: for each time and
    task, swap in the task's trained state (adapters or coefficients) and head, evaluate.

    `tasks`: name -> (task_state without the head, head module, dev data, task or spec).
    """
    head_name, _ = head_module(model)

    def evaluate_all(m: nn.Module) -> float:
        scores = []
        for name, (state, head, dev, spec) in tasks.items():
            setattr(m, head_name, head)
            load_task_state(m, state)
            task = get_task(spec)
            scores.append(task.evaluate(m, dev)[task.main_metric])
            results_now[name].append(scores[-1])
        return float(sum(scores) / len(scores))

    results_now: dict[str, list[float]] = {n: [] for n in tasks}
    sweep = drift_sweep(model, evaluate_all, times=tuple(times), trials=trials, seed=seed, metric="mean",
                        progress=progress)
    out = {"mean": sweep}
    n_t = len(sweep.times)
    for name, vals in results_now.items():
        rows = [vals[i * n_t:(i + 1) * n_t] for i in range(trials)]
        out[name] = DriftSweepResult(times=sweep.times, values=rows, metric=get_task(tasks[name][3]).main_metric,
                                     trials=trials, reprogram_each_trial=sweep.reprogram_each_trial, seed=seed)
    return out
