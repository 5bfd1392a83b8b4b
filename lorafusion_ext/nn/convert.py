"""Model surgery: analog conversion, LoRA / LoRA-pool attachment, trainable-parameter views
(docs/usage.md). Works on any module tree; layers are chosen by name pattern.

Target patterns match the end of a module path on component boundaries: "q" matches
"encoder.block.0.layer.0.SelfAttention.q" but not "...q_proj"; a pattern may be a regex
("layer\\.\\d+\\.attention\\.self\\.(query|value)").
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lorafusion_ext.hardware import HardwareConfig, as_hardware
from lorafusion_ext.nn.analog_linear import AnalogLinear
from lorafusion_ext.nn.analog_pool import AnalogPoolLayer, pool_seeds
from lorafusion_ext.nn.fusion import LoRAFusionLinear
from lorafusion_ext.nn.lora import AdaptedLinear, LoRALinear
from lorafusion_ext.nn.pool import LoRAPool, PoolLayer
from lorafusion_ext.ops.pool import POOL_MODES

Targets = Sequence[str]


class targets:
    """Target presets (module-name patterns) across Hugging Face architectures."""

    #: query and value projections: BERT/MiniLM/MobileBERT (query, value), T5 (q, v), Llama (q_proj, v_proj).
    QV: tuple[str, ...] = ("q", "v", "query", "value", "q_proj", "v_proj")
    #: all attention projections.
    ATTENTION: tuple[str, ...] = QV + ("k", "o", "key", "k_proj", "o_proj", r"attention\.output\.dense")
    #: every linear layer except classification heads.
    ALL_LINEAR: tuple[str, ...] = (r".*",)


#: Top-level module names treated as task heads: digital and trainable by default. (LM heads
#: are pretrained, often tied to the embeddings, and are not heads in this sense.)
HEAD_NAMES: tuple[str, ...] = ("classifier", "classification_head", "score", "qa_outputs", "pre_classifier")

_BLOCK = re.compile(r"(?:^|\.)(?:block|blocks|layer|layers|h)\.(\d+)(?=\.|$)")


def _check_patterns(patterns: Targets, where: str) -> list[re.Pattern]:
    if isinstance(patterns, str) or not all(isinstance(p, str) for p in patterns) or not patterns:
        raise ValueError(f"{where}: targets = {patterns!r}; expected a non-empty sequence of name patterns")
    return [re.compile(rf"(?:^|\.)(?:{p})$") for p in patterns]


def _matches(path: str, compiled: list[re.Pattern]) -> bool:
    return any(c.search(path) for c in compiled)


def matching_paths(paths: Sequence[str], patterns: Targets, where: str = "targets") -> list[str]:
    """The module paths among `paths` that the target `patterns` match, by the rule of
    `convert_to_analog` / `attach_lora` (the end of a path, on component boundaries; a pattern
    may be a regex), in their order. Heads are not excluded here.

    Raises:
        ValueError: `patterns` is not a non-empty sequence of strings (the message names `where`).
    """
    compiled = _check_patterns(patterns, where)
    return [p for p in paths if _matches(p, compiled)]


def is_head(path: str, heads: Sequence[str] = HEAD_NAMES) -> bool:
    """Whether the module at `path` belongs to a task head (first path component in `heads`)."""
    return path.split(".", 1)[0] in heads


def block_key(path: str) -> str:
    """The transformer block a module belongs to, from its path: the prefix up to the first
    "<block|layer|layers|h>.<N>" (e.g. "encoder.block.3", "bert.encoder.layer.3",
    "model.layers.3"); a module outside any block is its own group."""
    m = _BLOCK.search(path)
    return path[: m.end()] if m else path


def set_module(model: nn.Module, path: str, module: nn.Module) -> nn.Module:
    """Put `module` at `path` in `model` (replacing what is there) and return the model, which
    is `module` itself when `path` is "" (the root replaced)."""
    if not path:
        return module
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, module)
    return model


#: Module names of language-model output layers, never converted or adapted (besides whatever
#: `get_output_embeddings()` returns).
LM_HEAD_NAMES: tuple[str, ...] = ("lm_head",)


def output_embedding_paths(model: nn.Module) -> set[str]:
    """Paths of the model's output embedding (`lm_head` of a causal LM or T5): it stays digital
    and un-adapted, as in AIHWKIT-Lightning's LLM recipes, because it is usually tied to the
    input embeddings (one tensor: converting it would untie them) and is the largest layer."""
    found = {p for p, m in model.named_modules() if p.rsplit(".", 1)[-1] in LM_HEAD_NAMES}
    getter = getattr(model, "get_output_embeddings", None)
    if callable(getter):
        try:
            out = getter()
        except (NotImplementedError, AttributeError):
            out = None
        if isinstance(out, nn.Module):
            found |= {p for p, m in model.named_modules() if m is out}
    return found


def _linear_layers(model: nn.Module, patterns: Targets, where: str, heads: Sequence[str]) -> list[tuple[str, nn.Linear]]:
    compiled = _check_patterns(patterns, where)
    # The base layer inside an adapter wrapper is not a target of its own.
    wrapped = tuple(p + "." for p, m in model.named_modules() if isinstance(m, AdaptedLinear))
    lm_heads = output_embedding_paths(model)
    found = [
        (path, mod)
        for path, mod in model.named_modules()
        if isinstance(mod, nn.Linear) and not is_head(path, heads) and _matches(path, compiled)
        and not (wrapped and path.startswith(wrapped)) and path not in lm_heads
    ]
    if not found:
        raise ValueError(f"{where}: no nn.Linear layer matches targets {list(patterns)}; check the module names (model.named_modules())")
    return found


def _freeze_except_adapters(model: nn.Module, train_head: bool, heads: Sequence[str]) -> None:
    for path, p in model.named_parameters():
        p.requires_grad_(train_head and is_head(path, heads))


# ---------------------------------------------------------------------- analog conversion
def convert_to_analog(
    model: nn.Module,
    hardware: HardwareConfig | Any,
    targets: Targets = targets.ALL_LINEAR,
    *,
    heads: Sequence[str] = HEAD_NAMES,
    seed: int | None = None,
) -> nn.Module:
    """Replace, in place, every nn.Linear whose path matches `targets` (heads and the output
    embedding `lm_head` excluded: they stay digital) by an `AnalogLinear` with the same
    weights. Returns `model`.

    `hardware` is a HardwareConfig or an AIHWKIT `TorchInferenceRPUConfig` (`rpu_config`).

    `seed` makes the layers' noise seeds reproducible (drawn in module order from it).
    """
    hardware = as_hardware(hardware, "convert_to_analog")
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    for path, lin in _linear_layers(model, targets, "convert_to_analog", heads):
        if isinstance(lin, AnalogLinear):
            continue
        set_module(model, path, AnalogLinear.from_linear(lin, hardware, generator=gen))
    return model


# ---------------------------------------------------------------------- LoRA
def attach_lora(
    model: nn.Module,
    rank: int,
    alpha: float,
    dropout: float = 0.0,
    targets: Targets = targets.QV,
    *,
    train_head: bool = True,
    heads: Sequence[str] = HEAD_NAMES,
) -> nn.Module:
    """Wrap each target layer (nn.Linear or AnalogLinear) in a `LoRALinear` and freeze the rest
    of the model (task heads stay trainable unless `train_head=False`). Returns `model`."""
    layers = _linear_layers(model, targets, "attach_lora", heads)
    _freeze_except_adapters(model, train_head, heads)
    for path, lin in layers:
        set_module(model, path, LoRALinear(lin, rank, alpha, dropout))
    return model


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """Module path -> LoRALinear of every LoRA in `model`."""
    return {p: m for p, m in model.named_modules() if isinstance(m, LoRALinear)}


def single_lora(model: nn.Module, where: str) -> tuple[dict[str, LoRALinear], int, float]:
    """(path -> LoRALinear, rank, alpha) of a model whose LoRA layers share one rank and alpha.

    Raises:
        ValueError: no LoRA layer, or several (rank, alpha) pairs.
    """
    layers = lora_layers(model)
    if not layers:
        raise ValueError(f"{where}: the model has no LoRALinear layer (call attach_lora first)")
    specs = {(m.rank, m.alpha) for m in layers.values()}
    if len(specs) != 1:
        raise ValueError(f"{where}: the LoRA layers have (rank, alpha) pairs {sorted(specs)}; expected one")
    rank, alpha = next(iter(specs))
    return layers, rank, alpha


def lora_adapter(model: nn.Module) -> tuple[dict[str, tuple[Tensor, Tensor]], float]:
    """The model's LoRA as (path -> (A [r, d_in], B [d_out, r]) detached copies, alpha), the
    input of `LoRAPool.from_adapters`. All layers must share rank and alpha."""
    layers, _, alpha = single_lora(model, "lora_adapter")
    return {p: (m.lora_A.detach().clone(), m.lora_B.detach().clone()) for p, m in layers.items()}, alpha


# ---------------------------------------------------------------------- pool
GRANULARITIES = ("block", "layer", "global")


def attach_pool(
    model: nn.Module,
    pool: LoRAPool,
    mode: str = "lorahub",
    magnitude: bool = True,
    granularity: str = "block",
    *,
    num_tasks: int | None = None,
    init_coeff: float | None = None,
    train_head: bool = True,
    heads: Sequence[str] = HEAD_NAMES,
    pool_on_crossbar: bool | None = None,
) -> nn.Module:
    """Fuse a frozen `pool` into `model` (LoRAFusion): each pooled layer becomes a
    `LoRAFusionLinear`; trainable are the coefficients (one [K] vector per group: transformer
    block, layer, or the whole model by `granularity`), the magnitudes (if `magnitude`) and the
    task heads (unless `train_head=False`). Everything else, the pool included, is frozen.

    Where the pool lives, per layer (`pool_on_crossbar`):

    - None (default): on the crossbar when the layer's base is an `AnalogLinear`, as an
      `AnalogPoolLayer` with that layer's `HardwareConfig` (A_cat and B_cat programmed like
      any analog layer; its noise seeds derive from the base layer's seed); digital otherwise;
    - True: on the crossbar; every pooled layer must be an `AnalogLinear`;
    - False: digital (`pool_fusion` in fp32, no hardware effects), the ablation.

    A digital pool shares its tensors with `pool`; a pool on the crossbar holds copies (what is
    programmed), conditioned by the hardware's clip recipe like any converted weights.

    Args:
        num_tasks: give every group a coefficient table [num_tasks, K] (and magnitudes
            [num_tasks, d_out]) for mixed-task batches; select tasks with `task_context`.
        init_coeff: initial value of every coefficient (default 1/K; zero would stall lorahub,
            whose Δy is quadratic in c).

    Raises:
        ValueError: a pool layer missing from the model, not a linear layer, or of another shape.
    """
    if not isinstance(pool, LoRAPool):
        raise ValueError(f"attach_pool: pool is a {type(pool).__name__}; expected a LoRAPool")
    if mode not in POOL_MODES:
        raise ValueError(f"attach_pool: mode = {mode!r}; expected one of {POOL_MODES}")
    if granularity not in GRANULARITIES:
        raise ValueError(f"attach_pool: granularity = {granularity!r}; expected one of {GRANULARITIES}")
    if pool_on_crossbar is not None and not isinstance(pool_on_crossbar, bool):
        raise ValueError(f"attach_pool: pool_on_crossbar = {pool_on_crossbar!r}; expected True, False or None")
    if num_tasks is not None and (isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1):
        raise ValueError(f"attach_pool: num_tasks = {num_tasks!r}; expected a positive integer or None")
    modules = dict(model.named_modules())
    for name in pool.layer_names:
        mod = modules.get(name)
        if mod is None:
            raise ValueError(f"attach_pool: the pool targets {name!r}, which is not a module of the model; expected the pool's layers to exist")
        if isinstance(mod, AdaptedLinear):
            raise ValueError(f"attach_pool: {name!r} already has an adapter ({type(mod).__name__}); expected a plain linear layer")
        if not isinstance(mod, nn.Linear):
            raise ValueError(f"attach_pool: {name!r} is a {type(mod).__name__}; expected nn.Linear or AnalogLinear")
        lay = pool.layer(name)
        if (mod.out_features, mod.in_features) != (lay.out_features, lay.in_features):
            raise ValueError(
                f"attach_pool: {name!r} is [{mod.out_features}, {mod.in_features}] but its pool is "
                f"[{lay.out_features}, {lay.in_features}]; expected the same shape"
            )
        if pool_on_crossbar and not isinstance(mod, AnalogLinear):
            raise ValueError(
                f"attach_pool: pool_on_crossbar=True but {name!r} is a {type(mod).__name__}; expected an "
                "AnalogLinear (convert_to_analog first), or pool_on_crossbar=None/False"
            )
        if lay.A.dtype != mod.weight.dtype or lay.A.device != mod.weight.device:
            raise ValueError(
                f"attach_pool: {name!r} is {mod.weight.dtype} on {mod.weight.device} but the pool is "
                f"{lay.A.dtype} on {lay.A.device}; expected the same (pool.to(...))"
            )
    _freeze_except_adapters(model, train_head, heads)
    pool.requires_grad_(False)
    K = pool.num_adapters
    value = 1.0 / K if init_coeff is None else float(init_coeff)
    groups: dict[str, nn.Parameter] = {}
    for name in pool.layer_names:
        key = {"block": block_key(name), "layer": name, "global": ""}[granularity]
        if key not in groups:
            ref = pool.layer(name).A
            shape = (K,) if num_tasks is None else (num_tasks, K)
            groups[key] = nn.Parameter(torch.full(shape, value, dtype=ref.dtype, device=ref.device))
        base = modules[name]
        layer_pool: PoolLayer | AnalogPoolLayer = pool.layer(name)
        if isinstance(base, AnalogLinear) and pool_on_crossbar is not False:
            layer_pool = AnalogPoolLayer.from_pool_layer(layer_pool, base.hardware, pool_seeds(int(base.rng_state[0])))
        set_module(model, name, LoRAFusionLinear(base, layer_pool, pool.scaling, groups[key], mode, magnitude))
    return model


@contextlib.contextmanager
def task_context(model: nn.Module, task_ids: Tensor | None) -> Iterator[None]:
    """Within the block, every `LoRAFusionLinear` of `model` uses `task_ids` (int64, one task
    per sample, shape a prefix of the inputs' leading dims, e.g. [batch])."""
    layers = [m for m in model.modules() if isinstance(m, LoRAFusionLinear)]
    previous = [m.task_ids for m in layers]
    for m in layers:
        m.task_ids = task_ids
    try:
        yield
    finally:
        for m, p in zip(layers, previous):
            m.task_ids = p


# ---------------------------------------------------------------------- reports
def trainable_parameters(model: nn.Module, heads: Sequence[str] = HEAD_NAMES) -> dict[str, int]:
    """Counts of trainable parameters by kind: "coefficients", "magnitudes", "lora", "head",
    "other" and "total" (shared tensors counted once)."""
    kinds: dict[int, str] = {}
    for path, mod in model.named_modules():
        if isinstance(mod, LoRAFusionLinear):
            kinds.setdefault(id(mod.coeffs), "coefficients")
            if mod.magnitude is not None:
                kinds.setdefault(id(mod.magnitude), "magnitudes")
        elif isinstance(mod, LoRALinear):
            kinds.setdefault(id(mod.lora_A), "lora")
            kinds.setdefault(id(mod.lora_B), "lora")
    counts = dict.fromkeys(("coefficients", "magnitudes", "lora", "head", "other"), 0)
    for path, p in model.named_parameters():  # named_parameters yields a shared tensor once
        if not p.requires_grad:
            continue
        kind = kinds.get(id(p), "head" if is_head(path, heads) else "other")
        counts[kind] += p.numel()
    counts["total"] = sum(counts.values())
    return counts
