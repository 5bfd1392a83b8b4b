"""GLUE tasks: what each one is (inputs, labels, metrics) and how to load it.

Two sources: a local folder in the official GLUE layout (`<glue_dir>/<TASK>/{train,dev}.tsv`,
as `download_glue_data.py` writes it) or, when no folder is given, the Hugging Face `datasets`
hub (needs network access).
"""

from __future__ import annotations

import csv
import os
import random
import socket
import sys
import urllib.parse
from dataclasses import dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class TaskSpec:
    """One GLUE task.

    Attributes:
        name: GLUE name (lower case, e.g. "sst2").
        folder: folder name in the GLUE layout ("SST-2").
        text_columns: TSV column names of the input text(s) (one or two).
        label_column: TSV column of the label.
        labels: label strings in class order (empty for regression).
        metrics: metric names (`lorafusion_ext.evaluation.metrics.METRICS`); the first one is
            the task's main metric.
        dev_file: dev split file name.
        header: whether the TSV files have a header row.
        columns: column names when there is no header.
    """

    name: str
    folder: str
    text_columns: tuple[str, ...]
    label_column: str
    labels: tuple[str, ...]
    metrics: tuple[str, ...]
    dev_file: str = "dev.tsv"
    header: bool = True
    columns: tuple[str, ...] = ()

    @property
    def is_regression(self) -> bool:
        return not self.labels

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.labels)


GLUE_TASKS: dict[str, TaskSpec] = {
    "cola": TaskSpec("cola", "CoLA", ("sentence",), "label", ("0", "1"), ("mcc", "accuracy"), header=False,
                     columns=("source", "label", "original_label", "sentence")),
    "sst2": TaskSpec("sst2", "SST-2", ("sentence",), "label", ("0", "1"), ("accuracy",)),
    "mrpc": TaskSpec("mrpc", "MRPC", ("#1 String", "#2 String"), "Quality", ("0", "1"), ("f1", "accuracy")),
    "stsb": TaskSpec("stsb", "STS-B", ("sentence1", "sentence2"), "score", (), ("pearson", "spearman")),
    "qqp": TaskSpec("qqp", "QQP", ("question1", "question2"), "is_duplicate", ("0", "1"), ("f1", "accuracy")),
    "mnli": TaskSpec("mnli", "MNLI", ("sentence1", "sentence2"), "gold_label",
                     ("entailment", "neutral", "contradiction"), ("accuracy",), dev_file="dev_matched.tsv"),
    "qnli": TaskSpec("qnli", "QNLI", ("question", "sentence"), "label", ("entailment", "not_entailment"),
                     ("accuracy",)),
    "rte": TaskSpec("rte", "RTE", ("sentence1", "sentence2"), "label", ("entailment", "not_entailment"),
                    ("accuracy",)),
    "wnli": TaskSpec("wnli", "WNLI", ("sentence1", "sentence2"), "label", ("0", "1"), ("accuracy",)),
}

# Hugging Face `datasets` names of the dev split and label order (the hub stores ints).
_HF_DEV = {"mnli": "validation_matched"}


@dataclass(frozen=True)
class Example:
    """One input: `texts` (one or two strings) and `label` (class index, or a float score)."""

    texts: tuple[str, ...]
    label: float | int


def task_spec(task: str) -> TaskSpec:
    key = task.lower().replace("-", "")
    if key not in GLUE_TASKS:
        raise ValueError(f"unknown GLUE task {task!r}; expected one of {sorted(GLUE_TASKS)}")
    return GLUE_TASKS[key]


def _read_tsv(path: str, spec: TaskSpec) -> list[Example]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        rows = list(reader)
    if spec.header:
        header, rows = rows[0], rows[1:]
    else:
        header = list(spec.columns)
    index = {name: i for i, name in enumerate(header)}
    missing = [c for c in (*spec.text_columns, spec.label_column) if c not in index]
    if missing:
        raise ValueError(f"{path}: columns {missing} not found (header: {header}); is this the GLUE {spec.folder} file?")
    examples = []
    for lineno, row in enumerate(rows, start=2 if spec.header else 1):
        if not row:
            continue
        if len(row) < len(header):
            raise ValueError(f"{path}:{lineno}: {len(row)} columns, expected {len(header)}")
        raw = row[index[spec.label_column]].strip()
        if spec.is_regression:
            label: float | int = float(raw)
        else:
            if raw not in spec.labels:
                raise ValueError(f"{path}:{lineno}: label {raw!r} not in {spec.labels}")
            label = spec.labels.index(raw)
        examples.append(Example(tuple(row[index[c]] for c in spec.text_columns), label))
    return examples


#: The two ways to GLUE data, named by every "no GLUE data" error.
GLUE_SOURCES_HELP = (
    "Either pass a local GLUE folder in the official layout (<dir>/<TASK>/train.tsv, dev.tsv): "
    "`--glue-dir /path/to/glue_data`, $LORAFUSION_GLUE_DIR, or `make run GLUE_DIR=/path/to/glue_data`; "
    "or give this machine network access so that Hugging Face `datasets` can download GLUE "
    "(with HF_HUB_OFFLINE and HF_DATASETS_OFFLINE unset)."
)

_OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


class GlueUnavailableError(RuntimeError):
    """The GLUE data of a task cannot be read from the given source; the message says how to
    provide it (`GLUE_SOURCES_HELP`)."""


def _offline_vars() -> list[str]:
    return [v for v in _OFFLINE_ENV if os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")]


def _import_datasets(what: str) -> Any:
    try:
        import datasets
    except ImportError as exc:
        raise GlueUnavailableError(
            f"{what}: no local GLUE folder given and Hugging Face `datasets` is not installed "
            f"(pip install datasets). {GLUE_SOURCES_HELP}"
        ) from exc
    return datasets


def _hub_failure(what: str, exc: BaseException) -> GlueUnavailableError:
    offline = _offline_vars()
    why = (f"offline mode is on ({', '.join(v + '=1' for v in offline)}) and no cached copy exists"
           if offline else f"{type(exc).__name__}: {exc}")
    return GlueUnavailableError(
        f"{what}: no local GLUE folder given, and Hugging Face `datasets` cannot get it ({why}). "
        f"{GLUE_SOURCES_HELP}"
    )


def _hub_unreachable(timeout_s: float = 3.0) -> str | None:
    """Why the Hugging Face hub cannot be reached, or None: a TCP connection to its host, so that
    a machine without network fails in seconds instead of after the hub client's retries.
    Behind a proxy (HTTPS_PROXY...) the direct connection proves nothing, so no probe is made."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urllib.parse.urlsplit(endpoint)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    if not host:
        return None
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        return f"no connection to {host}:{port}: {exc}"
    return None


def check_glue(tasks: Sequence[str], glue_dir: str | os.PathLike | None = None,
               splits: Sequence[str] = ("train", "dev")) -> None:
    """Fail fast when the GLUE data of `tasks` cannot be read: call it before loading a model.

    With `glue_dir`, every split file must exist there. Without it, Hugging Face `datasets`
    must be installed and able to resolve each task (online, or offline with a cached copy);
    only the dataset's metadata is fetched here, the data itself when it is loaded.

    Raises:
        ValueError: unknown task or split.
        GlueUnavailableError: the data cannot be read; the message names the missing files or
            the reason, and both ways out (a local folder, or network access for `datasets`).
    """
    specs = [task_spec(t) for t in tasks]
    bad = [s for s in splits if s not in ("train", "dev")]
    if bad:
        raise ValueError(f"check_glue: splits {bad}; expected 'train' and/or 'dev'")
    if not specs:
        return  # e.g. a BBH-only run offline: nothing of GLUE's to read
    if glue_dir is not None:
        root = os.fspath(glue_dir)
        if not os.path.isdir(root):
            raise GlueUnavailableError(f"GLUE folder {root} does not exist. {GLUE_SOURCES_HELP}")
        missing = [
            f"GLUE {spec.folder} {split} split not found: expected {path}"
            for spec in specs for split in splits
            for path in [os.path.join(root, spec.folder, "train.tsv" if split == "train" else spec.dev_file)]
            if not os.path.isfile(path)
        ]
        if missing:
            raise GlueUnavailableError(
                f"{'; '.join(missing)} (official layout: <dir>/<TASK>/train.tsv, dev.tsv; a partial copy may "
                f"lack some splits). {GLUE_SOURCES_HELP}"
            )
        return
    datasets = _import_datasets(f"GLUE {', '.join(s.name for s in specs)}")
    unreachable = None if _offline_vars() else _hub_unreachable()
    if unreachable:
        raise GlueUnavailableError(
            f"GLUE {', '.join(s.name for s in specs)}: no local GLUE folder given, and Hugging Face "
            f"`datasets` cannot reach the hub ({unreachable}; with GLUE already in the `datasets` cache, "
            f"set HF_DATASETS_OFFLINE=1). {GLUE_SOURCES_HELP}"
        )
    for spec in specs:
        try:
            datasets.load_dataset_builder("glue", spec.name)
        except Exception as exc:  # datasets raises connection, lookup and file errors alike
            raise _hub_failure(f"GLUE {spec.name}", exc) from exc


def _load_hub(spec: TaskSpec, split: str) -> list[Example]:
    datasets = _import_datasets(f"GLUE {spec.name}")
    hf_split = "train" if split == "train" else _HF_DEV.get(spec.name, "validation")
    hf_cols = {"mrpc": ("sentence1", "sentence2"), "qqp": ("question1", "question2"),
               "cola": ("sentence",), "sst2": ("sentence",)}.get(spec.name, spec.text_columns)
    try:
        ds = datasets.load_dataset("glue", spec.name, split=hf_split)
    except Exception as exc:  # datasets raises connection, lookup and file errors alike
        raise _hub_failure(f"GLUE {spec.name}", exc) from exc
    return [
        Example(tuple(str(r[c]) for c in hf_cols), float(r["label"]) if spec.is_regression else int(r["label"]))
        for r in ds
    ]


def load_glue(
    task: str,
    split: str,
    glue_dir: str | os.PathLike | None = None,
    max_examples: int | None = None,
    seed: int = 0,
) -> list[Example]:
    """Examples of one GLUE task split.

    Args:
        task: GLUE task name (case-insensitive, e.g. "SST-2", "sst2", "rte").
        split: "train" or "dev".
        glue_dir: a local folder in the GLUE layout; None: the Hugging Face hub.
        max_examples: keep a random subset of this many (seeded by `seed`), else all.

    Raises:
        ValueError: unknown task or split, malformed file.
        FileNotFoundError: the split is not in `glue_dir` (says which file was expected).
    """
    spec = task_spec(task)
    if split not in ("train", "dev"):
        raise ValueError(f"split = {split!r}; expected 'train' or 'dev'")
    if max_examples is not None and max_examples < 1:
        raise ValueError(f"max_examples = {max_examples}; expected a positive integer or None")
    if glue_dir is None:
        examples = _load_hub(spec, split)
    else:
        path = os.path.join(os.fspath(glue_dir), spec.folder, "train.tsv" if split == "train" else spec.dev_file)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"GLUE {spec.folder} {split} split not found: expected {path}. The folder must use the "
                "official GLUE layout (<glue_dir>/<TASK>/train.tsv, dev.tsv); a partial copy may lack some "
                "splits (e.g. MNLI, QQP and QNLI train)."
            )
        examples = _read_tsv(path, spec)
    if max_examples is not None and len(examples) > max_examples:
        rng = random.Random(seed)
        examples = rng.sample(examples, max_examples)
    return examples


def available_tasks(glue_dir: str | os.PathLike) -> dict[str, tuple[str, ...]]:
    """Which tasks and splits a local GLUE folder holds: {task: ("train", "dev") or a subset}."""
    out = {}
    for name, spec in GLUE_TASKS.items():
        splits = tuple(
            s for s, f in (("train", "train.tsv"), ("dev", spec.dev_file))
            if os.path.isfile(os.path.join(os.fspath(glue_dir), spec.folder, f))
        )
        if splits:
            out[name] = splits
    return out


def label_names(task: str) -> Sequence[str]:
    return task_spec(task).labels
