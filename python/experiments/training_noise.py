"""Training noise (issue 25): does the weight noise that HWA-LoRA trains through help or hurt
the model deployed on the crossbar, at the budget sweep's budgets?

The budget sweep found HWA-LoRA (LoRA and head trained through `pcm_paper`) near the mean
predictor on STS-B (Pearson 0.31 at 310 steps, seed 0) where the digital LoRA deployed on the
same crossbar reaches 0.84. An uncommitted ablation (STS-B, 180 steps, seed 0, read
unprogrammed) pointed at the training weight-noise modifier (ADD_NORMAL, std 0.067 of each
tile's max |W|): all training noise off 0.784; DAC/ADC quantisation off 0.037; the modifier off
0.733; output noise off 0.068. This script makes that a reproducible experiment: HWA-LoRA is
trained with the training-time noise changed and everything else the sweep's recipe, then the
*same model* is deployed and evaluated on the unchanged `pcm_paper` hardware (programmed anew in
each of 3 trials, read at 0 s and 10 years, as `sweep.methods.on_crossbar`; also read once
unprogrammed). Rows differ only in what the LoRA saw while training
(`lorafusion_ext.nn.deploy.set_hardware` swaps the layers' read before and after training).

Rows (`trainnoise.protocol`), chosen from the ablation:

- `modifier_x0`, `modifier_x0.25`, `modifier_x0.5`, `modifier_x1`: the modifier's std times 0
  (off), 0.25, 0.5, 1 (the preset as is), DAC/ADC and output noise on. The ablation had only
  the two ends; the scale axis says whether some weight noise can be kept (the robustness it is
  meant to buy, visible at 10 y) without losing the learning. `modifier_x0` is the ablation's
  "modifier off" (quantisation and output noise on, as on the chip).
- `no_out_noise`: the preset's modifier, output noise off in training: with `modifier_x0` it
  separates the two noises (the ablation: output noise off alone did not help, 0.068). No "all
  training noise off" row: quantisation off alone did not help either (0.037), and the
  digital LoRA deployed (below) is the no-hardware-in-training end.
- `digital_lora` (reference, never computed here): the budget sweep's digital LoRA at the
  same steps and seed deployed on the same crossbar, shown when the sweep has it.

`modifier_x1` at the sweep's budget is the sweep's `hwa_lora` cell exactly (same model, seed,
batches and evaluation): it is imported, as is the reference, from `--from-sweep` (a budget
sweep run folder or report JSON; default results/budget_sweep, then the committed
docs/results/budget_sweep.json) when computed with this run's model, hardware and recipe,
instead of being recomputed. Tasks: STS-B (default; 310 steps) and SST-2 (`--tasks stsb,sst2`;
270 steps); `--steps TASK=N` overrides. Seeds 0, 1, 2. Writes
``docs/results/training_noise.{md,json,png}`` after every cell; resumable like the sweep
(``<out>/cells``, checkpoints every 100 steps, the committed report's cells adopted by a fresh
run folder; ``--workers 2`` shares the queue between two processes).

Cost (estimate from the budget sweep's and the on-device measurement's timings, 1 torch thread,
the 2-core machine): an HWA-LoRA step of STS-B ~2.5 s, so 310 steps ~13 min; the evaluation
(6 programmed reads of the 1,500 dev pairs, ~4 min) and the unprogrammed read (~40 s) ~5 min:
~18 min a cell. STS-B: 5 rows x 3 seeds = 15 cells, 14 computed (the sweep has `modifier_x1`
seed 0) = ~4.2 h of cell time, ~2.1 h with ``--workers 2`` on two free cores. SST-2 (270
steps at ~1.3 s, 7 reads of 872 sentences ~4 min): ~10 min a cell, 14 cells ~2.3 h more.
`--quick` (10 cells of a tiny model, 2 seeds) takes about 40 s.

    nice -n 10 .venv/bin/python python/experiments/training_noise.py --glue-dir ../shared/data/glue --workers 2
    python python/experiments/training_noise.py --quick --glue-dir DIR --out /tmp/q   # smoke run
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import command_line, without_workers  # noqa: E402
from harness.tiny_models import tiny_bert  # noqa: E402
from lorafusion_ext import HardwareConfig  # noqa: E402
from lorafusion_ext.models import DEFAULT_MODEL  # noqa: E402
from sweep import driver, imports  # noqa: E402
from sweep.protocol import add_run_arguments, parse_steps, quick_recipe, run_arguments  # noqa: E402
from trainnoise import methods, report  # noqa: E402
from trainnoise.protocol import SCALES, STEPS, Settings, config, parse_scales, plan, rows  # noqa: E402

SCRIPT = "python/experiments/training_noise.py"
#: Flags that do not change a result (they are dropped from the page's command).
NOT_IN_COMMAND = ("--report-only", "--no-progress")


def parse(argv: list[str] | None) -> tuple[Settings, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p, report.NAME, ("stsb",))
    p.add_argument("--steps", default="", help=f"per-task training steps, e.g. 'stsb=310,sst2=270' (defaults {STEPS}; "
                                               "--quick: 4)")
    p.add_argument("--scales", default=",".join(f"{x:g}" for x in SCALES),
                   help="the training modifier's std as multiples of the preset's, one row each")
    p.add_argument("--no-out-noise-row", action=argparse.BooleanOptionalAction, default=True,
                   help="the control row: the preset's modifier, no output noise in training")
    imports.add_argument(p, "`modifier_x1` and the reference")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny random BERT, 4 steps, 2 seeds")
    a = p.parse_args(argv)
    tasks, recipe = run_arguments(p, a)
    steps = parse_steps(a.steps, tasks)
    defaults = {t: 4 for t in tasks} if a.quick else STEPS
    missing = [t for t in tasks if t not in steps and t not in defaults]
    if missing:
        p.error(f"--steps gives no steps for {missing}; expected TASK=STEPS for every task without a default {STEPS}")
    hardware = HardwareConfig.preset(a.hardware)
    if hardware.modifier.kind not in ("add_normal", "mult_normal"):
        p.error(f"--hardware {a.hardware}: its training modifier is {hardware.modifier.kind!r}; the rows scale the "
                "std of an 'add_normal' or 'mult_normal' modifier")
    if a.quick:
        recipe = quick_recipe(recipe)
    out = Path(a.out)
    s = Settings(model=a.model or (tiny_bert(out / "tiny_bert") if a.quick else DEFAULT_MODEL), glue_dir=a.glue_dir,
                 hardware_name=a.hardware, out=out, docs=Path(a.docs) if a.docs else (out if a.quick else Path("docs/results")),
                 tasks=tasks, budgets={t: (steps.get(t) or defaults[t],) for t in tasks}, recipe=recipe,
                 threads=a.threads, only=tuple(x for x in a.only.split(",") if x), progress=not a.no_progress,
                 command=command_line(SCRIPT, without_workers(sys.argv[1:] if argv is None else argv),
                                      drop=NOT_IN_COMMAND),
                 hardware=hardware, rows=rows(parse_scales(p, a.scales), a.no_out_noise_row),
                 from_sweep=imports.sources(a))
    return s, a


def main(argv: list[str] | None = None) -> dict:
    s, a = parse(argv)
    return driver.run(report, Path(__file__), s, a, list(sys.argv[1:] if argv is None else argv), config(s), plan,
                      methods.run_cell, prepare=methods.import_from_sweep(s))


if __name__ == "__main__":
    main()
