"""The tiny random models of the tests: one definition, in the experiment harness
(`python/experiments/harness/tiny_models.py`), which the `--quick` runs of the experiment scripts
use too. Re-exported here for the tests' `from tiny_models import ...`."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "python" / "experiments" / "harness" / "tiny_models.py"
_spec = importlib.util.spec_from_file_location("_harness_tiny_models", _PATH)
_mod = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _mod
_spec.loader.exec_module(_mod)

WORDS = _mod.WORDS
minilm_tokenizer_path = _mod.minilm_tokenizer_path
tiny_bert = _mod.tiny_bert
byte_tokenizer = _mod.byte_tokenizer
tiny_llama = _mod.tiny_llama
tiny_t5 = _mod.tiny_t5

__all__ = ["WORDS", "minilm_tokenizer_path", "tiny_bert", "byte_tokenizer", "tiny_llama", "tiny_t5"]
