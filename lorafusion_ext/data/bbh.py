"""BIG-Bench Hard (BBH): its 27 tasks, how to load them and how each is split.

Two sources: a local folder in the official layout (`<data_dir>/<task>.json`, each
`{"examples": [{"input": ..., "target": ...}, ...]}`), or, when no folder is given, the Hugging
Face `datasets` hub (`lukaemon/bbh`, needs network access).

BBH has a single split. The one used here (`split_bbh`) is fixed whatever the run's seed: the
examples are shuffled with `random.Random(BBH_SPLIT_SEED)`; the first `EVAL_SIZE` (100) are the
evaluation split, the rest the training split (146 to 250 examples per task: 46 to 150 for
training). A run with `k` training examples takes the first `k` of the training split, so a
few-shot run's examples are a subset of a larger run's, and every run evaluates on the same
examples.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from typing import Sequence

#: The 27 BBH tasks (the official file names without `.json`).
BBH_TASKS: tuple[str, ...] = (
    "boolean_expressions", "causal_judgement", "date_understanding", "disambiguation_qa", "dyck_languages",
    "formal_fallacies", "geometric_shapes", "hyperbaton", "logical_deduction_five_objects",
    "logical_deduction_seven_objects", "logical_deduction_three_objects", "movie_recommendation",
    "multistep_arithmetic_two", "navigate", "object_counting", "penguins_in_a_table",
    "reasoning_about_colored_objects", "ruin_names", "salient_translation_error_detection", "snarks",
    "sports_understanding", "temporal_sequences", "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects", "tracking_shuffled_objects_three_objects", "web_of_lies",
    "word_sorting",
)

#: Seed of the fixed shuffle that splits every task.
BBH_SPLIT_SEED = 1234
#: Examples per task in the evaluation split.
EVAL_SIZE = 100

_HUB_ID = "lukaemon/bbh"


@dataclass(frozen=True)
class GenerationExample:
    """One input text and the answer a model must generate for it."""

    input: str
    target: str


def bbh_task_name(task: str) -> str:
    """The canonical BBH task name for `task` ("bbh:Navigate", "navigate" -> "navigate").

    Raises:
        ValueError: not a BBH task, listing the known ones.
    """
    name = task.split(":", 1)[1] if task.lower().startswith("bbh:") else task
    name = name.strip().lower().replace("-", "_")
    if name not in BBH_TASKS:
        raise ValueError(f"unknown BBH task {task!r}; expected one of {list(BBH_TASKS)}")
    return name


def load_bbh(task: str, data_dir: str | os.PathLike | None = None) -> list[GenerationExample]:
    """Every example of one BBH task, in file order.

    Args:
        task: a BBH task name (`BBH_TASKS`; "bbh:" prefix allowed).
        data_dir: a folder holding `<task>.json` in the official layout; None: the Hugging
            Face hub.

    Raises:
        ValueError: unknown task, or a file without the official structure.
        FileNotFoundError: `<data_dir>/<task>.json` does not exist.
        RuntimeError: no folder given and the hub cannot be reached.
    """
    name = bbh_task_name(task)
    if data_dir is None:
        return _load_hub(name)
    path = os.path.join(os.fspath(data_dir), f"{name}.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"BBH task {name}: expected {path} (the official layout: <data_dir>/<task>.json)")
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    items = raw.get("examples") if isinstance(raw, dict) else None
    if not isinstance(items, list) or not items:
        raise ValueError(f"{path}: expected a JSON object with a non-empty 'examples' list")
    out = []
    for i, e in enumerate(items):
        if not isinstance(e, dict) or not isinstance(e.get("input"), str) or not isinstance(e.get("target"), str):
            raise ValueError(f"{path}: example {i} is not {{'input': str, 'target': str}}")
        out.append(GenerationExample(e["input"], e["target"]))
    return out


def _load_hub(name: str) -> list[GenerationExample]:
    try:
        import datasets
    except ImportError as exc:
        raise RuntimeError(f"BBH task {name}: no --data-dir given and the `datasets` package is missing "
                           "(pip install datasets), or give --data-dir") from exc
    try:
        ds = datasets.load_dataset(_HUB_ID, name, split="test")
    except Exception as exc:  # offline, hub errors: one clear message
        raise RuntimeError(f"BBH task {name}: cannot load {_HUB_ID} from the Hugging Face hub ({exc}); "
                           "give --data-dir with the official BBH files") from exc
    return [GenerationExample(r["input"], r["target"]) for r in ds]


def split_bbh(examples: Sequence[GenerationExample], train_examples: int | None = None,
              eval_examples: int | None = None) -> tuple[list[GenerationExample], list[GenerationExample]]:
    """(training, evaluation) examples of one task (the module's documented split).

    Args:
        train_examples: keep the first k of the training split (None: all of it).
        eval_examples: keep the first n of the evaluation split (None: all `EVAL_SIZE`).

    Raises:
        ValueError: too few examples for the split, or a count outside what the split holds.
    """
    if len(examples) <= EVAL_SIZE:
        raise ValueError(f"split_bbh: {len(examples)} examples; expected more than {EVAL_SIZE} "
                         "(the evaluation split) to leave some for training")
    order = list(examples)
    random.Random(BBH_SPLIT_SEED).shuffle(order)
    evaluation, training = order[:EVAL_SIZE], order[EVAL_SIZE:]
    for what, n, pool in (("train_examples", train_examples, training), ("eval_examples", eval_examples, evaluation)):
        if n is not None and not 1 <= n <= len(pool):
            raise ValueError(f"split_bbh: {what} = {n}; expected 1..{len(pool)} (the size of that split)")
    if train_examples is not None:
        training = training[:train_examples]
    if eval_examples is not None:
        evaluation = evaluation[:eval_examples]
    return training, evaluation


def split_description(data_dir: str | os.PathLike | None, train_examples: int | None) -> str:
    """One line naming the data and split a BBH run used (quoted in reports)."""
    source = os.fspath(data_dir) if data_dir is not None else f"the Hugging Face hub ({_HUB_ID})"
    k = "all" if train_examples is None else f"the first {train_examples}"
    return (f"BBH from {source}: examples shuffled with seed {BBH_SPLIT_SEED}, the first {EVAL_SIZE} for "
            f"evaluation, {k} of the rest for training")
