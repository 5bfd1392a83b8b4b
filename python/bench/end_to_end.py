"""End-to-end cost of HWA-LoRA on all-MiniLM-L6-v2: one training step and a dev-set evaluation
with every linear layer analog (pcm_paper) against the same model and LoRA kept digital,
measured side by side (interleaved rounds, median), plus where the analog step's time goes.

    python python/bench/end_to_end.py [--glue-dir ../shared/data/glue] [--threads 2] [--json out.json]

Shapes: LoRA r 8 on all linear layers, batch 32, sequence 64 (padded), SST-2 (dev: 872).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from lorafusion_ext.nn.convert import attach_lora, convert_to_analog
from lorafusion_ext.data import encode, load_glue
from lorafusion_ext.hardware import HardwareConfig
from lorafusion_ext.models import DEFAULT_MODEL, load_classifier


def build(analog: bool, seed: int):
    model, tok = load_classifier(DEFAULT_MODEL, 2, seed=seed)
    if analog:
        convert_to_analog(model, HardwareConfig.preset("pcm_paper"), seed=seed)
    attach_lora(model, 8, 32.0, 0.1, targets=(r".*",))
    return model, tok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--glue-dir", default=os.environ.get("LORAFUSION_GLUE_DIR", "../shared/data/glue"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8, help="timed training steps per model")
    parser.add_argument("--eval-rounds", type=int, default=3, help="dev-set passes (median taken)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    t0 = time.perf_counter()
    models = {name: build(name == "analog", seed=0) for name in ("digital", "analog")}
    tok = models["digital"][1]
    t_tok = time.perf_counter()
    train = encode(load_glue("sst2", "train", args.glue_dir, max_examples=32 * (args.steps + 1)), tok, 64)
    dev = encode(load_glue("sst2", "dev", args.glue_dir), tok, 64)
    t_data = time.perf_counter() - t_tok
    opts = {n: torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=2e-4) for n, (m, _) in models.items()}
    batches = list(train.batches(32, trim=False))

    def step(name: str, batch: dict) -> float:
        model = models[name][0].train()
        s = time.perf_counter()
        loss = model(**batch).loss
        opts[name].zero_grad()
        loss.backward()
        opts[name].step()
        return time.perf_counter() - s

    dev_batches = []
    for batch in dev.batches(32, trim=False):
        batch.pop("labels")
        dev_batches.append(batch)

    def evaluation() -> dict[str, float]:
        # Batch by batch, the two models in turn: a slow spell of the machine hits both.
        spent = {name: 0.0 for name in models}
        for name in models:
            models[name][0].eval()
        with torch.no_grad():
            for batch in dev_batches:
                for name in models:
                    s = time.perf_counter()
                    models[name][0](**batch)
                    spent[name] += time.perf_counter() - s
        return spent

    for name in models:  # warm-up
        step(name, batches[0])
    times = {"digital": [], "analog": []}
    for batch in batches[1:]:
        for name in models:
            times[name].append(step(name, batch))
    evals = {"digital": [], "analog": []}
    for _ in range(args.eval_rounds):
        for name, spent in evaluation().items():
            evals[name].append(spent)
    med = {n: sorted(v)[len(v) // 2] for n, v in times.items()}
    med_e = {n: sorted(v)[len(v) // 2] for n, v in evals.items()}

    # Where an analog step goes: the crossbar op vs everything else.
    model = models["analog"][0].train()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        loss = model(**batches[1]).loss
        loss.backward()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8)
    result = {
        "threads": args.threads,
        "shape": "batch 32 x seq 64, LoRA r 8 on all linear layers",
        "train_step_s": med,
        "train_step_ratio": med["analog"] / med["digital"],
        "eval_s": med_e,
        "eval_ratio": med_e["analog"] / med_e["digital"],
        "eval_rounds": args.eval_rounds,
        "dev_examples": len(dev),
        "setup_s": t_tok - t0,
        "data_load_tokenize_s": t_data,
    }
    print(json.dumps(result, indent=2))
    print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**result, "profile": table}, f, indent=2)


if __name__ == "__main__":
    main()
