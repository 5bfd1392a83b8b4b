"""Prompts and answers of generation tasks, tokenised for training a causal or a seq2seq
language model with the loss on the answer tokens only.

Prompt format (answer-only, as BBH's direct prompting): ``"Q: {input}\\nA:"``; the answer
follows after one space and ends with the end-of-sequence token, which is what the model learns
to stop on. A causal LM reads prompt and answer as one sequence (labels -100 on the prompt and
the padding); a seq2seq model reads the prompt in its encoder and predicts the answer with its
decoder. Prompts longer than the budget lose their beginning, never the end of the question;
answers are never truncated.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from lorafusion_ext.data.bbh import GenerationExample
from lorafusion_ext.data.tokenize import EncodedDataset

IGNORE_INDEX = -100
#: The attribute `load_generator` sets on a tokenizer: whether its model is encoder-decoder.
ENCODER_DECODER_ATTR = "lorafusion_encoder_decoder"


def format_prompt(text: str) -> str:
    """The prompt a model sees for one input."""
    return f"Q: {text}\nA:"


def is_encoder_decoder(tokenizer: Any) -> bool:
    """Whether `tokenizer` belongs to a seq2seq model (marked by `load_generator` or
    `mark_model_kind`).

    Raises:
        ValueError: the tokenizer is not marked.
    """
    kind = getattr(tokenizer, ENCODER_DECODER_ATTR, None)
    if not isinstance(kind, bool):
        raise ValueError(f"tokenizer {type(tokenizer).__name__} does not say whether its model is causal or seq2seq; "
                         "load it with lorafusion_ext.models.load_generator, or call "
                         "lorafusion_ext.data.generation.mark_model_kind(tokenizer, model)")
    return kind


def mark_model_kind(tokenizer: Any, model: Any) -> Any:
    """Record on `tokenizer` whether `model` is encoder-decoder (what the encoders need);
    returns `tokenizer`. Gives a causal tokenizer a pad token (its end-of-sequence token)
    when it has none."""
    setattr(tokenizer, ENCODER_DECODER_ATTR, bool(getattr(model.config, "is_encoder_decoder", False)))
    if tokenizer.pad_token_id is None:
        if eos_token_id(tokenizer) is None:
            raise ValueError(f"tokenizer {type(tokenizer).__name__} has neither a pad nor an end-of-sequence token")
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.sep_token
    return tokenizer


def eos_token_id(tokenizer: Any) -> int | None:
    """The token that ends an answer: end-of-sequence, else the separator (BERT-style
    vocabularies)."""
    eos = tokenizer.eos_token_id
    return eos if eos is not None else tokenizer.sep_token_id


def prompt_ids(tokenizer: Any, prompt: str, budget: int) -> list[int]:
    """Token ids of `prompt` with the tokenizer's special tokens, at most `budget` of them: a
    longer prompt keeps its special prefix and its end (the question)."""
    if budget < 1:
        raise ValueError(f"prompt budget = {budget} tokens; expected >= 1 (raise max_length)")
    full = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    if len(full) <= budget:
        return list(full)
    plain = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    n_prefix = len(full) - len(plain) if list(full[len(full) - len(plain):]) == list(plain) else 0
    n_prefix = min(n_prefix, budget - 1)
    return list(full[:n_prefix]) + list(full[len(full) - (budget - n_prefix):])


def answer_ids(tokenizer: Any, target: str) -> list[int]:
    """Token ids of an answer as it follows the prompt (one leading space), ending with the
    end-of-sequence token."""
    eos = eos_token_id(tokenizer)
    if eos is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no end-of-sequence token to end answers with")
    return list(tokenizer(" " + target, add_special_tokens=False)["input_ids"]) + [eos]


def target_ids(tokenizer: Any, target: str) -> list[int]:
    """A seq2seq decoder's target tokens for an answer, ending with the end-of-sequence token
    (added when the tokenizer's own target processing does not)."""
    ids = list(tokenizer(text_target=target)["input_ids"])
    eos = eos_token_id(tokenizer)
    if eos is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no end-of-sequence token to end answers with")
    return ids if ids and ids[-1] == eos else ids + [eos]


def encode_generation(examples: Sequence[GenerationExample], tokenizer: Any, max_length: int) -> EncodedDataset:
    """Training tensors for `examples`, laid out for the tokenizer's model kind
    (`is_encoder_decoder`): `input_ids`, `attention_mask` [N, T] and `labels` (the answer's
    tokens, -100 elsewhere). T is the longest example, at most `max_length` (a causal LM's
    prompt and answer together; a seq2seq model's prompt).

    Raises:
        ValueError: no examples, or an answer that does not fit `max_length` with one prompt token.
    """
    if not examples:
        raise ValueError("encode_generation: no examples")
    if max_length < 2:
        raise ValueError(f"max_length = {max_length}; expected >= 2")
    seq2seq = is_encoder_decoder(tokenizer)
    pad = tokenizer.pad_token_id
    rows, label_rows = [], []
    for e in examples:
        answer = answer_ids(tokenizer, e.target) if not seq2seq else target_ids(tokenizer, e.target)
        if not seq2seq and len(answer) >= max_length:
            raise ValueError(f"encode_generation: the answer {e.target[:40]!r} is {len(answer)} tokens; "
                             f"max_length = {max_length} leaves no room for the prompt")
        prompt = prompt_ids(tokenizer, format_prompt(e.input), max_length - (0 if seq2seq else len(answer)))
        if seq2seq:
            rows.append(prompt)
            label_rows.append(answer)
        else:
            rows.append(prompt + answer)
            label_rows.append([IGNORE_INDEX] * len(prompt) + answer)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.int64)
    mask = torch.zeros((len(rows), width), dtype=torch.int64)
    label_width = width if not seq2seq else max(len(r) for r in label_rows)
    labels = torch.full((len(rows), label_width), IGNORE_INDEX, dtype=torch.int64)
    for i, (r, lab) in enumerate(zip(rows, label_rows)):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
        labels[i, : len(lab)] = torch.tensor(lab)
    return EncodedDataset({"input_ids": ids, "attention_mask": mask}, labels,
                          token_labels="target" if seq2seq else "aligned")
