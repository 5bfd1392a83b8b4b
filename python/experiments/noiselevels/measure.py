"""One read of the pretrained encoder on STS-B's dev pairs and how far it is from the digital
read: the sentence embeddings' zero-shot correlation with the gold scores, and the relative
error of the embeddings and of every layer's hidden states.

The encoder (all-MiniLM-L6-v2 by default) is a sentence-embedding model: the cosine of two
mean-pooled sentence embeddings is its STS prediction, with no training. So how much of that
signal a hardware read keeps, and how far its hidden states move, says how noisy the model that
a LoRA trains through (the training read) or is deployed on (the programmed, drifted read) is,
before any adapter is trained.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

import lorafusion_ext as lf
from harness import Cell
from lorafusion_ext.data.glue import load_glue
from lorafusion_ext.evaluation.metrics import pearson, spearman
from lorafusion_ext.models import load_encoder

from .protocol import DEPLOYED, DIGITAL, Settings


@dataclass(frozen=True)
class Pairs:
    """STS-B sentence pairs: `first[i]`, `second[i]` with gold similarity `gold[i]` (0-5)."""

    first: list[str]
    second: list[str]
    gold: np.ndarray


def load_pairs(s: Settings) -> Pairs:
    """The STS-B dev pairs of `s` (all, or a seeded subset of `s.pairs`)."""
    examples = load_glue("stsb", "dev", s.glue_dir, max_examples=s.pairs, seed=0)
    return Pairs([e.texts[0] for e in examples], [e.texts[1] for e in examples],
                 np.array([float(e.label) for e in examples]))


@dataclass
class Batches:
    """The pairs' sentences (sentence i < n_pairs is pair i's first, n_pairs + i its second),
    tokenised once in batches that hold both sentences of each of their pairs, so that a read
    whose noise is drawn per call (the training modifier) embeds the two sentences of a pair with
    the same draw, as a training step does; pairs of similar length share a batch (less
    padding). `order[j]` is the sentence index of the j-th batched row."""

    encodings: list[dict[str, Tensor]]
    order: list[int]
    n: int
    layer_sentences: int


def batches(pairs: Pairs, tokenizer: Any, s: Settings) -> Batches:
    sentences = pairs.first + pairs.second
    n_pairs = len(pairs.first)
    if tokenizer.pad_token is None:  # decoder tokenizers (Llama, GPT-2) have none; the mask hides it
        tokenizer.pad_token = tokenizer.eos_token
    lengths = [len(tokenizer(x, truncation=True, max_length=s.max_length)["input_ids"]) for x in sentences]
    by_length = sorted(range(n_pairs), key=lambda i: (max(lengths[i], lengths[n_pairs + i]), i))
    per_batch = max(1, s.batch_size // 2)
    order: list[int] = []
    enc = []
    for k in range(0, n_pairs, per_batch):
        group = by_length[k : k + per_batch]
        rows = group + [n_pairs + i for i in group]
        order += rows
        enc.append(tokenizer([sentences[i] for i in rows], padding=True, truncation=True, max_length=s.max_length,
                             return_tensors="pt"))
    return Batches(enc, order, len(sentences), min(s.layer_sentences, len(sentences)))


@dataclass
class Read:
    """What one read of every sentence gives.

    embeddings: [n_sentences, hidden] mean-pooled last hidden states, in sentence order.
    cls: [n_sentences, hidden] the last layer's first token (what a classification head's pooler reads).
    layers: per layer 1..L, the hidden states [tokens, hidden] of the first `layer_sentences`
        sentences' real tokens, in batch order (the same order in every read).
    """

    embeddings: Tensor
    cls: Tensor
    layers: list[Tensor]


@torch.no_grad()
def read(model: nn.Module, b: Batches) -> Read:
    """`model` (its modules' train/eval flags as they are) on every batch of `b`."""
    emb = cls = None
    per_layer: list[list[Tensor]] = []
    row = 0
    for enc in b.encodings:
        out = model(**enc, output_hidden_states=True)
        mask = enc["attention_mask"].unsqueeze(-1).to(out.last_hidden_state.dtype)
        pooled = (out.last_hidden_state * mask).sum(1) / mask.sum(1)
        idx = torch.tensor(b.order[row : row + pooled.shape[0]])
        if emb is None:
            emb = torch.zeros(b.n, pooled.shape[1])
            cls = torch.zeros(b.n, pooled.shape[1])
            per_layer = [[] for _ in out.hidden_states[1:]]
        emb[idx] = pooled.float()
        cls[idx] = out.last_hidden_state[:, 0].float()
        keep = idx < b.layer_sentences
        if bool(keep.any()):
            real = enc["attention_mask"][keep].bool()
            for layer, h in zip(per_layer, out.hidden_states[1:]):
                layer.append(h[keep][real].float())
        row += pooled.shape[0]
    assert emb is not None and cls is not None
    return Read(emb, cls, [torch.cat(x) if x else torch.zeros(0, emb.shape[1]) for x in per_layer])


def _row_rel_err(x: Tensor, ref: Tensor) -> float:
    """Mean over rows of ||x - ref|| / ||ref||."""
    return float(((x - ref).norm(dim=1) / ref.norm(dim=1).clamp_min(1e-12)).mean())


def compare(r: Read, ref: Read, pairs: Pairs) -> dict[str, Any]:
    """The zero-shot STS scores of read `r`, and its errors against the digital read `ref`."""
    n = len(pairs.first)
    cos = nn.functional.cosine_similarity(r.embeddings[:n], r.embeddings[n:]).numpy()
    return {
        "pearson": pearson(cos, pairs.gold), "spearman": spearman(cos, pairs.gold),
        "embedding_rel_err": _row_rel_err(r.embeddings, ref.embeddings),
        "cls_rel_err": _row_rel_err(r.cls, ref.cls),
        "layer_rel_err": [float((h - h0).norm() / h0.norm().clamp_min(1e-12)) for h, h0 in zip(r.layers, ref.layers)],
    }


class Context:
    """What every cell of a process reads with: the pairs, their batches, the digital read."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        self.pairs = load_pairs(s)
        self.digital, tok = load_encoder(s.model)
        self.batches = batches(self.pairs, tok, s)
        self.reference = read(self.digital.eval(), self.batches)

    def encoder(self) -> nn.Module:
        """A fresh copy of the digital encoder, to convert (the conversion replaces its layers)."""
        return copy.deepcopy(self.digital).eval()


def digital_cell(ctx: Context) -> dict[str, Any]:
    return {"sentences": ctx.batches.n, "layer_sentences": ctx.batches.layer_sentences,
            "reads": [compare(ctx.reference, ctx.reference, ctx.pairs)]}


def train_cell(ctx: Context, scale: float) -> dict[str, Any]:
    """The training read (every analog layer in training mode, unprogrammed, as HWA-LoRA trains;
    no dropout) with the modifier's std times `scale`, one noise draw per trial."""
    s = ctx.s
    hw = s.training_hardware(scale)
    reads = []
    for trial in range(s.trials):
        model = lf.convert_to_analog(ctx.encoder(), hw, seed=trial).eval()
        for _, layer in lf.analog_layers(model):
            layer.train()
        reads.append(compare(read(model, ctx.batches), ctx.reference, ctx.pairs))
    return {"modifier_std": hw.modifier.std if hw.modifier.kind != "none" else 0.0, "reads": reads}


def deployed_cell(ctx: Context) -> dict[str, Any]:
    """The preset programmed and drifted (`lf.drift_sweep`: reprogrammed each trial, seed 0),
    read in eval mode at each time: per time, the reads of every trial."""
    s = ctx.s
    model = lf.convert_to_analog(ctx.encoder(), s.hardware, seed=0)
    reads: list[dict[str, Any]] = []

    def evaluate(m: nn.Module) -> float:
        reads.append(compare(read(m, ctx.batches), ctx.reference, ctx.pairs))
        return reads[-1]["pearson"]

    lf.drift_sweep(model, evaluate, times=s.times, trials=s.trials, seed=0, progress=False)
    k = len(s.times)
    return {"times": list(s.times), "reads_by_time": [[reads[t * k + i] for t in range(s.trials)] for i in range(k)]}


COMPUTE: dict[str, Callable[[Context, Cell], dict[str, Any]]] = {
    DIGITAL: lambda ctx, cell: digital_cell(ctx),
    "train": lambda ctx, cell: train_cell(ctx, float(cell.param("scale"))),
    DEPLOYED: lambda ctx, cell: deployed_cell(ctx),
}
