"""Budget sweep (issue 25, item 1): from which training budget does a LoRA trained through the
hardware (HWA-LoRA) beat the same LoRA trained digitally and deployed on the same crossbar?

On all-MiniLM-L6-v2, every linear layer analog (`pcm_paper`), the heads digital, for each task
(default SST-2, STS-B, MRPC) and each budget (4 step counts on a log scale from about 100 to 3
epochs at batch 32 or 2,000 steps, whichever is smaller; `--budgets` overrides):

- `hwa_lora`: LoRA (rank 8 on every linear layer) and head trained through the hardware;
- `digital_lora`: the same recipe on the digital model, then deployed (pretrained weights on
  the crossbar, LoRA and head digital); its digital score is the ceiling (`digital`);
- `full_finetune` (largest budget, first seed): every weight trained digitally, the reference
  of what the model learns on the task.

Each crossbar evaluation programs the model anew in each of `--trials` trials and reads it at
0 s and after 10 years of drift; a seed's value is the trial mean. Seed 0 at every budget,
seeds 0-2 at the largest. Writes ``docs/results/budget_sweep.{md,json,png}`` after every cell.

Resumable: each finished cell is one JSON file under ``<out>/cells`` (skipped on a rerun),
training checkpoints every 100 steps under ``<out>/checkpoints``; a fresh clone takes the
finished cells of the committed report. ``--workers 2`` starts a second process (one torch
thread each) sharing the queue.

    nice -n 10 .venv/bin/python python/experiments/budget_sweep.py --glue-dir ../shared/data/glue --workers 2
    python python/experiments/budget_sweep.py --quick --glue-dir DIR --out /tmp/q   # smoke run
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import command_line, without_workers  # noqa: E402
from harness.tiny_models import tiny_bert  # noqa: E402
from lorafusion_ext import HardwareConfig  # noqa: E402
from lorafusion_ext.data.glue import load_glue  # noqa: E402
from lorafusion_ext.models import DEFAULT_MODEL  # noqa: E402
from sweep import driver, methods, report  # noqa: E402
from sweep.protocol import (TASKS, Settings, add_run_arguments, default_budgets, plan, quick_recipe,  # noqa: E402
                            run_arguments, sweep_config)

SCRIPT = "python/experiments/budget_sweep.py"
#: Flags that do not change a result (they are dropped from the page's command).
NOT_IN_COMMAND = ("--report-only", "--no-progress")


def parse_budgets(text: str, tasks: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """'sst2=100,300,800,2000;mrpc=...' -> {task: budgets}."""
    out: dict[str, tuple[int, ...]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        task, _, steps = part.partition("=")
        try:
            values = tuple(sorted({int(v) for v in steps.split(",") if v.strip()}))
        except ValueError:
            raise SystemExit(f"--budgets: {part!r}; expected TASK=STEPS,STEPS,... with integer steps") from None
        if task not in tasks or not values or min(values) < 1:
            raise SystemExit(f"--budgets: {part!r}; expected a task of --tasks {tasks} and positive step counts")
        out[task] = values
    return out


def parse(argv: list[str] | None) -> tuple[Settings, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p, report.NAME, TASKS)
    p.add_argument("--budgets", default="", help="per-task step counts, e.g. 'sst2=100,300,800,2000;mrpc=100,200'")
    p.add_argument("--full-finetune-lr", type=float, default=5e-5)
    p.add_argument("--quick", action="store_true", help="smoke run: tiny random BERT, budgets 2 and 4, 2 seeds")
    a = p.parse_args(argv)
    tasks, recipe = run_arguments(p, a, full_finetune_lr=a.full_finetune_lr)
    out = Path(a.out)
    budgets = parse_budgets(a.budgets, tasks)
    if a.quick:
        recipe = quick_recipe(recipe)
        budgets = {t: budgets.get(t, (2, 4)) for t in tasks}
    rule_top = {}
    for t in tasks:
        n = len(load_glue(t, "train", a.glue_dir))
        rule = default_budgets(min(n, recipe.train_examples or n), recipe.batch_size)
        rule_top[t] = rule[-1]
        budgets.setdefault(t, rule)
    model = a.model or (tiny_bert(out / "tiny_bert") if a.quick else DEFAULT_MODEL)
    docs = Path(a.docs) if a.docs else (out if a.quick else Path("docs/results"))
    s = Settings(model=model, glue_dir=a.glue_dir, hardware_name=a.hardware, out=out, docs=docs, tasks=tasks,
                 budgets=budgets, recipe=recipe, threads=a.threads, rule_top=rule_top,
                 only=tuple(x for x in a.only.split(",") if x), progress=not a.no_progress,
                 command=command_line(SCRIPT, without_workers(sys.argv[1:] if argv is None else argv),
                                      drop=NOT_IN_COMMAND))
    s.hardware = HardwareConfig.preset(a.hardware)
    return s, a


def main(argv: list[str] | None = None) -> dict:
    s, a = parse(argv)
    return driver.run(report, Path(__file__), s, a, list(sys.argv[1:] if argv is None else argv), sweep_config(s), plan,
                      methods.run_cell)


if __name__ == "__main__":
    main()
