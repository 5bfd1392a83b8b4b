"""The tiny random models of the tests: one definition, in the experiment harness
(`python/experiments/harness/tiny_models.py`), which the `--quick` runs of the experiment scripts
use too. Re-exported here for the tests' `from tiny_models import ...`."""

from __future__ import annotations

from scripts import EXPERIMENTS, load_file

_mod = load_file("_harness_tiny_models", EXPERIMENTS / "harness" / "tiny_models.py")

WORDS = _mod.WORDS
minilm_tokenizer_path = _mod.minilm_tokenizer_path
tiny_bert = _mod.tiny_bert
byte_tokenizer = _mod.byte_tokenizer
tiny_llama = _mod.tiny_llama
tiny_t5 = _mod.tiny_t5

__all__ = ["WORDS", "minilm_tokenizer_path", "tiny_bert", "byte_tokenizer", "tiny_llama", "tiny_t5"]
