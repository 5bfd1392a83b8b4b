"""What every task kind provides to the pipelines: its model, its data and its evaluation.

Three kinds exist: sequence classification / regression (GLUE), extractive question answering
(SQuAD) and generation with a causal or seq2seq language model (BIG-Bench Hard). A task object is stateless apart from its definition; the pipelines (`pipelines.py`)
build models, train and evaluate through it without knowing the kind.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from torch import nn

from lorafusion_ext.data.tokenize import EncodedDataset

#: Task kinds.
CLASSIFICATION = "classification"
EXTRACTIVE_QA = "extractive_qa"
GENERATION = "generation"


@dataclass
class DataConfig:
    """Where the data comes from and how much of it.

    Attributes:
        glue_dir: a local folder (GLUE layout, SQuAD under ``squad/``); None: the Hugging Face
            hub.
        max_length: tokens per example (per window for extractive QA).
        train_examples, eval_examples: subsample to this many examples (questions for QA);
            None: all.
        seed: seeds the subsampling.
        doc_stride: tokens shared by consecutive windows of a long context (extractive QA);
            None: max_length // 3 (128 at 384, the usual SQuAD recipe).
        data_dir: a local folder of the generation tasks' data (BBH: `<task>.json` files);
            None: the Hugging Face hub.
    """

    glue_dir: str | None = None
    max_length: int = 128
    train_examples: int | None = None
    eval_examples: int | None = None
    seed: int = 0
    doc_stride: int | None = None
    data_dir: str | None = None

    @property
    def stride(self) -> int:
        """The doc stride in force (tokens)."""
        return self.max_length // 3 if self.doc_stride is None else self.doc_stride


class Task(ABC):
    """One task of some kind.

    Attributes:
        name: the task's name ("sst2", "squad").
        kind: CLASSIFICATION, EXTRACTIVE_QA or GENERATION.
        metrics: metric names; the first is the main metric (drift tables, sweeps).
    """

    name: str
    kind: str
    metrics: tuple[str, ...]

    @property
    def main_metric(self) -> str:
        return self.metrics[0]

    @abstractmethod
    def load_model(self, model_id: str, seed: int | None = None) -> tuple[nn.Module, Any]:
        """(Hugging Face model with a fresh task head, fast tokenizer); `seed` seeds the head."""

    @abstractmethod
    def train_data(self, tokenizer: Any, data: DataConfig) -> EncodedDataset:
        """The training set, tokenised, whose batches the model takes as keyword arguments
        (labels included) and returns `.loss` for."""

    @abstractmethod
    def eval_data(self, tokenizer: Any, data: DataConfig) -> Any:
        """The evaluation set in the form `evaluate` takes."""

    @abstractmethod
    def evaluate(self, model: nn.Module, dev: Any, batch_size: int = 64) -> dict[str, float]:
        """{metric: value} of `model` (run in eval mode) on `dev`, every name of `metrics`."""

    def describe_data(self, data: DataConfig) -> str:
        """One line naming the data and split a run used (quoted in reports)."""
        source = data.glue_dir if data.glue_dir else "the Hugging Face hub"
        return f"{self.name}: train split for training, dev split for evaluation (from {source})"
