"""Greedy generation through (analog) language models, answer extraction and BBH's exact match.

Generation is Hugging Face's `generate` (greedy, KV cache): after the prompt's prefill every
decode step feeds one token per sequence (M = 1 rows per layer call), and every analog layer
draws fresh noise on every call (its counter-based RNG advances per call). It stops at the
end-of-sequence token or at the first newline, whichever comes first, per sequence.

Scoring (BBH's exact match): the answer is the text after the last "the answer is" when the
model writes one (chain-of-thought style), else the generated text up to the first newline;
both sides are compared case-insensitively with whitespace collapsed and a final period
dropped. A multiple-choice target "(B)" also accepts "B" and "B)".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from lorafusion_ext.data.bbh import GenerationExample
from lorafusion_ext.data.generation import (
    ENCODER_DECODER_ATTR,
    answer_ids,
    eos_token_id,
    format_prompt,
    prompt_ids,
    target_ids,
)

_ANSWER_IS = re.compile(r"the answer is\s*", re.IGNORECASE)
_CHOICE = re.compile(r"^\(([a-z])\)$")


def extract_answer(text: str) -> str:
    """The answer in a generated text (see the module docstring)."""
    found = list(_ANSWER_IS.finditer(text))
    if found:
        text = text[found[-1].end():]
    return text.strip().split("\n", 1)[0].strip()


def normalize_answer(text: str) -> str:
    """Case-folded, whitespace collapsed, without a final period."""
    text = " ".join(text.split()).casefold()
    return text[:-1].rstrip() if text.endswith(".") else text


def exact_match(prediction: str, target: str) -> bool:
    """Whether the answer extracted from `prediction` is `target` (BBH's exact match)."""
    pred, gold = normalize_answer(extract_answer(prediction)), normalize_answer(target)
    if pred == gold:
        return True
    choice = _CHOICE.match(gold)
    return bool(choice) and pred in (choice.group(1), choice.group(1) + ")")


@dataclass
class GenerationEvalSet:
    """What evaluating a generation task needs: the examples, the tokenizer, the token budget
    of prompt plus answer (`max_length`) and of the answer alone (`max_new_tokens`)."""

    examples: list[GenerationExample]
    tokenizer: Any
    max_length: int
    max_new_tokens: int

    def __len__(self) -> int:
        return len(self.examples)


def eval_set(examples: Sequence[GenerationExample], tokenizer: Any, max_length: int,
             max_new_tokens: int | None = None) -> GenerationEvalSet:
    """An evaluation set; `max_new_tokens` defaults to the longest target's answer tokens
    (with its end-of-sequence token) plus 2.

    Raises:
        ValueError: no examples, or no room for a prompt token within `max_length`.
    """
    if not examples:
        raise ValueError("eval_set: no examples")
    if max_new_tokens is None:
        answer = target_ids if getattr(tokenizer, ENCODER_DECODER_ATTR, False) else answer_ids
        max_new_tokens = max(len(answer(tokenizer, e.target)) for e in examples) + 2
    if max_new_tokens < 1 or max_new_tokens >= max_length:
        raise ValueError(f"eval_set: max_new_tokens = {max_new_tokens} with max_length = {max_length}; expected "
                         "1 <= max_new_tokens < max_length (room for the prompt)")
    return GenerationEvalSet(list(examples), tokenizer, max_length, max_new_tokens)


def _stopping(tokenizer: Any, start: int) -> Any:
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _NewlineStop(StoppingCriteria):
        """Per sequence: done once its generated text holds a newline."""

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            texts = tokenizer.batch_decode(input_ids[:, start:], skip_special_tokens=True)
            return torch.tensor(["\n" in t for t in texts], dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_NewlineStop()])


@torch.no_grad()
def generate(model: nn.Module, tokenizer: Any, prompts: Sequence[str], max_length: int, max_new_tokens: int,
             batch_size: int = 16) -> list[str]:
    """Greedy continuations of `prompts` (texts, without special tokens), with a KV cache.
    Prompts are cut to `max_length - max_new_tokens` tokens (their end kept) for a causal LM,
    to `max_length` for a seq2seq encoder."""
    if batch_size < 1:
        raise ValueError(f"batch_size = {batch_size}; expected a positive integer")
    seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_token_id(tokenizer)
    eos = eos_token_id(tokenizer)
    budget = max_length if seq2seq else max_length - max_new_tokens
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            rows = [prompt_ids(tokenizer, p, budget) for p in prompts[start:start + batch_size]]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), pad, dtype=torch.int64)
            mask = torch.zeros((len(rows), width), dtype=torch.int64)
            for i, r in enumerate(rows):  # a causal LM continues from the right: pad on the left
                cols = slice(0, len(r)) if seq2seq else slice(width - len(r), width)
                ids[i, cols] = torch.tensor(r)
                mask[i, cols] = 1
            ids, mask = ids.to(device), mask.to(device)
            new_from = 1 if seq2seq else width  # seq2seq outputs start with the decoder start token
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                 num_beams=1, use_cache=True, pad_token_id=pad, eos_token_id=eos,
                                 stopping_criteria=_stopping(tokenizer, new_from))
            out += tokenizer.batch_decode(gen[:, new_from:], skip_special_tokens=True)
    finally:
        model.train(was_training)
    return out


def evaluate_generation(model: nn.Module, data: GenerationEvalSet, batch_size: int = 16) -> dict[str, float]:
    """{"exact_match": fraction in [0, 1]} of `model` on `data`."""
    texts = generate(model, data.tokenizer, [format_prompt(e.input) for e in data.examples], data.max_length,
                     data.max_new_tokens, batch_size)
    hits = [exact_match(t, e.target) for t, e in zip(texts, data.examples)]
    return {"exact_match": sum(hits) / len(hits)}


__all__ = ["GenerationEvalSet", "eval_set", "evaluate_generation", "exact_match", "extract_answer", "generate",
           "normalize_answer"]
