"""GLUE sequence classification and regression as a task of the pipelines."""

from __future__ import annotations

from typing import Any

from torch import nn

from lorafusion_ext.data.glue import TaskSpec, load_glue
from lorafusion_ext.data.tokenize import EncodedDataset, encode
from lorafusion_ext.models import load_classifier
from lorafusion_ext.tasks.base import CLASSIFICATION, DataConfig, Task
from lorafusion_ext.training.loop import evaluate


class ClassificationTask(Task):
    """A GLUE task (`TaskSpec`): AutoModelForSequenceClassification with `num_labels` outputs,
    scikit-learn / scipy metrics on the dev split."""

    kind = CLASSIFICATION

    def __init__(self, spec: TaskSpec) -> None:
        if not isinstance(spec, TaskSpec):
            raise ValueError(f"ClassificationTask: spec is a {type(spec).__name__}; expected a TaskSpec")
        self.spec = spec
        self.name = spec.name
        self.metrics = spec.metrics

    @property
    def is_regression(self) -> bool:
        return self.spec.is_regression

    def load_model(self, model_id: str, seed: int | None = None) -> tuple[nn.Module, Any]:
        return load_classifier(model_id, self.spec.num_labels, seed=seed)

    def train_data(self, tokenizer: Any, data: DataConfig) -> EncodedDataset:
        ex = load_glue(self.name, "train", data.glue_dir, data.train_examples, data.seed)
        return encode(ex, tokenizer, data.max_length, self.spec.is_regression)

    def eval_data(self, tokenizer: Any, data: DataConfig) -> EncodedDataset:
        ex = load_glue(self.name, "dev", data.glue_dir, data.eval_examples, data.seed)
        return encode(ex, tokenizer, data.max_length, self.spec.is_regression)

    def evaluate(self, model: nn.Module, dev: EncodedDataset, batch_size: int = 64) -> dict[str, float]:
        return evaluate(model, dev, self.metrics, batch_size)

    def __repr__(self) -> str:
        return f"ClassificationTask({self.name!r})"
