"""Analog SmolLM2-135M-Instruct against the digital model: generation speed and one
HWA-LoRA training step (issue 13, targets: <= 1.3x the digital time for both).

Every linear layer of the analog model is an `AnalogLinear` (`pcm_paper`), except `lm_head`
(the output embedding stays digital); embeddings, norms and attention stay digital too.

1. Generation, batch 1, greedy, KV cache, the same chat prompt for both models:
   - prefill: one forward of the prompt (P tokens) that fills the cache;
   - decode: `--new-tokens` one-token steps (M = 1 per linear layer) on that cache, the argmax
     token fed back. Reported as tokens per second of the decode steps alone.
2. One training step, batch `--batch` x `--seq` tokens (causal-LM loss on random token ids),
   LoRA r = 8, alpha 16, on every linear layer except `lm_head`, the base frozen, Adam:
   HWA-LoRA (analog base, training mode: weight noise on) against LoRA on the digital model.

Paired rounds: in each round the digital and the analog run back to back, and a ratio is the
median of the per-round ratios, so that a slow spell of the machine hits both alike.

    python python/bench/llm.py [--threads 2] [--rounds 7] [--new-tokens 32] [--batch 4]
        [--seq 128] [--skip-train] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import os
from collections.abc import Callable

import torch
from paired_timing import paired

PROMPT = "What is the capital of France? Answer in one sentence."
CACHE_ARG = "past_key_values"  # "cache" in transformers versions that renamed it (set in main)


@torch.no_grad()
def prefill(model: torch.nn.Module, ids: torch.Tensor) -> tuple[object, torch.Tensor]:
    """(KV cache, next token [1, 1]) after one forward of the prompt ids [1, P]."""
    out = model(input_ids=ids, use_cache=True)
    return _cache_of(out), out.logits[:, -1:].argmax(-1)


def _step(model: torch.nn.Module, token: torch.Tensor, cache: object) -> tuple[object, torch.Tensor]:
    """One decode step: (cache, next token [1, 1]) after feeding token [1, 1]."""
    out = model(input_ids=token, use_cache=True, **{CACHE_ARG: cache})
    return _cache_of(out), out.logits[:, -1:].argmax(-1)


def _cache_of(out: object) -> object:
    return getattr(out, "cache", None) or out.past_key_values


@torch.no_grad()
def decode(model: torch.nn.Module, ids: torch.Tensor, steps: int) -> list[int]:
    """Greedy tokens of `steps` one-token decode steps after the prompt ids [1, P] (the
    prefill is done first and not part of the decode loop)."""
    cache, nxt = prefill(model, ids)
    tokens = [int(nxt)]
    for _ in range(steps):
        cache, nxt = _step(model, nxt, cache)
        tokens.append(int(nxt))
    return tokens


def generation(digital: torch.nn.Module, analog: torch.nn.Module, ids: torch.Tensor, steps: int,
               rounds: int) -> dict[str, dict[str, float]]:
    def timed_decode(model: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            cache, nxt = prefill(model, ids)
            with torch.no_grad():
                for _ in range(steps):
                    cache, nxt = _step(model, nxt, cache)
        return run

    # Decode alone = (prefill + steps) - prefill, each paired; so both figures come from one run.
    pre = paired(lambda: prefill(digital, ids), lambda: prefill(analog, ids), rounds)
    full = paired(timed_decode(digital), timed_decode(analog), rounds)
    dec_ref, dec_cand = full["ref_ms"] - pre["ref_ms"], full["cand_ms"] - pre["cand_ms"]
    dec = {"ref_ms": dec_ref, "cand_ms": dec_cand, "ratio": dec_cand / dec_ref,
           "ref_tokens_per_s": steps / dec_ref * 1e3, "cand_tokens_per_s": steps / dec_cand * 1e3,
           "with_prefill_ratio": full["ratio"], "with_prefill_ratio_min": full["ratio_min"],
           "with_prefill_ratio_max": full["ratio_max"]}
    return {"prefill": pre, "decode": dec}


def lora_training_steps(digital: torch.nn.Module, analog: torch.nn.Module,
                        ids: torch.Tensor) -> tuple[dict[str, torch.nn.Module], dict[str, Callable[[], None]]]:
    """A rank-8 LoRA on every linear layer of each model (in place; heads frozen), and one Adam
    step of each on the causal-LM loss of `ids` [batch, seq]: ({"digital", "analog"} -> model,
    the same keys -> a callable that runs one training step)."""
    from lorafusion_ext.nn.convert import attach_lora

    models = {"digital": attach_lora(digital, 8, 16.0, 0.0, targets=(r".*",), train_head=False).train(),
              "analog": attach_lora(analog, 8, 16.0, 0.0, targets=(r".*",), train_head=False).train()}
    data = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    opts = {k: torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-4) for k, m in models.items()}

    def step(name: str) -> Callable[[], None]:
        def run() -> None:
            loss = models[name](**data).loss
            opts[name].zero_grad()
            loss.backward()
            opts[name].step()
        return run

    return models, {name: step(name) for name in models}


def training_step(digital: torch.nn.Module, analog: torch.nn.Module, batch: int, seq: int,
                  rounds: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(100, 20000, (batch, seq), generator=gen)
    models, steps = lora_training_steps(digital, analog, ids)
    out = paired(steps["digital"], steps["analog"], rounds)
    out["trainable_params"] = sum(p.numel() for p in models["analog"].parameters() if p.requires_grad)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--skip-train", action="store_true", help="only the generation benchmark")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    import lorafusion_ext as lf
    from lorafusion_ext.models import DEFAULT_LLM, resolve_model_path

    hf_logging.disable_progress_bar()
    path = resolve_model_path(DEFAULT_LLM)
    tokenizer = AutoTokenizer.from_pretrained(path)
    digital = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    global CACHE_ARG
    if "cache" in inspect.signature(digital.forward).parameters:
        CACHE_ARG = "cache"
    analog = lf.convert_to_analog(copy.deepcopy(digital), lf.HardwareConfig.preset("pcm_paper"), seed=0).eval()
    ids = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    result: dict = {"model": DEFAULT_LLM, "threads": args.threads, "dtype": "float32", "hardware": "pcm_paper",
                    "prompt_tokens": int(ids.shape[1]), "new_tokens": args.new_tokens, "rounds": args.rounds}
    print(f"SmolLM2-135M-Instruct, float32, {args.threads} threads, batch 1, prompt {ids.shape[1]} tokens, "
          f"{args.new_tokens} greedy decode steps (KV cache), median of {args.rounds} paired rounds\n")
    gen_result = generation(digital, analog, ids, args.new_tokens, args.rounds)
    result.update(gen_result)
    pre, dec = gen_result["prefill"], gen_result["decode"]
    print("| stage | digital | analog | analog / digital |")
    print("|---|---|---|---|")
    print(f"| prefill ({ids.shape[1]} tokens) | {pre['ref_ms']:.1f} ms | {pre['cand_ms']:.1f} ms | "
          f"{pre['ratio']:.2f} ({pre['ratio_min']:.2f}-{pre['ratio_max']:.2f}) |")
    print(f"| decode ({args.new_tokens} steps) | {dec['ref_tokens_per_s']:.1f} tok/s | "
          f"{dec['cand_tokens_per_s']:.1f} tok/s | {dec['ratio']:.2f} (time) |")
    print(f"| prefill + decode | {pre['ref_ms'] + dec['ref_ms']:.0f} ms | {pre['cand_ms'] + dec['cand_ms']:.0f} ms | "
          f"{dec['with_prefill_ratio']:.2f} ({dec['with_prefill_ratio_min']:.2f}-{dec['with_prefill_ratio_max']:.2f}) |")
    result["analog_text"] = tokenizer.decode(decode(analog, ids, args.new_tokens), skip_special_tokens=True)
    result["digital_text"] = tokenizer.decode(decode(digital, ids, args.new_tokens), skip_special_tokens=True)
    print(f"\ndigital: {result['digital_text']!r}\nanalog:  {result['analog_text']!r}")
    if not args.skip_train:
        rounds = max(3, args.rounds // 2)
        row = training_step(digital, analog, args.batch, args.seq, rounds)
        result["training_step"] = {**row, "batch": args.batch, "seq": args.seq, "rank": 8, "rounds": rounds}
        print(f"\ntraining step, batch {args.batch} x {args.seq} tokens, LoRA r=8 on every linear layer but lm_head, "
              f"median of {rounds} paired rounds: digital LoRA {row['ref_ms']:.0f} ms, HWA-LoRA (analog base) "
              f"{row['cand_ms']:.0f} ms, ratio {row['ratio']:.2f} ({row['ratio_min']:.2f}-{row['ratio_max']:.2f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
