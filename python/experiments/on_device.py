"""On-device learning, measured (issue 27, item 6): what does it cost a method to learn on the
chip, reading its gradient back through the crossbar, rather than with the ideal
straight-through backward of every simulator?

On all-MiniLM-L6-v2, every linear layer analog (`pcm_paper`), the heads digital, for each task
(default SST-2 and STS-B, each at the budget sweep's largest budget: 1,000 and 540 training
steps, `--steps` overrides) and each seed (0, 1, 2), with the budget sweep's recipe (batch 32,
length 64, LoRA and head lr 1e-3, batches grouped by length, every training and dev example,
3 trials):

- methods: `hwa_lora` (a LoRA and the head trained through the hardware) and `lorafusion` (the
  packaged GLUE pool on the crossbar, less the held-out task's member, fused by trained
  coefficients and magnitudes, with the head);
- backward settings (`HardwareConfig.backward`): `ideal` (None, straight-through), `8bit` (the
  forward's periphery: 8-bit DAC and ADC, its output noise and managements), `6bit` (the same at
  6 bits), `8bit_1day` (8-bit, the training reading a crossbar programmed and drifted to 1 day
  before the first step, drift compensation applied: a chip that learns late in its life;
  `ondevice.methods` says how).

Each trained model is programmed anew in each of `--trials` trials and read at 0 s and after
10 years of drift; a seed's value is the trial mean. The page gives each on-chip setting's cost
(minus ideal, paired by seed) and which method suffers more. Writes
``docs/results/on_device.{md,json,png}`` after every cell.

Resumable: each finished cell is one JSON file under ``<out>/cells`` (skipped on a rerun),
training checkpoints every 100 steps under ``<out>/checkpoints``; a fresh clone takes the
finished cells of the committed report. ``--workers 2`` starts a second process (one torch
thread each) sharing the queue. The protocol's pieces are in `ondevice/` (protocol, methods,
report); the recipe, data and evaluation are the budget sweep's (`sweep/`).

Cost (measured 2026-12-07 on the real cells' first 10 steps, the same batches for every
setting, 1 torch thread, nice 5, on the 2-core machine shared with the budget sweep's two
workers): a training step takes 2.5 s (HWA-LoRA) and 2.8 s (LoRAFusion) on SST-2 on average
(0.8-8 s with the batch's length), 4.1 s (HWA-LoRA) on STS-B; the on-chip backward costs
0.88-1.03x the ideal one for HWA-LoRA (0.98-1.03x on STS-B) and 1.02-1.07x for LoRAFusion,
the aged setting 1.03x and 1.21x, plus 3-4 s to program and drift the model once (one round
each: the spread of a shared machine). A read of the whole dev set takes 25-40 s (SST-2) and
51-61 s (STS-B), 6 per cell. So a cell takes about 45 min (SST-2, HWA-LoRA) to 1 h (SST-2,
aged LoRAFusion) and 40-50 min on STS-B, the 48 cells about 37 h of cell time: about 19 h
with `--workers 2` on two free cores. The 6 `hwa_lora/ideal` cells run the code, recipe,
seeds and hardware of the budget sweep's largest-budget HWA-LoRA cells, so they are imported
from the sweep (`--from-sweep`, default its run folder `results/budget_sweep`, then the committed
`docs/results/budget_sweep.json`; `sweep.imports`) when it has them under the same config, and
computed here otherwise (about 4.5 h of cell time saved). `--quick` (32 cells on a tiny model) takes about 25 s.

    nice -n 10 .venv/bin/python python/experiments/on_device.py --glue-dir ../shared/data/glue --workers 2
    python python/experiments/on_device.py --quick --glue-dir DIR --out /tmp/q   # smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import command_line, read_json, without_workers  # noqa: E402
from harness.tiny_models import tiny_bert, tiny_pool  # noqa: E402
from lorafusion_ext import HardwareConfig  # noqa: E402
from lorafusion_ext.assets import GLUE_POOL  # noqa: E402
from lorafusion_ext.models import DEFAULT_MODEL, resolve_model_path  # noqa: E402
from ondevice import methods, report  # noqa: E402
from ondevice.protocol import BACKWARDS, STEPS, TASKS, Settings, plan  # noqa: E402
from sweep import driver, imports  # noqa: E402
from sweep.protocol import add_run_arguments, parse_steps, quick_recipe, run_arguments  # noqa: E402

SCRIPT = "python/experiments/on_device.py"
#: Flags that do not change a result (they are dropped from the page's command).
NOT_IN_COMMAND = ("--report-only", "--no-progress")


def parse(argv: list[str] | None) -> tuple[Settings, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p, report.NAME, TASKS)
    p.add_argument("--steps", default="", help="per-task training steps, e.g. 'sst2=1000,stsb=540' (the defaults; "
                                               "--quick: 2)")
    p.add_argument("--backwards", default=",".join(BACKWARDS), help=f"backward settings, among {list(BACKWARDS)}")
    p.add_argument("--pool", default=None, help="LoRAFusion's pool folder (default: the packaged GLUE pool; --quick: "
                                                "a random pool of the tiny model)")
    imports.add_argument(p, "the `hwa_lora` / `ideal` cells (its `hwa_lora` cells at the same steps)")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny random BERT and pool, 2 steps, 2 seeds")
    a = p.parse_args(argv)
    tasks, recipe = run_arguments(p, a)
    backwards = tuple(b.strip() for b in a.backwards.split(",") if b.strip())
    if "ideal" not in backwards or set(backwards) - set(BACKWARDS):
        p.error(f"--backwards {a.backwards!r}; expected settings among {list(BACKWARDS)}, 'ideal' included (the "
                "costs are against it)")
    steps = parse_steps(a.steps, tasks)
    defaults = {t: 2 for t in tasks} if a.quick else STEPS
    missing = [t for t in tasks if t not in steps and t not in defaults]
    if missing:
        p.error(f"--steps gives no steps for {missing}; expected TASK=STEPS for every task without a default {STEPS}")
    if a.quick:
        recipe = quick_recipe(recipe)
    out = Path(a.out)
    model = a.model or (tiny_bert(out / "tiny_bert") if a.quick else DEFAULT_MODEL)
    pool = Path(a.pool) if a.pool else (Path(tiny_pool(model, out / "tiny_pool")) if a.quick else GLUE_POOL)
    provenance = read_json(pool / "provenance.json")
    if provenance and resolve_model_path(provenance["model"]) != resolve_model_path(model):
        p.error(f"--pool {pool} was trained on {provenance['model']}, not on --model {model}")
    s = Settings(model=model, glue_dir=a.glue_dir, hardware_name=a.hardware, out=out,
                 docs=Path(a.docs) if a.docs else (out if a.quick else Path("docs/results")), tasks=tasks,
                 budgets={t: (steps.get(t) or defaults[t],) for t in tasks}, recipe=recipe, threads=a.threads,
                 only=tuple(x for x in a.only.split(",") if x), progress=not a.no_progress,
                 command=command_line(SCRIPT, without_workers(sys.argv[1:] if argv is None else argv),
                                      drop=NOT_IN_COMMAND),
                 hardware=HardwareConfig.preset(a.hardware), backwards=backwards, pool=pool,
                 from_sweep=imports.sources(a))
    return s, a


def config(s: Settings) -> dict:
    """What a finished cell must have been computed with to be reused (method, setting, steps and
    seed are in its key)."""
    r = dataclasses.asdict(s.recipe)
    for k in ("seeds", "checkpoint_every", "full_finetune_lr"):
        r.pop(k)
    return {"model": s.model, "hardware": s.hardware_name, **r, "pool": methods.pool_digest(s.pool),
            "fusion": dataclasses.asdict(methods.fusion_cfg(s)), "training_chip_seed": methods.TRAINING_CHIP_SEED}


def main(argv: list[str] | None = None) -> dict:
    s, a = parse(argv)
    cfg = config(s)
    return driver.run(report, Path(__file__), s, a, list(sys.argv[1:] if argv is None else argv), cfg, plan,
                      methods.run_cell, prepare=methods.import_from_sweep(s, cfg))


if __name__ == "__main__":
    main()
