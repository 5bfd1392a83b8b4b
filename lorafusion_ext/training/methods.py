"""HWA-LoRA, LoRA-pool and LoRAFusion training on GLUE tasks (docs/usage.md).

Every recipe value is a dataclass field with the published default, so each can be
overridden from Python or the CLI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from lorafusion_ext.nn.convert import attach_lora, attach_pool, convert_to_analog, is_head, lora_adapter
from lorafusion_ext.nn.convert import targets as target_presets
from lorafusion_ext.data.glue import TaskSpec
from lorafusion_ext.data.tokenize import EncodedDataset
from lorafusion_ext.hardware import HardwareConfig
from lorafusion_ext.models import load_classifier
from lorafusion_ext.nn.fusion import LoRAFusionLinear
from lorafusion_ext.nn.pool import LoRAPool
from lorafusion_ext.training.loop import TrainConfig, TrainResult, train


@dataclass
class HWALoRAConfig:
    """HWA-LoRA recipe (paper defaults): LoRA r 8, alpha 32, dropout 0.1 on every linear layer
    (heads excluded), all of them analog; Adam lr 2e-4 with linear decay; the digital head
    at `head_lr`."""

    rank: int = 8
    alpha: float = 32.0
    dropout: float = 0.1
    lr: float = 2e-4
    head_lr: float = 1e-3
    targets: tuple[str, ...] = target_presets.ALL_LINEAR
    analog_targets: tuple[str, ...] = target_presets.ALL_LINEAR


@dataclass
class FusionConfig:
    """LoRAFusion recipe: coefficients Adam lr 0.02 with an L1 penalty of 5e-4 on mean |c| and
    Xavier-uniform initialisation, one coefficient vector per transformer block (the published
    defaults); DoRA magnitudes Adam lr 2e-2 (published: 5e-3; raised on the evidence of the GLUE
    experiment, where the magnitudes carry what fusion learns and 5e-3 left them under-trained:
    docs/lorafusion_gap.md); the digital head at `head_lr`."""

    mode: str = "lorahub"
    granularity: str = "block"
    magnitude: bool = True
    coeff_lr: float = 0.02
    l1: float = 5e-4
    magnitude_lr: float = 2e-2
    head_lr: float = 1e-3
    init: str = "xavier_uniform"
    #: where the pool lives (`attach_pool`): None = on the crossbar when the base is analog.
    pool_on_crossbar: bool | None = None


def analog_classifier(model_id: str, spec: TaskSpec, hardware: HardwareConfig, *, seed: int = 0,
                      analog_targets: Sequence[str] = target_presets.ALL_LINEAR) -> tuple[nn.Module, object]:
    """A Hugging Face sequence classifier for `spec` with its linear layers made analog (the
    head stays digital). Returns (model, tokenizer)."""
    model, tokenizer = load_classifier(model_id, spec.num_labels, seed=seed)
    convert_to_analog(model, hardware, targets=tuple(analog_targets), seed=seed)
    return model, tokenizer


def analog_model(model_id: str, task: Any, hardware: HardwareConfig, *, seed: int = 0,
                 analog_targets: Sequence[str] = target_presets.ALL_LINEAR) -> tuple[nn.Module, object]:
    """The Hugging Face model of `task` (a `lorafusion_ext.tasks.Task`: a sequence classifier,
    or a span head for extractive QA) with its linear layers made analog (the head stays
    digital). Returns (model, tokenizer)."""
    model, tokenizer = task.load_model(model_id, seed=seed)
    convert_to_analog(model, hardware, targets=tuple(analog_targets), seed=seed)
    return model, tokenizer


def _head_params(model: nn.Module, exclude: set[int]) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad and id(p) not in exclude]


def train_hwa_lora(model: nn.Module, data: EncodedDataset, cfg: HWALoRAConfig, tcfg: TrainConfig,
                   description: str = "hwa-lora", prepare: Callable[[nn.Module], None] | None = None) -> TrainResult:
    """Attach a LoRA to `model` (in place) and train it, with the head, through the analog
    hardware (the AnalogLinear layers' noise and quantisation are active in train mode).
    `prepare(model)`, if given, runs once the LoRA is attached, before the training (and before
    a checkpoint is resumed): e.g. program the crossbar the training reads."""
    attach_lora(model, cfg.rank, cfg.alpha, cfg.dropout, targets=tuple(cfg.targets))
    if prepare is not None:
        prepare(model)
    lora = [p for n, p in model.named_parameters() if p.requires_grad and ("lora_A" in n or "lora_B" in n)]
    if not lora:
        raise ValueError(f"train_hwa_lora: no layer matched targets {cfg.targets}")
    head = _head_params(model, {id(p) for p in lora})
    groups = [{"params": lora, "lr": cfg.lr}]
    if head:
        groups.append({"params": head, "lr": cfg.head_lr})
    opt = torch.optim.Adam(groups)
    return train(model, data, opt, tcfg, description=description,
                 log_extra={"method": "hwa-lora", "rank": cfg.rank, "alpha": cfg.alpha})


def train_full_finetune(model: nn.Module, data: EncodedDataset, lr: float, head_lr: float, tcfg: TrainConfig,
                        description: str = "full fine-tune") -> TrainResult:
    """Train every weight of a digital `model` (Adam; the body at `lr`, the task head at
    `head_lr`): the reference of what the model itself can learn on a task."""
    head = [p for n, p in model.named_parameters() if is_head(n)]
    body = [p for n, p in model.named_parameters() if not is_head(n)]
    opt = torch.optim.Adam([{"params": body, "lr": lr}, {"params": head, "lr": head_lr}])
    return train(model, data, opt, tcfg, description=description)


def pool_from_models(models: Sequence[nn.Module], names: Sequence[str]) -> LoRAPool:
    """Stack the LoRAs of trained models (one per source task) into a pool."""
    adapters, alphas = [], set()
    for m in models:
        a, alpha = lora_adapter(m)
        adapters.append(a)
        alphas.add(alpha)
    if len(alphas) != 1:
        raise ValueError(f"pool_from_models: the LoRAs have alphas {sorted(alphas)}; expected one")
    return LoRAPool.from_adapters(adapters, alphas.pop(), adapter_names=list(names))


def fusion_coefficients(model: nn.Module) -> list[nn.Parameter]:
    """The distinct coefficient Parameters of `model`'s LoRAFusion layers."""
    seen: dict[int, nn.Parameter] = {}
    for m in model.modules():
        if isinstance(m, LoRAFusionLinear):
            seen.setdefault(id(m.coeffs), m.coeffs)
    return list(seen.values())


def fusion_magnitudes(model: nn.Module) -> list[nn.Parameter]:
    return [m.magnitude for m in model.modules() if isinstance(m, LoRAFusionLinear) and m.magnitude is not None]


def _init_coefficients(coeffs: list[nn.Parameter], init: str, generator: torch.Generator) -> None:
    with torch.no_grad():
        for c in coeffs:
            if init == "xavier_uniform":
                # A coefficient vector is one [1, K] fan (the published code's nn.init choice).
                fan_in, fan_out = (c.shape[-1], 1) if c.dim() == 1 else (c.shape[1], c.shape[0])
                bound = math.sqrt(6.0 / (fan_in + fan_out))
                c.copy_(torch.empty_like(c).uniform_(-bound, bound, generator=generator))
            elif init == "uniform_1_over_k":
                c.fill_(1.0 / c.shape[-1])
            else:
                raise ValueError(f"FusionConfig.init = {init!r}; expected 'xavier_uniform' or 'uniform_1_over_k'")


@torch.no_grad()
def init_magnitudes(model: nn.Module) -> None:
    """Set every LoRAFusion magnitude to its layer's current row norm ‖W0 + ΔW‖ (DoRA's
    initialisation, as peft computes it with the adapter's delta included), so that the fused
    layer starts as exactly W0 x + Δy whatever the initial coefficients. Call it after
    (re)initialising the coefficients."""
    for m in model.modules():
        if isinstance(m, LoRAFusionLinear) and m.magnitude is not None:
            m.magnitude.copy_(m.weight_norm().to(m.magnitude.dtype).expand_as(m.magnitude))


def train_fusion(model: nn.Module, pool: LoRAPool, data: EncodedDataset, cfg: FusionConfig, tcfg: TrainConfig,
                 description: str = "fuse", prepare: Callable[[nn.Module], None] | None = None) -> TrainResult:
    """LoRAFusion on a new task: attach the frozen `pool` to `model` (in place) and train only
    the fusion coefficients, the magnitudes and the head. `prepare(model)`, if given, runs once
    the pool is attached, before the training (and before a checkpoint is resumed): e.g.
    program the crossbar, the pool's tiles included, that the training reads."""
    attach_pool(model, pool, mode=cfg.mode, magnitude=cfg.magnitude, granularity=cfg.granularity,
                pool_on_crossbar=cfg.pool_on_crossbar)
    if prepare is not None:
        prepare(model)
    coeffs = fusion_coefficients(model)
    _init_coefficients(coeffs, cfg.init, torch.Generator().manual_seed(tcfg.seed))
    # attach_pool set m = ‖W0 + ΔW‖ for its own initial coefficients (1/K); with the ones drawn
    # here the fused layer would start rescaled per row instead of at W0 + ΔW.
    init_magnitudes(model)
    mags = fusion_magnitudes(model)
    taken = {id(p) for p in coeffs + mags}
    head = _head_params(model, taken)
    groups = [{"params": coeffs, "lr": cfg.coeff_lr}]
    if mags:
        groups.append({"params": mags, "lr": cfg.magnitude_lr})
    if head:
        groups.append({"params": head, "lr": cfg.head_lr})
    opt = torch.optim.Adam(groups)

    def l1() -> Tensor:
        return cfg.l1 * torch.cat([c.abs().flatten() for c in coeffs]).mean()

    return train(model, data, opt, tcfg, regularizer=l1 if cfg.l1 > 0 else None, description=description,
                 log_extra={"method": "lorafusion", "K": pool.num_adapters, "mode": cfg.mode})


def task_state(model: nn.Module) -> dict[str, Tensor]:
    """The per-task part of an adapted model (LoRA or fusion coefficients, magnitudes, head):
    every trainable parameter, detached. Load it back with `load_task_state`."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_task_state(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Swap a task's adapters/coefficients/head into `model`: one analog model, many tasks."""
    params = dict(model.named_parameters())
    missing = [k for k in state if k not in params]
    if missing:
        raise ValueError(f"load_task_state: {len(missing)} entries do not exist in the model, e.g. {missing[:3]}")
    with torch.no_grad():
        for k, v in state.items():
            if params[k].shape != v.shape:
                raise ValueError(f"load_task_state: {k} has shape {tuple(v.shape)}; the model's is {tuple(params[k].shape)}")
            params[k].copy_(v)
