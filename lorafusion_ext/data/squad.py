"""SQuAD v1.1 extractive question answering: loading and tokenisation with a stride.

Two sources:

* online (no local folder): Hugging Face `datasets` ``squad``, its ``train`` and ``validation``
  splits;
* offline (a local folder, `--glue-dir`): only the official dev set is held,
  ``<glue_dir>/squad/dev-v1.1.json.zip`` (or the unzipped ``dev-v1.1.json``). Its 48 articles are
  split *by article* so that no paragraph is shared between the two sides:
  ``OFFLINE_TRAIN_ARTICLES`` (38) for training and the remaining 10 for evaluation, the article
  order shuffled with ``random.Random(OFFLINE_SPLIT_SEED)``. `split_description` says which
  split a run used; every report quotes it.

Tokenisation follows the usual sliding-window recipe: question first, context second, only the
context truncated; a context longer than `max_length` becomes several features that overlap by
`doc_stride` tokens. Character offsets from a *fast* tokenizer give each training feature its
answer's start/end token (the [CLS] token, index 0, when the answer is not inside that window)
and let evaluation map predicted token spans back to the exact context text.
"""

from __future__ import annotations

import json
import os
import random
import zipfile
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from lorafusion_ext.data.tokenize import EncodedDataset

#: Seed of the offline article split (fixed: changing it changes every offline SQuAD number).
OFFLINE_SPLIT_SEED = 1234
#: Articles of the official dev set used for training offline; the other 10 evaluate.
OFFLINE_TRAIN_ARTICLES = 38
#: Articles in the official SQuAD v1.1 dev set.
OFFLINE_ARTICLES = 48
_FILES = ("dev-v1.1.json.zip", "dev-v1.1.json")


@dataclass(frozen=True)
class QAExample:
    """One SQuAD question.

    Attributes:
        id: the question id.
        title: the article title.
        context: the paragraph.
        question: the question.
        answers: gold answer texts (several annotators at evaluation, one for training).
        answer_starts: character offsets of each answer in `context`.
    """

    id: str
    title: str
    context: str
    question: str
    answers: tuple[str, ...]
    answer_starts: tuple[int, ...]


def _examples_from_articles(articles: Sequence[dict], source: str) -> list[QAExample]:
    out = []
    for art in articles:
        for para in art["paragraphs"]:
            ctx = para["context"]
            for qa in para["qas"]:
                texts = tuple(a["text"] for a in qa["answers"])
                starts = tuple(int(a["answer_start"]) for a in qa["answers"])
                for t, s in zip(texts, starts):
                    if ctx[s : s + len(t)] != t:
                        raise ValueError(f"{source}: question {qa['id']}: answer {t!r} is not at offset {s} of its context")
                out.append(QAExample(qa["id"], art.get("title", ""), ctx, qa["question"], texts, starts))
    return out


def read_squad_json(path: str | os.PathLike) -> list[dict]:
    """The ``data`` list (articles) of a SQuAD v1.1 JSON file, zipped or not."""
    path = os.fspath(path)
    if path.endswith(".zip"):
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith(".json")]
            if len(names) != 1:
                raise ValueError(f"{path}: expected one .json file inside, found {names}")
            payload = json.loads(z.read(names[0]).decode("utf-8"))
    else:
        with open(path, encoding="utf-8") as f:
            payload = json.load(f)
    if not isinstance(payload, dict) or "data" not in payload:
        raise ValueError(f"{path}: not a SQuAD file (no top-level 'data' list)")
    return payload["data"]


def local_squad_file(glue_dir: str | os.PathLike) -> str:
    """The SQuAD dev file under `glue_dir` (``squad/dev-v1.1.json.zip`` or ``.json``)."""
    for name in _FILES:
        path = os.path.join(os.fspath(glue_dir), "squad", name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"SQuAD not found: expected {os.path.join(os.fspath(glue_dir), 'squad', _FILES[0])} (or the unzipped "
        f"{_FILES[1]}). Offline, the official SQuAD v1.1 dev set is split by article for training and evaluation."
    )


def offline_article_split(n_articles: int, seed: int = OFFLINE_SPLIT_SEED,
                          n_train: int = OFFLINE_TRAIN_ARTICLES) -> tuple[list[int], list[int]]:
    """(train article indices, eval article indices), each sorted: the articles shuffled with
    ``random.Random(seed)``, the first `n_train` train."""
    if not 0 < n_train < n_articles:
        raise ValueError(f"n_train = {n_train}; expected 0 < n_train < {n_articles} articles")
    order = list(range(n_articles))
    random.Random(seed).shuffle(order)
    return sorted(order[:n_train]), sorted(order[n_train:])


def split_description(glue_dir: str | os.PathLike | None) -> str:
    """One line naming the split a SQuAD run used (quoted in every report)."""
    if glue_dir is None:
        return "SQuAD v1.1 (Hugging Face `datasets` squad): train split for training, validation split for evaluation"
    return (
        f"SQuAD v1.1 official dev set split by article (offline): {OFFLINE_TRAIN_ARTICLES} of its "
        f"{OFFLINE_ARTICLES} articles train, {OFFLINE_ARTICLES - OFFLINE_TRAIN_ARTICLES} evaluate; "
        f"article order shuffled with random.Random({OFFLINE_SPLIT_SEED})"
    )


def _load_hub(split: str) -> list[QAExample]:
    try:
        import datasets
    except ImportError as exc:
        raise RuntimeError(
            "SQuAD: no --glue-dir given and Hugging Face `datasets` is not installed; pip install datasets, "
            "or pass a folder holding squad/dev-v1.1.json.zip"
        ) from exc
    ds = datasets.load_dataset("squad", split="train" if split == "train" else "validation")
    return [
        QAExample(r["id"], r["title"], r["context"], r["question"], tuple(r["answers"]["text"]),
                  tuple(int(s) for s in r["answers"]["answer_start"]))
        for r in ds
    ]


def load_squad(split: str, glue_dir: str | os.PathLike | None = None, max_examples: int | None = None,
               seed: int = 0) -> list[QAExample]:
    """SQuAD v1.1 questions of one split.

    Args:
        split: "train" or "dev".
        glue_dir: a local folder holding ``squad/dev-v1.1.json.zip`` (split by article, see the
            module docstring); None: the Hugging Face hub.
        max_examples: keep a random subset of this many questions (seeded by `seed`), in their
            original order, else all.

    Raises:
        ValueError: unknown split, malformed file, an article count other than the official 48.
        FileNotFoundError: no SQuAD file under `glue_dir`.
    """
    if split not in ("train", "dev"):
        raise ValueError(f"split = {split!r}; expected 'train' or 'dev'")
    if max_examples is not None and max_examples < 1:
        raise ValueError(f"max_examples = {max_examples}; expected a positive integer or None")
    if glue_dir is None:
        examples = _load_hub(split)
    else:
        path = local_squad_file(glue_dir)
        articles = read_squad_json(path)
        if len(articles) != OFFLINE_ARTICLES:
            raise ValueError(f"{path}: {len(articles)} articles; the official SQuAD v1.1 dev set has {OFFLINE_ARTICLES}")
        train_idx, eval_idx = offline_article_split(len(articles))
        chosen = [articles[i] for i in (train_idx if split == "train" else eval_idx)]
        examples = _examples_from_articles(chosen, path)
    if max_examples is not None and len(examples) > max_examples:
        keep = sorted(random.Random(seed).sample(range(len(examples)), max_examples))
        examples = [examples[i] for i in keep]
    return examples


# ---------------------------------------------------------------------- tokenisation
@dataclass
class QAFeatures:
    """Tokenised SQuAD windows.

    Attributes:
        data: model inputs [F, max_length] and, as labels, ``start_positions`` and
            ``end_positions`` [F] (token indices; 0, the [CLS] token, when the window does not
            hold the answer).
        offsets: [F, max_length, 2] int64 character span of each token in its example's
            context; (-1, -1) for tokens outside the context (question, special, padding).
        example_index: [F] int64 index of each window's example in `examples`.
        examples: the examples, in order.
    """

    data: EncodedDataset
    offsets: Tensor
    example_index: Tensor
    examples: list[QAExample]

    def __len__(self) -> int:
        return len(self.data)


def _check_tokenizer(tokenizer: Any) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"SQuAD needs a fast tokenizer (character offsets); {type(tokenizer).__name__} is not one. "
            "Load it with AutoTokenizer.from_pretrained(..., use_fast=True)."
        )


def encode_squad(examples: Sequence[QAExample], tokenizer: Any, max_length: int = 384,
                 doc_stride: int = 128, max_query_tokens: int | None = None) -> QAFeatures:
    """Tokenise questions and contexts into overlapping windows with answer positions.

    Args:
        max_length: tokens per window (question, context and special tokens).
        doc_stride: tokens shared by consecutive windows of one context.
        max_query_tokens: longer questions are cut to this many tokens (the BERT SQuAD
            recipe's max_query_length); None: min(64, max_length // 2).

    Raises:
        ValueError: no examples, a slow tokenizer, `doc_stride` not below the room left for
            the context, or a question that leaves no room for context.
    """
    if not examples:
        raise ValueError("encode_squad: no examples")
    _check_tokenizer(tokenizer)
    if max_length < 8:
        raise ValueError(f"max_length = {max_length}; expected >= 8 for question + context windows")
    if doc_stride < 0 or doc_stride >= max_length:
        raise ValueError(f"doc_stride = {doc_stride}; expected 0 <= doc_stride < max_length ({max_length})")
    max_q = min(64, max_length // 2) if max_query_tokens is None else max_query_tokens
    if max_q < 1:
        raise ValueError(f"max_query_tokens = {max_query_tokens}; expected a positive integer or None")
    questions = [e.question.lstrip() for e in examples]
    q_enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    for i, ids in enumerate(q_enc["input_ids"]):
        if len(ids) > max_q:  # cut at the end of the max_q-th token
            questions[i] = questions[i][: q_enc["offset_mapping"][i][max_q - 1][1]]
    longest_q = min(max_q, max(len(ids) for ids in q_enc["input_ids"]))
    room = max_length - longest_q - tokenizer.num_special_tokens_to_add(pair=True)
    if room <= doc_stride:
        raise ValueError(
            f"doc_stride = {doc_stride} with max_length = {max_length}: the longest question ({longest_q} tokens) "
            f"leaves {room} context tokens per window; expected doc_stride < {room} (raise --max-seq-len or lower --doc-stride)"
        )
    enc = tokenizer(questions, [e.context for e in examples], truncation="only_second", max_length=max_length,
                    stride=doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True,
                    padding="max_length")
    sample_map = enc["overflow_to_sample_mapping"]
    n = len(enc["input_ids"])
    offsets = torch.full((n, max_length, 2), -1, dtype=torch.int64)
    starts = torch.zeros(n, dtype=torch.int64)
    ends = torch.zeros(n, dtype=torch.int64)
    for i in range(n):
        seq_ids = enc.sequence_ids(i)
        ex = examples[sample_map[i]]
        ctx_tokens = [k for k, s in enumerate(seq_ids) if s == 1]
        for k in ctx_tokens:
            offsets[i, k, 0], offsets[i, k, 1] = enc["offset_mapping"][i][k]
        if not ex.answers or not ctx_tokens:
            continue
        a0 = ex.answer_starts[0]
        a1 = a0 + len(ex.answers[0])
        first, last = ctx_tokens[0], ctx_tokens[-1]
        if not (int(offsets[i, first, 0]) <= a0 and int(offsets[i, last, 1]) >= a1):
            continue  # the answer is not (wholly) in this window: label [CLS]
        s = first
        while s <= last and int(offsets[i, s, 1]) <= a0:
            s += 1
        e = last
        while e >= first and int(offsets[i, e, 0]) >= a1:
            e -= 1
        starts[i], ends[i] = s, e
    features = {k: torch.tensor(enc[k], dtype=torch.int64) for k in ("input_ids", "attention_mask", "token_type_ids")
                if k in enc}
    data = EncodedDataset(features, torch.stack([starts, ends], 1), label_names=("start_positions", "end_positions"))
    return QAFeatures(data, offsets, torch.tensor(list(sample_map), dtype=torch.int64), list(examples))
