"""Data-parallel training with `torch.distributed`, launched by `torchrun` (docs/usage.md).

`torchrun --nproc_per_node N -m lorafusion_ext.apps.cli hwa-lora ...` starts N processes; each
joins the process group from the environment torchrun sets (`init_from_env`), trains the same
model on its shard of every batch through `DistributedDataParallel`, and only rank 0 writes
files, logs and progress bars.

Each global batch of `batch_size` examples is split into N contiguous shards, so a run has the
hyper-parameters of the single-process run with the same `batch_size`; DDP averages the shard
gradients (equal to the full-batch gradient when the shards have equal size). The analog
layers' noise seeds stay identical on every rank, like the training modifier of one process
(one weight draw shared by the whole batch); dropout draws differ per rank.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn


def init_from_env() -> bool:
    """Join the process group when launched by torchrun with more than one process.

    Returns whether this process is one of several. The backend is NCCL when a GPU is visible,
    gloo otherwise.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return dist.get_world_size() > 1


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that writes files and logs."""
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def shard(batch: dict[str, Tensor], index: int, count: int) -> dict[str, Tensor]:
    """Shard `index` of `count` contiguous row blocks of every tensor in `batch`."""
    rows = next(iter(batch.values())).shape[0]
    if rows < count:
        raise ValueError(f"a batch of {rows} examples cannot be split over {count} processes; "
                         f"expected batch_size >= the number of processes")
    return {k: torch.tensor_split(v, count)[index] for k, v in batch.items()}


def wrap(model: nn.Module) -> nn.Module:
    """`model` inside DistributedDataParallel when running on several processes, else itself."""
    if world_size() <= 1:
        return model
    device_ids = [torch.cuda.current_device()] if torch.cuda.is_available() else None
    # Buffers (the analog layers' RNG states) advance identically on every rank: no broadcast.
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)


def mean(value: float) -> float:
    """The mean of `value` over the ranks."""
    if world_size() <= 1:
        return value
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"  # NCCL reduces GPU tensors only
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / world_size()


def gather(obj: Any) -> list[Any]:
    """`obj` of every rank, in rank order (on every rank)."""
    if world_size() <= 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out
