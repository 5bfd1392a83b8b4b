"""The training loop shared by HWA-LoRA, pool and fusion training: seeded, resumable from
checkpoints, with progress bars and optional Weights & Biases logging."""

from __future__ import annotations

import math
import os
import random
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from lorafusion_ext.data.tokenize import EncodedDataset
from lorafusion_ext.evaluation.metrics import compute_metrics
from lorafusion_ext.training import distributed


@dataclass
class TrainConfig:
    """How long and how to train.

    Attributes:
        epochs: passes over the training set (fractions allowed); ignored when `steps` is set.
        steps: optimizer steps (overrides `epochs`).
        batch_size: examples per step.
        seed: seeds the data order, dropout and the head's initialisation.
        checkpoint_dir: where to save checkpoints (None: no checkpoints).
        checkpoint_every: steps between checkpoints (0: only at the end).
        resume: continue from the latest checkpoint in `checkpoint_dir` when there is one.
        log: "wandb" to log to Weights & Biases (needs the wandb package), or None.
        log_every: steps between logged losses.
        progress: show a progress bar.
        group_by_length: batches of examples of similar length (see
            `EncodedDataset.batches`): groups of this many batches are sorted by length, then
            the batches are shuffled. Cuts the padding, and with it most of the cost of a step
            on short-sentence tasks; 0 (the default): plain shuffling.
    """

    epochs: float = 1.0
    steps: int | None = None
    batch_size: int = 32
    seed: int = 0
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0
    resume: bool = False
    log: str | None = None
    log_every: int = 10
    progress: bool = True
    project: str = "lorafusion"
    run_name: str | None = None
    group_by_length: int = 0

    def __post_init__(self) -> None:
        if self.group_by_length < 0:
            raise ValueError(f"group_by_length = {self.group_by_length}; expected 0 (off) or a positive number of batches")
        if self.batch_size < 1:
            raise ValueError(f"batch_size = {self.batch_size}; expected a positive integer")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps = {self.steps}; expected a positive integer or None")
        if self.steps is None and not (self.epochs > 0 and math.isfinite(self.epochs)):
            raise ValueError(f"epochs = {self.epochs}; expected a positive number")
        if self.log not in (None, "wandb"):
            raise ValueError(f"log = {self.log!r}; expected None or 'wandb'")
        if self.resume and not self.checkpoint_dir:
            raise ValueError("resume=True needs a checkpoint_dir")

    def total_steps(self, n_examples: int) -> int:
        if self.steps is not None:
            return self.steps
        return max(1, math.ceil(self.epochs * math.ceil(n_examples / self.batch_size)))


@dataclass
class TrainResult:
    steps: int
    losses: list[float] = field(default_factory=list)
    resumed_from: int = 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _wandb_run(cfg: TrainConfig, extra: dict[str, Any]) -> Any:
    if cfg.log != "wandb":
        return None
    try:
        import wandb
    except ImportError as exc:
        raise RuntimeError("log='wandb' (--log) needs Weights & Biases: pip install wandb") from exc
    return wandb.init(project=cfg.project, name=cfg.run_name, config={**asdict(cfg), **extra})


def _batches(data: EncodedDataset, cfg: TrainConfig, epoch: int):
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
    return data.batches(cfg.batch_size, shuffle=True, generator=g, group_by_length=cfg.group_by_length)


def _checkpoint_path(cfg: TrainConfig) -> str | None:
    return os.path.join(cfg.checkpoint_dir, "checkpoint.pt") if cfg.checkpoint_dir else None


def _trainable_state(model: nn.Module) -> dict[str, Tensor]:
    """What training changes: trainable parameters and every buffer (RNG states included)."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    state = model.state_dict(keep_vars=True)
    return {k: v.detach().clone() for k, v in state.items()
            if isinstance(v, Tensor) and (k in names or not isinstance(v, nn.Parameter))}


def train(
    model: nn.Module,
    data: EncodedDataset,
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    *,
    regularizer: Callable[[], Tensor] | None = None,
    description: str = "train",
    log_extra: dict[str, Any] | None = None,
) -> TrainResult:
    """Train `model` (a Hugging Face model that returns `.loss` given `labels`) on `data`.

    The learning rate decays linearly to 0 over the run. `regularizer()` is added to the loss
    (e.g. LoRAFusion's L1 on the coefficients). With `cfg.checkpoint_dir`, the trainable
    state, buffers, optimizer, scheduler and RNG states are saved, so that a resumed run equals
    an uninterrupted one.

    Under torchrun (a process group of several ranks, see `training.distributed`) every rank
    trains on its shard of each batch through DistributedDataParallel; the recorded losses are
    the means over the ranks and only rank 0 writes checkpoints, logs and the progress bar.
    """
    from tqdm.auto import tqdm

    total = cfg.total_steps(len(data))
    per_epoch = math.ceil(len(data) / cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1.0 - s / total))
    seed_everything(cfg.seed)
    world, rank = distributed.world_size(), distributed.rank()
    if rank > 0:  # dropout draws differ per rank; rank 0 draws as a single process would
        torch.manual_seed(cfg.seed * 1_000_003 + rank)
    if world > cfg.batch_size:
        raise ValueError(f"batch_size = {cfg.batch_size} cannot be split over {world} processes")
    result = TrainResult(steps=total)
    step = 0
    path = _checkpoint_path(cfg)
    if cfg.resume and path and os.path.isfile(path):
        ckpt = torch.load(path, weights_only=False)
        missing = set(ckpt["model"]) - set(model.state_dict())
        if missing:
            raise ValueError(f"checkpoint {path} does not fit the model: unknown keys {sorted(missing)[:5]}")
        model.load_state_dict(ckpt["model"], strict=False)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        rng_states = ckpt.get("torch_rng_ranks", [ckpt["torch_rng"]])
        torch.set_rng_state(rng_states[rank] if len(rng_states) == world else ckpt["torch_rng"])
        random.setstate(ckpt["py_rng"])
        np.random.set_state(ckpt["np_rng"])
        step = result.resumed_from = int(ckpt["step"])
        result.losses = list(ckpt["losses"])
    main = distributed.is_main()
    run = _wandb_run(cfg, log_extra or {}) if main else None
    model.train()
    forward = distributed.wrap(model)
    bar = tqdm(total=total, initial=step, desc=description, disable=not (cfg.progress and main), leave=False)
    epoch, skip = divmod(step, per_epoch)
    batches = _batches(data, cfg, epoch)
    for _ in range(skip):  # the resumed epoch continues where it stopped
        next(batches)
    try:
        while step < total:
            try:
                batch = next(batches)
            except StopIteration:
                epoch += 1
                batches = _batches(data, cfg, epoch)
                continue
            if world > 1:
                batch = distributed.shard(batch, rank, world)
            out = forward(**batch)
            loss = out.loss
            if regularizer is not None:
                loss = loss + regularizer()
            value = distributed.mean(float(loss.detach()))  # every rank stops together on NaN
            if not math.isfinite(value):
                raise FloatingPointError(f"{description}: loss is {value} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            result.losses.append(value)
            bar.update(1)
            if step % max(1, cfg.log_every) == 0:
                bar.set_postfix(loss=f"{np.mean(result.losses[-cfg.log_every:]):.4f}")
                if run is not None:
                    run.log({"loss": result.losses[-1], "lr": scheduler.get_last_lr()[0]}, step=step)
            if path and ((cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == total):
                rng_states = distributed.gather(torch.get_rng_state())
                if main:
                    os.makedirs(cfg.checkpoint_dir, exist_ok=True)
                    tmp = path + ".tmp"
                    torch.save({
                        "model": _trainable_state(model), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
                        "torch_rng_ranks": rng_states, "py_rng": random.getstate(),
                        "np_rng": np.random.get_state(), "step": step, "losses": result.losses,
                    }, tmp)
                    os.replace(tmp, path)
                distributed.barrier()
    finally:
        bar.close()
        if run is not None:
            run.finish()
    return result


@torch.no_grad()
def predict(model: nn.Module, data: EncodedDataset, batch_size: int = 64, regression: bool = False) -> Tensor:
    """Predictions on `data` in eval mode: class indices [N], or scores [N] for regression."""
    was_training = model.training
    model.eval()
    preds = []
    # Longest first: each batch is trimmed to its longest example, so sorting drops the padding.
    order = data.length_order()
    try:
        for batch in data.batches(batch_size, order=order):
            batch.pop("labels")
            logits = model(**batch).logits
            preds.append(logits.squeeze(-1) if regression else logits.argmax(-1))
    finally:
        model.train(was_training)
    sorted_preds = torch.cat(preds)
    out = torch.empty_like(sorted_preds)
    out[order] = sorted_preds
    return out


def evaluate(model: nn.Module, data: EncodedDataset, metrics: tuple[str, ...], batch_size: int = 64) -> dict[str, float]:
    """GLUE metrics of `model` on `data` ({name: value}; the first name is the main metric)."""
    regression = data.labels.dtype.is_floating_point
    pred = predict(model, data, batch_size, regression)
    return compute_metrics(metrics, pred.numpy(), data.labels.numpy())
