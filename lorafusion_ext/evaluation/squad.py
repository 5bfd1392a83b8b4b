"""Extractive-QA evaluation: n-best span post-processing back to context text, and SQuAD v1.1
exact match / F1 from torchmetrics' implementation of the official script.

Post-processing, per question: in each of its windows take the `n_best` highest start and end
logits, keep the pairs that lie inside the context with end >= start and at most
`max_answer_tokens` tokens, score a pair by start + end logit, and answer with the context
characters of the best pair over all windows (offsets from the fast tokenizer, so the text is
the context's own, casing and accents included). A question with no valid pair answers "".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from lorafusion_ext.data.squad import QAExample, QAFeatures


@dataclass(frozen=True)
class SpanPrediction:
    """The best span of one question: its text, score (start + end logit) and character span."""

    text: str
    score: float
    start_char: int
    end_char: int


def postprocess_qa_predictions(features: QAFeatures, start_logits: Tensor, end_logits: Tensor, n_best: int = 20,
                               max_answer_tokens: int = 30) -> dict[str, SpanPrediction]:
    """The best answer span of every question of `features`.

    Args:
        features: the tokenised windows (`encode_squad`).
        start_logits, end_logits: [F, L] per window and token (L <= the windows' length; a
            batch trimmed of padding columns is fine).
        n_best: start and end candidates per window.
        max_answer_tokens: longest answer, in tokens.

    Returns:
        question id -> SpanPrediction (text "" and score -inf when no window has a valid span).
    """
    n = len(features)
    if start_logits.shape != end_logits.shape or start_logits.dim() != 2 or start_logits.shape[0] != n:
        raise ValueError(
            f"start_logits {tuple(start_logits.shape)} and end_logits {tuple(end_logits.shape)}: expected both "
            f"[{n} windows, tokens]"
        )
    if n_best < 1 or max_answer_tokens < 1:
        raise ValueError(f"n_best = {n_best}, max_answer_tokens = {max_answer_tokens}; expected both >= 1")
    width = start_logits.shape[1]
    offsets = features.offsets[:, :width]
    best: dict[int, SpanPrediction] = {}
    k = min(n_best, width)
    start_top = start_logits.float().topk(k, dim=1).indices.tolist()
    end_top = end_logits.float().topk(k, dim=1).indices.tolist()
    start_all, end_all = start_logits.float().tolist(), end_logits.float().tolist()
    example_index = features.example_index.tolist()
    for i in range(n):
        ex_i = example_index[i]
        off = offsets[i].tolist()
        s_log, e_log = start_all[i], end_all[i]
        for s in start_top[i]:
            if off[s][0] < 0:
                continue
            for e in end_top[i]:
                if off[e][0] < 0 or e < s or e - s + 1 > max_answer_tokens:
                    continue
                score = s_log[s] + e_log[e]
                current = best.get(ex_i)
                if current is None or score > current.score:
                    ctx = features.examples[ex_i].context
                    best[ex_i] = SpanPrediction(ctx[off[s][0] : off[e][1]], score, off[s][0], off[e][1])
    empty = SpanPrediction("", float("-inf"), -1, -1)
    return {ex.id: best.get(j, empty) for j, ex in enumerate(features.examples)}


def squad_scores(predictions: dict[str, str], examples: Sequence[QAExample]) -> dict[str, float]:
    """SQuAD v1.1 exact match and F1 (fractions in [0, 1]) of `predictions` (question id ->
    answer text) against every gold answer of `examples` (the best per question, as the
    official script), from torchmetrics' `squad`.

    Raises:
        ValueError: a question without a prediction, or no examples.
    """
    from torchmetrics.functional.text import squad

    if not examples:
        raise ValueError("squad_scores: no examples")
    missing = [e.id for e in examples if e.id not in predictions]
    if missing:
        raise ValueError(f"squad_scores: no prediction for {len(missing)} questions, e.g. {missing[:3]}")
    preds = [{"prediction_text": predictions[e.id], "id": e.id} for e in examples]
    target = [{"answers": {"text": list(e.answers), "answer_start": list(e.answer_starts)}, "id": e.id}
              for e in examples]
    out = squad(preds, target)
    return {"exact_match": float(out["exact_match"]) / 100.0, "f1": float(out["f1"]) / 100.0}


@torch.no_grad()
def qa_logits(model: nn.Module, features: QAFeatures, batch_size: int = 64) -> tuple[Tensor, Tensor]:
    """(start_logits, end_logits) [F, max_length] of a question-answering model in eval mode
    (padding columns trimmed per batch are filled with -inf)."""
    was_training = model.training
    model.eval()
    length = features.offsets.shape[1]
    starts, ends = [], []
    try:
        for batch in features.data.batches(batch_size):
            for name in features.data.label_names:
                batch.pop(name)
            out = model(**batch)
            pad = length - out.start_logits.shape[1]
            starts.append(nn.functional.pad(out.start_logits.float(), (0, pad), value=float("-inf")))
            ends.append(nn.functional.pad(out.end_logits.float(), (0, pad), value=float("-inf")))
    finally:
        model.train(was_training)
    return torch.cat(starts), torch.cat(ends)


def evaluate_qa(model: nn.Module, features: QAFeatures, batch_size: int = 64, n_best: int = 20,
                max_answer_tokens: int = 30) -> dict[str, float]:
    """{"f1", "exact_match"} (fractions) of a question-answering model on `features`."""
    start, end = qa_logits(model, features, batch_size)
    spans = postprocess_qa_predictions(features, start, end, n_best, max_answer_tokens)
    return squad_scores({k: v.text for k, v in spans.items()}, features.examples)
