"""End-to-end speed of HWA-LoRA against AIHWKIT: one training step and a dev-set evaluation of
all-MiniLM-L6-v2 (SST-2) with the HWA-LoRA paper's rpu_config, through AIHWKIT 1.1's torch
tile and through lorafusion_ext (`HardwareConfig.from_aihwkit` of the same config), with the
digital model as a third column. The models are built as `python/experiments/aihwkit_equivalence.py`
builds them (same LoRA, head and data); the timings are side by side: in every round each
model takes the same batch in turn, and a ratio is the median over rounds of that round's ratio.

    python python/bench/vs_aihwkit.py [--glue-dir ../shared/data/glue] [--threads 1] [--steps 8]
        [--eval-batches 8] [--config paper] [--json out.json]

Shapes: batch 32 x sequence 64 (padded), LoRA r 8 on every linear layer (heads digital).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from aihwkit_equivalence import CONFIGS, build_model, paper_rpu_config  # noqa: E402

from lorafusion_ext.tasks import DataConfig, get_task  # noqa: E402

ENGINES = ("digital", "lorafusion_ext", "aihwkit")


def _median_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--glue-dir", default=os.environ.get("LORAFUSION_GLUE_DIR", "../shared/data/glue"))
    ap.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--config", default="paper", choices=CONFIGS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=8, help="timed training rounds (one step per engine each)")
    ap.add_argument("--eval-batches", type=int, default=8, help="timed dev batches of 32 (one pass per engine each)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.steps < 1 or args.eval_batches < 1:
        raise SystemExit("--steps and --eval-batches must be >= 1")
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    rpu = paper_rpu_config(args.config)
    task = get_task("sst2")
    models = {}
    for engine in ENGINES:
        # "digital": the same LoRA, head and frozen bases, every base left an nn.Linear.
        model, tok = build_model("digital" if engine == "digital" else engine, args.model, rpu, 0, 8, 32.0, 0.1)
        models[engine] = model
    data = DataConfig(args.glue_dir, 64, 32 * (args.steps + 1), 32 * args.eval_batches, 0)
    train = task.train_data(tok, data)
    dev = task.eval_data(tok, data)
    batches = list(train.batches(32, trim=False))[: args.steps + 1]
    dev_batches = []
    for batch in dev.batches(32, trim=False):
        batch.pop("labels", None)
        dev_batches.append(batch)
    opts = {e: torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-3) for e, m in models.items()}

    def step(engine: str, batch: dict) -> float:
        model = models[engine].train()
        t = time.perf_counter()
        loss = model(**batch).loss
        opts[engine].zero_grad()
        loss.backward()
        opts[engine].step()
        return time.perf_counter() - t

    def forward(engine: str, batch: dict) -> float:
        t = time.perf_counter()
        with torch.no_grad():
            models[engine](**batch)
        return time.perf_counter() - t

    def rounds(fn: Callable[[str, dict], float], items: list[dict]) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {e: [] for e in ENGINES}
        for batch in items:
            for engine in ENGINES:
                out[engine].append(fn(engine, batch))
        return out

    for engine in ENGINES:  # warm-up
        step(engine, batches[0])
    train_t = rounds(step, batches[1:])
    for m in models.values():
        m.eval()
    eval_t = rounds(forward, dev_batches)
    result = {
        "config": args.config,
        "threads": args.threads,
        "dtype": "float32",
        "shape": "batch 32 x seq 64, LoRA r 8 on every linear layer, MiniLM-L6 (SST-2)",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "train_step_s": {e: statistics.median(v) for e, v in train_t.items()},
        "eval_batch_s": {e: statistics.median(v) for e, v in eval_t.items()},
        "train_speedup_vs_aihwkit": 1.0 / _median_ratio(train_t["lorafusion_ext"], train_t["aihwkit"]),
        "eval_speedup_vs_aihwkit": 1.0 / _median_ratio(eval_t["lorafusion_ext"], eval_t["aihwkit"]),
        "train_ratio_vs_digital": _median_ratio(train_t["lorafusion_ext"], train_t["digital"]),
        "eval_ratio_vs_digital": _median_ratio(eval_t["lorafusion_ext"], eval_t["digital"]),
        "aihwkit_train_ratio_vs_digital": _median_ratio(train_t["aihwkit"], train_t["digital"]),
        "aihwkit_eval_ratio_vs_digital": _median_ratio(eval_t["aihwkit"], eval_t["digital"]),
        "rounds": {"train": args.steps, "eval": len(dev_batches)},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
