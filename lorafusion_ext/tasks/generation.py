"""Generation tasks (BIG-Bench Hard) for causal and seq2seq language models: one BBH task
(`bbh:<name>`) or the suite (`bbh`: every task's training examples together, scored per task
and on average)."""

from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from lorafusion_ext.data.bbh import BBH_TASKS, GenerationExample, bbh_task_name, load_bbh, split_bbh, split_description
from lorafusion_ext.data.generation import encode_generation
from lorafusion_ext.data.tokenize import EncodedDataset
from lorafusion_ext.evaluation.generation import GenerationEvalSet, eval_set, evaluate_generation
from lorafusion_ext.models import load_generator
from lorafusion_ext.tasks.base import GENERATION, DataConfig, Task


class GenerationTask(Task):
    """One BBH task: a causal or seq2seq LM (no task head: the LM head stays frozen and
    digital), trained with the loss on the answer tokens, scored by exact match (a fraction
    in [0, 1]) of greedy answers. `DataConfig.train_examples` is k, the few-shot size
    (`lorafusion_ext.data.bbh` documents the split); `max_length` bounds prompt plus answer."""

    kind = GENERATION
    metrics = ("exact_match",)

    def __init__(self, task: str, batch_size: int = 16) -> None:
        self.bbh_name = bbh_task_name(task)
        self.name = f"bbh:{self.bbh_name}"
        self.eval_batch_size = batch_size

    def load_model(self, model_id: str, seed: int | None = None) -> tuple[nn.Module, Any]:
        return load_generator(model_id, seed=seed)

    def examples(self, data: DataConfig) -> tuple[list[GenerationExample], list[GenerationExample]]:
        """(training, evaluation) examples under `data`."""
        return split_bbh(load_bbh(self.bbh_name, data.data_dir), data.train_examples, data.eval_examples)

    def train_data(self, tokenizer: Any, data: DataConfig) -> EncodedDataset:
        return encode_generation(self.examples(data)[0], tokenizer, data.max_length)

    def eval_data(self, tokenizer: Any, data: DataConfig) -> GenerationEvalSet:
        return eval_set(self.examples(data)[1], tokenizer, data.max_length)

    def evaluate(self, model: nn.Module, dev: GenerationEvalSet, batch_size: int | None = None) -> dict[str, float]:
        return evaluate_generation(model, dev, batch_size or self.eval_batch_size)

    def describe_data(self, data: DataConfig) -> str:
        return f"{self.name}: " + split_description(data.data_dir, data.train_examples)

    def __repr__(self) -> str:
        return f"GenerationTask({self.name!r})"


class BBHSuite(Task):
    """Several BBH tasks as one (default: all 27): training on their training examples
    together (k per task), evaluation per task; `exact_match` is the mean over the tasks and
    `exact_match/<task>` each task's score."""

    kind = GENERATION
    metrics = ("exact_match",)

    def __init__(self, tasks: Sequence[str] = BBH_TASKS, name: str = "bbh", batch_size: int = 16) -> None:
        if not tasks:
            raise ValueError("BBHSuite: no tasks given")
        self.tasks = [GenerationTask(t, batch_size) for t in tasks]
        self.name = name

    def load_model(self, model_id: str, seed: int | None = None) -> tuple[nn.Module, Any]:
        return load_generator(model_id, seed=seed)

    def train_data(self, tokenizer: Any, data: DataConfig) -> EncodedDataset:
        examples = [e for t in self.tasks for e in t.examples(data)[0]]
        return encode_generation(examples, tokenizer, data.max_length)

    def eval_data(self, tokenizer: Any, data: DataConfig) -> dict[str, GenerationEvalSet]:
        return {t.name: t.eval_data(tokenizer, data) for t in self.tasks}

    def evaluate(self, model: nn.Module, dev: dict[str, GenerationEvalSet],
                 batch_size: int | None = None) -> dict[str, float]:
        per = {name: evaluate_generation(model, d, batch_size or self.tasks[0].eval_batch_size)["exact_match"]
               for name, d in dev.items()}
        return {"exact_match": sum(per.values()) / len(per), **{f"exact_match/{n}": v for n, v in per.items()}}

    def describe_data(self, data: DataConfig) -> str:
        return f"{self.name} ({len(self.tasks)} tasks): " + split_description(data.data_dir, data.train_examples)

    def __repr__(self) -> str:
        return f"BBHSuite({[t.bbh_name for t in self.tasks]})"
