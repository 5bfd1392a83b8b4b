"""The on-device measurement's JSON (the issue's schema), its page and its plot."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Sequence

from harness import format_mean_std, machine, mean_std, pending_section, pyplot
from harness.cells import Cell

from .methods import TRAINING_CHIP_SEED, fusion_cfg
from .protocol import BACKWARDS, METHODS, Settings, cell_key

NAME = "on_device"
LABELS = {"hwa_lora": "HWA-LoRA", "lorafusion": "LoRAFusion"}
TIMES = {"t0": "0 s", "t10y": "10 y"}

Values = list  # [value or None per seed of the recipe]


def _per_seed(done: dict[str, dict], s: Settings, task: str, method: str, bw: str, when: str) -> Values:
    out = []
    for seed in s.recipe.seeds:
        rec = done.get(cell_key(task, method, bw, s.steps(task), seed))
        out.append(None if rec is None else float(rec[when]))
    return out


def paired_cost(on_chip: Values, ideal: Values) -> Values:
    """On-chip minus ideal, seed by seed (None where either is missing): what on-chip learning
    costs (negative: the metric drops)."""
    return [None if a is None or b is None else a - b for a, b in zip(on_chip, ideal)]


def _given(vals: Sequence[float | None]) -> list[float]:
    return [v for v in vals if v is not None]


def build(s: Settings, cells: list[Cell], done: dict[str, dict], chance: dict[str, dict]) -> dict[str, Any]:
    tasks = {task: {m: {bw: {when: _per_seed(done, s, task, m, bw, when) for when in TIMES} for bw in s.backwards}
                    for m in METHODS} for task in s.tasks}
    costs = {task: {m: {bw: {when: paired_cost(v[bw][when], v["ideal"][when]) for when in TIMES}
                        for bw in s.backwards if bw != "ideal"}
                    for m, v in per_method.items()} for task, per_method in tasks.items()}
    pending = [c.key for c in cells if c.key not in done]
    walls = [float(r.get("wall_s", 0.0)) for r in done.values()]
    imported = {k: r["imported_from"] for k, r in sorted(done.items()) if "imported_from" in r}
    return {"tasks": tasks, "command": s.command, "wall_s": math.fsum(walls), "machine": machine(s.threads),
            "imported": imported,
            "model": s.model, "seeds": list(s.recipe.seeds), "costs": costs, "steps": {t: s.steps(t) for t in s.tasks},
            "metrics": {t: chance[t]["metric"] for t in s.tasks if t in chance},
            "chance": {t: chance[t]["value"] for t in s.tasks if t in chance},
            "backwards": {bw: BACKWARDS[bw].label for bw in s.backwards},
            "complete": not pending, "pending": pending, "recipe": recipe_text(s),
            "cells": {k: done[k] for k in sorted(done)}, "written_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def recipe_text(s: Settings) -> str:
    r, f = s.recipe, fusion_cfg(s)
    steps = ", ".join(f"{t} {s.steps(t)}" for t in s.tasks)
    return (f"Model {s.model}; hardware `{s.hardware_name}` on every linear layer, heads digital. Every run (the "
            f"budget sweep's recipe): batch {r.batch_size}, sequence length {r.max_length}, batches grouped by length "
            f"(groups of {r.group_by_length} batches, then shuffled), Adam with the learning rate decaying linearly to "
            f"0; steps: {steps}. HWA-LoRA: rank 8, alpha 32, dropout 0.1 on every linear layer, LoRA lr {r.lora_lr}, "
            f"head lr {r.head_lr}. LoRAFusion: the pool `{s.pool.name}` on the crossbar less the held-out task's own "
            f"member, {f.mode} mixing, one coefficient vector per {f.granularity}, DoRA magnitudes; coefficients lr "
            f"{f.coeff_lr}, L1 {f.l1}, magnitudes lr {f.magnitude_lr}, head lr {f.head_lr}. Training examples: "
            f"{r.train_examples or 'all'}; dev examples: {r.eval_examples or 'all'}. Seeds {list(r.seeds)}, each "
            "trained once per method and backward setting (a seed fixes the model's noise seeds, the data order, "
            "the dropout and the evaluation's chips, so settings compare seed by seed); "
            f"{r.trials} programming + drift trials per evaluation (a seed's value is their mean).")


def _cell(vals: Values, n: int, digits: int = 3) -> str:
    got = _given(vals)
    if not got:
        return "pending"
    return format_mean_std(got, digits) + ("" if len(got) == n else f" ({len(got)} of {n} seeds)")


def verdict(task: str, costs: dict[str, dict], bw: str, when: str, n: int) -> str:
    """Which method the backward setting `bw` costs more at `when`, or why that is not known."""
    got = {m: _given(costs[m][bw][when]) for m in METHODS}
    if any(len(v) < n for v in got.values()):
        return f"- {bw}, {TIMES[when]}: pending (seeds missing)."
    stats = {m: mean_std(v) for m, v in got.items()}
    shown = "; ".join(f"{LABELS[m]} {mu:+.3f}" for m, (mu, _) in stats.items())
    worse = min(METHODS, key=lambda m: stats[m][0])
    other = next(m for m in METHODS if m != worse)
    gap = stats[other][0] - stats[worse][0]
    spread = max((0.0 if math.isnan(sd) else sd) for _, sd in stats.values())
    if gap <= spread:
        return f"- {bw}, {TIMES[when]}: {shown}: no method suffers more beyond the seed spread ({spread:.3f})."
    return f"- {bw}, {TIMES[when]}: {shown}: {LABELS[worse]} suffers more (by {gap:.3f}, seed spread {spread:.3f})."


def markdown(data: dict[str, Any]) -> str:
    status = "complete" if data["complete"] else f"incomplete, {len(data['pending'])} cells pending"
    n = len(data["seeds"])
    lines = ["# On-device learning: what reading the gradient through the crossbar costs", "",
             f"**Status: {status}.**", "", f"Command: `{data['command']}`  ",
             f"Cell time (sum of the finished cells' wall times; a cell imported from the budget sweep counts 0 s): "
             f"{data['wall_s']:.0f} s. Machine: {data['machine']}. Written {data['written_at']}.", "",
             data["recipe"], "",
             "The `hwa_lora` / `ideal` cells are the budget sweep's `hwa_lora` cells at the same steps (the same "
             "code, recipe, seeds and hardware), imported from it when it has them"
             + (f" ({len(data['imported'])} cells imported: JSON `imported`)." if data.get("imported")
                else " (none imported in this run)."), "",
             "Backward settings (the read of the input gradient dx = Wᵀ·dy, `HardwareConfig.backward`; "
             "docs/numerics.md, \"The backward read\"):", ""]
    lines += [f"- `{bw}`: {label}" for bw, label in data["backwards"].items()]
    lines += ["", "`8bit_1day` trains on a crossbar programmed and drifted to 1 day before the first step "
              f"(its own programming, seed + {TRAINING_CHIP_SEED}): forward and backward read those weights with the "
              "global drift compensation applied (folded into the scale rows, since `AnalogLinear` applies it in eval "
              "mode only); the training modifier stays on as in every setting. Every model is then evaluated alike: "
              "programmed anew, read at 0 s and after 10 years of drift.", "",
              "Values: the task's main metric, mean ± standard deviation over seeds. Cost: on-chip minus ideal, "
              "seed by seed (paired), mean ± standard deviation of those differences; negative is a loss.", ""]
    for task, per_method in data["tasks"].items():
        metric = data["metrics"].get(task, "")
        lines += [f"## {task} ({metric}, {data['steps'][task]} steps)", "",
                  "| backward | " + " | ".join(f"{LABELS[m]} {TIMES[w]}" for m in per_method for w in TIMES) + " |",
                  "|---" + "|---:" * (2 * len(per_method)) + "|"]
        for bw in data["backwards"]:
            lines.append(f"| `{bw}` | " + " | ".join(_cell(per_method[m][bw][w], n) for m in per_method for w in TIMES)
                         + " |")
        costs = data["costs"][task]
        lines += ["", "Cost of on-chip learning (minus ideal, paired by seed):", "",
                  "| backward | " + " | ".join(f"{LABELS[m]} {TIMES[w]}" for m in costs for w in TIMES) + " |",
                  "|---" + "|---:" * (2 * len(costs)) + "|"]
        for bw in (b for b in data["backwards"] if b != "ideal"):
            lines.append(f"| `{bw}` | " + " | ".join(_cell(costs[m][bw][w], n) for m in costs for w in TIMES) + " |")
        if task in data["chance"]:
            lines += ["", f"Chance (constant predictor on the same dev examples): {data['chance'][task]:.3f}."]
        lines += ["", "Which method suffers more:", ""]
        lines += [verdict(task, costs, bw, w, n) for bw in data["backwards"] if bw != "ideal" for w in TIMES]
        lines.append("")
    lines += ["## What not to conclude yet", "",
              "- A cost smaller than its standard deviation over seeds is not a finding; with "
              f"{n} seeds even a larger one is a weak one.",
              f"- One model ({data['model']}), one hardware preset, one budget per task: costs may grow with longer "
              "training (more steps through the noisy gradient) or shrink with it.",
              "- The spread over drift trials is inside each seed's value, not shown: the JSON holds every trial "
              "(`cells`).", ""]
    lines += pending_section(data["pending"])
    return "\n".join(lines)


def plot(data: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    tasks = list(data["tasks"])
    bws = list(data["backwards"])
    fig, axes = plt.subplots(len(tasks), len(TIMES), figsize=(4.4 * len(TIMES), 3.2 * len(tasks)), squeeze=False)
    for row, task in zip(axes, tasks):
        for ax, when in zip(row, TIMES):
            for i, (m, per_bw) in enumerate(data["tasks"][task].items()):
                pts = [(x, mean_std(_given(per_bw[bw][when]))) for x, bw in enumerate(bws) if _given(per_bw[bw][when])]
                if pts:
                    xs = [x + (i - 0.5) * 0.08 for x, _ in pts]  # side by side, not on top of each other
                    ax.errorbar(xs, [mu for _, (mu, _) in pts], yerr=[0.0 if math.isnan(sd) else sd for _, (_, sd) in pts],
                                color=f"C{i}", marker="o", ms=4, capsize=3, label=LABELS[m])
            if task in data["chance"]:
                ax.axhline(data["chance"][task], color="k", lw=0.8, alpha=0.5, label="chance")
            ax.set_xticks(range(len(bws)), bws)
            ax.set_xlabel("backward read")
            ax.set_ylabel(data["metrics"].get(task, ""))
            ax.set_title(f"{task}, read at {TIMES[when]}")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

