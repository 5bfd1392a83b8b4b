"""Noise levels (issue 25): how noisy is the model that HWA-LoRA trains through, against the one
every method is deployed on?

The budget sweep found HWA-LoRA (the LoRA and head trained through `pcm_paper`) near the mean
predictor on STS-B where the digital LoRA deployed on the same crossbar learns the task. This
measures, with no training at all, the noise each read puts on the pretrained encoder: the
*training read* (unprogrammed layers in training mode: the weight-noise modifier drawn on every
call, quantisation and output noise; the modifier's std scaled x1, x0.5, x0.25, x0) against the
*deployed read* (programmed, drifted to 0 s, 1 h, 1 d, 1 y and 10 y, compensated, eval mode).
all-MiniLM-L6-v2 is a sentence embedder, so the zero-shot STS-B correlation of its mean-pooled
embeddings says how much task signal survives a read; the relative error of the embeddings, of
the [CLS] token and of every layer's hidden states says how far the read is from the digital
model.

Writes ``docs/results/noise_levels.{md,json,png}`` after every cell; resumable (``<out>/cells``;
a fresh run folder adopts the committed report's cells). Cost on this 2-core host, 1 thread: a
read of the 3,000 dev sentences about 1 min; 1 digital + 4 x 3 training + 5 x 3 deployed reads,
about 30 min. ``--quick`` (a tiny random BERT) takes seconds.

    nice -n 5 .venv/bin/python python/experiments/noise_levels.py --glue-dir ../shared/data/glue
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Cell, Claims, RunFolder, command_line, read_json, run_queue, write_page  # noqa: E402
from harness.tiny_models import tiny_bert  # noqa: E402
from lorafusion_ext import HardwareConfig  # noqa: E402
from lorafusion_ext.models import DEFAULT_MODEL  # noqa: E402
from noiselevels import measure, report  # noqa: E402
from noiselevels.protocol import SCALES, TIMES, YEAR, Settings, config, plan  # noqa: E402
from trainnoise.protocol import parse_scales  # noqa: E402

SCRIPT = "python/experiments/noise_levels.py"
NOT_IN_COMMAND = ("--report-only",)


def _positive(p: argparse.ArgumentParser, name: str, value: int | None) -> None:
    if value is not None and value < 1:
        p.error(f"--{name} must be >= 1, got {value}")


def parse(argv: list[str] | None) -> tuple[Settings, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--glue-dir", required=True, help="GLUE folder (official TSV layout) with STS-B's dev split")
    p.add_argument("--out", default=f"results/{report.NAME}", help="run folder (cells)")
    p.add_argument("--docs", default=None, help="where noise_levels.md/json/png go (default docs/results; --quick: --out)")
    p.add_argument("--model", default=None, help="model id or folder (default all-MiniLM-L6-v2; --quick: a tiny BERT)")
    p.add_argument("--hardware", default="pcm_paper", help="hardware preset")
    p.add_argument("--pairs", type=int, default=None, help="STS-B dev pairs (default: all)")
    p.add_argument("--trials", type=int, default=3, help="noise draws per read")
    p.add_argument("--scales", default=",".join(f"{x:g}" for x in SCALES),
                   help="the training modifier's std as multiples of the preset's, one training read each")
    p.add_argument("--layer-sentences", type=int, default=512,
                   help="sentences whose every layer is compared with the digital model")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from the finished cells")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny random BERT, 2 trials, 0 s and 10 y")
    a = p.parse_args(argv)
    for name in ("pairs", "trials", "layer_sentences", "batch_size", "max_length", "threads"):
        _positive(p, name.replace("_", "-"), getattr(a, name))
    scales = parse_scales(p, a.scales)[::-1]  # the page lists the noisiest training read first
    hardware = HardwareConfig.preset(a.hardware)
    if hardware.modifier.kind not in ("add_normal", "mult_normal"):
        p.error(f"--hardware {a.hardware}: its training modifier is {hardware.modifier.kind!r}; the training reads "
                "scale the std of an 'add_normal' or 'mult_normal' modifier")
    out = Path(a.out)
    s = Settings(model=a.model or (tiny_bert(out / "tiny_bert") if a.quick else DEFAULT_MODEL), glue_dir=a.glue_dir,
                 hardware_name=a.hardware, out=out, docs=Path(a.docs) if a.docs else (out if a.quick else Path("docs/results")),
                 pairs=a.pairs, trials=2 if a.quick and a.trials == 3 else a.trials, scales=scales,
                 times=(0.0, 10 * YEAR) if a.quick else TIMES, max_length=a.max_length, batch_size=a.batch_size,
                 layer_sentences=a.layer_sentences, threads=a.threads, hardware=hardware,
                 command=command_line(SCRIPT, sys.argv[1:] if argv is None else argv, drop=NOT_IN_COMMAND))
    return s, a


def write(s: Settings, done: dict[str, dict]) -> dict:
    data = report.build(s, plan(s), done)
    write_page(s.docs, report.NAME, report.markdown(data, s), data, json_newline=True,
               plot=lambda path: report.plot(data, path))
    return data


def main(argv: list[str] | None = None) -> dict:
    s, a = parse(argv)
    torch.set_num_threads(s.threads)
    s.out.mkdir(parents=True, exist_ok=True)
    folder = RunFolder(s.out / "cells", config=config(s), config_field="config")
    log = lambda msg: print(f"[{report.NAME} {os.getpid()}] {msg}", flush=True)  # noqa: E731
    committed = read_json(s.docs / f"{report.NAME}.json")
    taken = folder.adopt(committed.get("cells", {})) if committed else []
    if taken:
        log(f"{len(taken)} finished cells taken from the committed report")
    if a.report_only:
        return write(s, folder.load())
    ctx: measure.Context | None = None

    def compute(cell: Cell, done: dict[str, dict]) -> dict:
        nonlocal ctx
        if ctx is None:
            ctx = measure.Context(s)  # the digital read, once per process and only if a cell is left
        t0 = time.perf_counter()
        rec = measure.COMPUTE[cell.kind](ctx, cell)
        return {**rec, "key": cell.key, "wall_s": time.perf_counter() - t0}

    def finished(cell: Cell, rec: dict) -> None:
        log(f"{cell.key}: {rec['wall_s']:.0f} s")
        write(s, folder.load())

    run_queue(plan(s), folder, Claims(s.out / "claims"), compute, after_cell=finished, log=log)
    return write(s, folder.load())


if __name__ == "__main__":
    main()
