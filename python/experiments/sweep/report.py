"""The budget sweep's JSON (the issue's schema), its page and its plot."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Sequence

from harness import format_mean_std, machine, mean_std, pending_section, pyplot
from harness.cells import Cell

from .protocol import METHODS, Settings

NAME = "budget_sweep"
LABELS = {"hwa_lora": "HWA-LoRA (trained through the hardware)",
          "digital_lora": "digital LoRA deployed on the crossbar",
          "digital": "digital LoRA, no hardware (ceiling)"}


def _per_budget(done: dict[str, dict], s: Settings, task: str, method: str, field: str) -> list[list[float]]:
    """[[value per finished seed] per budget] of one method (the ceiling reads `digital_lora`)."""
    source = "digital_lora" if method == "digital" else method
    out = []
    for steps in s.budgets[task]:
        vals = []
        for seed in s.recipe.seeds:
            rec = done.get(f"{task}/{source}/b{steps}/seed{seed}")
            if rec is not None:
                vals.append(float(rec["digital" if method == "digital" else field]))
        out.append(vals)
    return out


def crossover(budgets: Sequence[int], hwa: Sequence[Sequence[float]], dig: Sequence[Sequence[float]]) -> int | None:
    """The smallest budget from which HWA-LoRA's mean stays above the deployed digital LoRA's at
    every larger budget; None if there is none, or while a budget lacks either method."""
    if any(not h or not d for h, d in zip(hwa, dig)):
        return None
    above = [mean_std(h)[0] > mean_std(d)[0] for h, d in zip(hwa, dig)]
    for i in range(len(budgets)):
        if all(above[i:]):
            return int(budgets[i])
    return None


def build(s: Settings, cells: list[Cell], done: dict[str, dict], chance: dict[str, dict]) -> dict[str, Any]:
    tasks: dict[str, Any] = {}
    for task in s.tasks:
        methods = {m: {"t0": _per_budget(done, s, task, m, "t0"), "t10y": _per_budget(done, s, task, m, "t10y")}
                   for m in (*METHODS, "digital")}
        ft = [r for k, r in done.items() if k.startswith(f"{task}/full_finetune/")]
        tasks[task] = {
            "metric": chance[task]["metric"] if task in chance else "",
            "budgets": list(s.budgets[task]),
            "methods": methods,
            "crossover": {t: crossover(s.budgets[task], methods["hwa_lora"][t], methods["digital_lora"][t])
                          for t in ("t0", "t10y")},
            "chance": chance.get(task, {}).get("value"),
            "full_finetune": {"budget": ft[0]["budget"], "t0": ft[0]["digital"]} if ft else None,
            "rule_top": s.rule_top.get(task),
        }
    pending = [c.key for c in cells if c.key not in done]
    walls = [float(r.get("wall_s", 0.0)) for r in done.values()]
    return {"tasks": tasks, "command": s.command, "wall_s": math.fsum(walls), "machine": machine(s.threads),
            "complete": not pending, "pending": pending, "recipe": recipe_text(s), "chance": chance,
            "cells": {k: done[k] for k in sorted(done)}, "written_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def recipe_text(s: Settings) -> str:
    r = s.recipe
    return (f"Model {s.model}; hardware `{s.hardware_name}` on every linear layer, heads digital. Every run: batch "
            f"{r.batch_size}, sequence length {r.max_length}, batches grouped by length (groups of {r.group_by_length} "
            f"batches, then shuffled), Adam with the learning rate decaying linearly to 0 over the budget; LoRA rank 8, "
            f"alpha 32, dropout 0.1 on every linear layer, LoRA lr {r.lora_lr}, head lr {r.head_lr}; full fine-tune "
            f"lr {r.full_finetune_lr} (head {r.head_lr}). Training examples: {r.train_examples or 'all'}; dev examples: "
            f"{r.eval_examples or 'all'}. Seeds {list(r.seeds)} at the largest budget, seed {r.seeds[0]} below it; "
            f"{r.trials} programming + drift trials per evaluation (a seed's value is their mean).")


def _cell(vals: list[float], digits: int = 3) -> str:
    return format_mean_std(vals, digits) if vals else "pending"


def markdown(data: dict[str, Any]) -> str:
    status = "complete" if data["complete"] else f"incomplete, {len(data['pending'])} cells pending"
    lines = ["# Budget sweep: when does training through the hardware pay?", "", f"**Status: {status}.**", "",
             f"Command: `{data['command']}`  ",
             f"Cell time (sum of the finished cells' wall times): {data['wall_s']:.0f} s. Machine: {data['machine']}. "
             f"Written {data['written_at']}.", "", data["recipe"], "",
             "Each row is a training budget (optimizer steps); values are the task's main metric, mean ± standard "
             "deviation over seeds (one seed below the largest budget, so no spread there). `t0`: read right after "
             "programming; `10 y`: after ten years of drift with global drift compensation.", ""]
    for task, t in data["tasks"].items():
        m = t["methods"]
        lines += [f"## {task} ({t['metric']})", "",
                  "| steps | HWA-LoRA 0 s | HWA-LoRA 10 y | digital LoRA on crossbar 0 s | digital LoRA on crossbar 10 y "
                  "| digital LoRA, no hardware |", "|---:|---:|---:|---:|---:|---:|"]
        for i, steps in enumerate(t["budgets"]):
            lines.append(f"| {steps} | {_cell(m['hwa_lora']['t0'][i])} | {_cell(m['hwa_lora']['t10y'][i])} "
                         f"| {_cell(m['digital_lora']['t0'][i])} | {_cell(m['digital_lora']['t10y'][i])} "
                         f"| {_cell(m['digital']['t0'][i])} |")
        ft = t["full_finetune"]
        lines += ["", f"Chance (constant predictor on the same dev examples): {t['chance']:.3f}. " if t["chance"] is not None
                  else "", f"Full fine-tune, digital, {ft['budget']} steps: {ft['t0']:.3f}." if ft else
                  "Full fine-tune: pending.", ""]
        if t.get("rule_top") and t["budgets"][-1] < t["rule_top"]:
            lines += [f"The largest budget, {t['budgets'][-1]} steps, is below the issue's rule ({t['rule_top']} steps: "
                      "3 epochs of the training set at this batch size or 2,000 steps, whichever is smaller): trimmed "
                      "with `--budgets` to keep the issue's compute within its cap of about 15 h of 2-core time.", ""]
        for when, label in (("t0", "0 s"), ("t10y", "10 years")):
            c = t["crossover"][when]
            hwa, dig = m["hwa_lora"][when], m["digital_lora"][when]
            if c is not None:
                lines.append(f"- At {label}: HWA-LoRA stays above the deployed digital LoRA from {c} steps on.")
            elif all(hwa) and all(dig):
                lines.append(f"- At {label}: HWA-LoRA does not stay above the deployed digital LoRA from any budget "
                             f"up to {t['budgets'][-1]} steps (no crossover in this range).")
            else:
                lines.append(f"- At {label}: crossover not yet known (budgets pending).")
        lines.append("")
    lines += ["## What not to conclude yet", "",
              "- The comparison is paired: for one seed both methods start from the same LoRA and head init and see "
              "the same batches in the same order, so a gap within a seed is the hardware's, not the init's. Across "
              "seeds it is not: where a task is still taking off (a budget near where the digital LoRA first rises "
              "above chance), the init alone can move the metric by more than the hardware does.",
              "- Below the largest budget each entry is one training seed: a gap there smaller than the seed spread "
              "at the largest budget is not a finding.",
              "- The spread over drift trials (programming noise) is inside each seed's value, not shown: the JSON "
              "holds every trial (`cells`).",
              "- One model (all-MiniLM-L6-v2, a sentence-embedding model) and one hardware preset (`pcm_paper`).",
              "- The largest budgets are 3 epochs of the training set (SST-2: about half of one): the HWA-LoRA paper's GLUE scripts "
              "(github.com/chenlicodebank/lora_on_analog_hardware, `lora_training_glue/`) train 15 epochs at "
              "learning rate 2e-4, on MobileBERT, with the same training modifier (ADD_NORMAL 0.067). Whether "
              "HWA-LoRA learns STS-B or MRPC with five times the steps is not tested here.",
              "- Where HWA-LoRA stays near chance, this page does not say why. `noise_levels.md` measures, with no "
              "training, how far the read it trains through (the training weight-noise modifier on every call) is "
              "from the digital model against the deployed read; `training_noise.md` trains it with that noise "
              "scaled and deploys each on the same crossbar.",
              "- The recipe is the one the first cells ran with. What a step costs, and what an equal-statistics "
              "dropout or batch 64 would save, is measured in `training_step.md` (`python/bench/training_step.py`); "
              "neither was adopted, since either changes every seeded result already computed.", ""]
    lines += pending_section(data["pending"])
    return "\n".join(lines)


def plot(data: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    tasks = list(data["tasks"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
    styles = {("hwa_lora", "t0"): ("C0", "-"), ("hwa_lora", "t10y"): ("C0", "--"),
              ("digital_lora", "t0"): ("C1", "-"), ("digital_lora", "t10y"): ("C1", "--")}
    for ax, task in zip(axes[0], tasks):
        t = data["tasks"][task]
        for (method, when), (color, ls) in styles.items():
            xs, ys, es = [], [], []
            for steps, vals in zip(t["budgets"], t["methods"][method][when]):
                if vals:
                    mu, sd = mean_std(vals)
                    xs.append(steps), ys.append(mu), es.append(0.0 if math.isnan(sd) else sd)
            if xs:
                ax.errorbar(xs, ys, yerr=es, color=color, ls=ls, marker="o", ms=3, capsize=2,
                            label=f"{'HWA-LoRA' if method == 'hwa_lora' else 'digital LoRA on crossbar'} "
                                  f"{'0 s' if when == 't0' else '10 y'}")
        ceil = [(x, mean_std(v)[0]) for x, v in zip(t["budgets"], t["methods"]["digital"]["t0"]) if v]
        if ceil:
            ax.plot(*zip(*ceil), color="gray", ls=":", marker=".", label="digital LoRA, no hardware")
        if t["chance"] is not None:
            ax.axhline(t["chance"], color="k", lw=0.8, alpha=0.5, label="chance")
        ax.set_xscale("log")
        ax.set_xlabel("training steps")
        ax.set_ylabel(t["metric"])
        ax.set_title(task)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

