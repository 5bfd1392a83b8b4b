"""Tokenisation of GLUE examples into fixed tensors, and batching (shared by every task kind;
language-modelling datasets carry one label per token)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor

from lorafusion_ext.data.glue import Example


@dataclass
class EncodedDataset:
    """Tokenised examples: `input_ids`, `attention_mask` (and `token_type_ids` when the
    tokenizer makes them) [N, max_length] int64, and `labels` [N] (int64, or float32 for
    regression).

    `label_names` are the model's keyword names of the labels: ("labels",) for classification
    (`labels` [N]); several names (e.g. extractive QA's ("start_positions", "end_positions"))
    take one column each of `labels` [N, len(label_names)].

    `token_labels` says that `labels` [N, T] holds one label per token (language modelling;
    -100 where no loss is taken), and how its columns relate to the inputs: "aligned" (a causal
    LM: column j labels input column j, T = max_length) or "target" (a seq2seq decoder's
    target tokens, T of its own). None: one label per example.
    """

    features: dict[str, Tensor]
    labels: Tensor
    label_names: tuple[str, ...] = ("labels",)
    token_labels: str | None = None

    def __post_init__(self) -> None:
        if not self.label_names:
            raise ValueError("EncodedDataset: label_names is empty; expected at least one name")
        if self.token_labels not in (None, "aligned", "target"):
            raise ValueError(f"EncodedDataset: token_labels = {self.token_labels!r}; expected None, 'aligned' or 'target'")
        if self.token_labels is not None and (self.labels.dim() != 2 or len(self.label_names) != 1):
            raise ValueError(f"EncodedDataset: token labels need labels [N, T] under one name; got shape "
                             f"{tuple(self.labels.shape)} under {self.label_names}")
        if self.token_labels == "aligned" and "input_ids" in self.features and \
                self.features["input_ids"].shape[1] != self.labels.shape[1]:
            raise ValueError(f"EncodedDataset: aligned token labels have {self.labels.shape[1]} columns but the inputs "
                             f"{self.features['input_ids'].shape[1]}; expected the same")
        if len(self.label_names) > 1 and (self.labels.dim() != 2 or self.labels.shape[1] != len(self.label_names)):
            raise ValueError(
                f"EncodedDataset: labels have shape {tuple(self.labels.shape)}; expected [N, {len(self.label_names)}] "
                f"for label_names {self.label_names}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def lengths(self) -> Tensor:
        """Tokens per example [N] (int64): the attention mask's ones, or the full width without
        a mask."""
        mask = self.features.get("attention_mask")
        if mask is None:
            width = next(iter(self.features.values())).shape[1] if self.features else 0
            return torch.full((len(self),), width, dtype=torch.int64)
        return mask.sum(1)

    def length_order(self) -> Tensor:
        """Example indices [N] sorted by length, longest first (stable): batches cut from this
        order carry little padding, and `batches(..., order=...)` keeps predictions mappable."""
        return torch.sort(self.lengths(), descending=True, stable=True).indices

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                trim: bool = True, group_by_length: int = 0, order: Tensor | None = None) -> Iterator[dict[str, Tensor]]:
        """Mini-batches (dicts of tensors incl. the labels under `label_names`); `trim` cuts
        padding columns that no row of the batch uses, so short batches cost less (label
        positions always point at used columns).

        `group_by_length` (with `shuffle`): the shuffled examples are cut into groups of
        `group_by_length * batch_size`, each group is sorted by length and cut into batches, and
        the batches are shuffled: every example is still seen once per epoch, but a batch holds
        examples of similar length, so trimming removes most padding (the Hugging Face
        Trainer's `group_by_length`, with its group of 50 batches). 0: plain shuffling.
        `order`: the example indices to batch, in this order (without `shuffle`), e.g.
        `length_order()`."""
        if batch_size < 1:
            raise ValueError(f"batch_size = {batch_size}; expected a positive integer")
        if group_by_length < 0:
            raise ValueError(f"group_by_length = {group_by_length}; expected 0 (off) or a positive group size in batches")
        n = len(self)
        if order is not None:
            if shuffle:
                raise ValueError("batches: give `order` or `shuffle`, not both")
            if order.dim() != 1 or order.dtype != torch.int64:
                raise ValueError(f"batches: order must be a 1-D int64 index tensor; got {order.dtype} "
                                 f"{tuple(order.shape)}")
        else:
            order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        if shuffle and group_by_length:
            order = self._length_grouped(order, batch_size, group_by_length, generator)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = {k: v[idx] for k, v in self.features.items()}
            labels = self.labels[idx]
            if trim and "attention_mask" in batch:
                width = int(batch["attention_mask"].sum(1).max())
                batch = {k: v[:, :width] for k, v in batch.items()}
                if self.token_labels == "aligned":
                    labels = labels[:, :width].contiguous()
            if trim and self.token_labels == "target":
                used = (labels != -100).any(0).nonzero()
                # contiguous: models .view() their labels
                labels = labels[:, : int(used.max()) + 1 if len(used) else 1].contiguous()
            if len(self.label_names) == 1:
                batch[self.label_names[0]] = labels
            else:
                for j, name in enumerate(self.label_names):
                    batch[name] = self.labels[idx, j]
            yield batch


    def _length_grouped(self, order: Tensor, batch_size: int, group: int, generator: torch.Generator | None) -> Tensor:
        """`order` regrouped: per group of `group` batches sorted by length, batches shuffled
        (the last, possibly short, batch stays last so that every other batch is full)."""
        lengths = self.lengths()[order]
        size = group * batch_size
        parts = []
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            parts.append(chunk[torch.sort(lengths[start : start + size], descending=True, stable=True).indices])
        grouped = torch.cat(parts) if parts else order
        full = len(grouped) // batch_size
        perm = torch.randperm(full, generator=generator)
        body = grouped[: full * batch_size].view(full, batch_size)[perm].reshape(-1)
        return torch.cat([body, grouped[full * batch_size :]])


def encode(examples: Sequence[Example], tokenizer: Any, max_length: int = 128, regression: bool = False) -> EncodedDataset:
    """Tokenise once, padded to `max_length` (truncating longer inputs)."""
    if not examples:
        raise ValueError("encode: no examples")
    if max_length < 2:
        raise ValueError(f"max_length = {max_length}; expected >= 2")
    first = [e.texts[0] for e in examples]
    second = [e.texts[1] for e in examples] if len(examples[0].texts) > 1 else None
    enc = tokenizer(first, second, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    features = {k: v.to(torch.int64) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    dtype = torch.float32 if regression else torch.int64
    labels = torch.tensor([e.label for e in examples], dtype=dtype)
    return EncodedDataset(features, labels)
