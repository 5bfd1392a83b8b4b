"""SQuAD v1.1 extractive question answering as a task of the pipelines: a span head
(AutoModelForQuestionAnswering), windows over long contexts, n-best post-processing and the
official exact match / F1 (torchmetrics)."""

from __future__ import annotations

from typing import Any

from torch import nn

from lorafusion_ext.data.squad import QAFeatures, encode_squad, load_squad, split_description
from lorafusion_ext.data.tokenize import EncodedDataset
from lorafusion_ext.evaluation.squad import evaluate_qa
from lorafusion_ext.models import load_question_answering
from lorafusion_ext.tasks.base import EXTRACTIVE_QA, DataConfig, Task


class ExtractiveQATask(Task):
    """SQuAD v1.1: F1 (main metric) and exact match, as fractions in [0, 1].

    Args:
        n_best: start/end candidates per window in post-processing.
        max_answer_tokens: longest answer span, in tokens.
    """

    kind = EXTRACTIVE_QA
    metrics = ("f1", "exact_match")

    def __init__(self, name: str = "squad", n_best: int = 20, max_answer_tokens: int = 30) -> None:
        self.name = name
        self.n_best = n_best
        self.max_answer_tokens = max_answer_tokens

    def load_model(self, model_id: str, seed: int | None = None) -> tuple[nn.Module, Any]:
        return load_question_answering(model_id, seed=seed)

    def train_data(self, tokenizer: Any, data: DataConfig) -> EncodedDataset:
        ex = load_squad("train", data.glue_dir, data.train_examples, data.seed)
        return encode_squad(ex, tokenizer, data.max_length, data.stride).data

    def eval_data(self, tokenizer: Any, data: DataConfig) -> QAFeatures:
        ex = load_squad("dev", data.glue_dir, data.eval_examples, data.seed)
        return encode_squad(ex, tokenizer, data.max_length, data.stride)

    def evaluate(self, model: nn.Module, dev: QAFeatures, batch_size: int = 64) -> dict[str, float]:
        return evaluate_qa(model, dev, batch_size, self.n_best, self.max_answer_tokens)

    def describe_data(self, data: DataConfig) -> str:
        return split_description(data.glue_dir)

    def __repr__(self) -> str:
        return f"ExtractiveQATask({self.name!r})"
