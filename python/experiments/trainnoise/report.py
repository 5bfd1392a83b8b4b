"""The training-noise experiment's JSON (the issue's schema), its page and its plot."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Sequence

from harness import format_mean_std, machine, mean_std, pending_section, pyplot
from harness.cells import Cell

from .protocol import NO_OUT_NOISE, REFERENCE, Settings, cell_key, scale_row

NAME = "training_noise"
TIMES = {"t0": "0 s", "t10y": "10 y", "unprogrammed": "unprogrammed"}
BASELINE = scale_row(1.0).name

Values = list  # [value or None per seed of the recipe]


def _given(vals: Sequence[float | None]) -> list[float]:
    return [v for v in vals if v is not None]


def _per_seed(done: dict[str, dict], s: Settings, task: str, row: str, field: str) -> Values:
    out = []
    for seed in s.recipe.seeds:
        rec = done.get(cell_key(task, row, s.steps(task), seed))
        out.append(None if rec is None or rec.get(field) is None else float(rec[field]))
    return out


def paired_gain(row: Values, baseline: Values) -> Values:
    """Row minus the preset as is (`modifier_x1`), seed by seed (None where either is missing):
    what training with less noise gains on the deployed chip."""
    return [None if a is None or b is None else a - b for a, b in zip(row, baseline)]


def build(s: Settings, cells: list[Cell], done: dict[str, dict], chance: dict[str, dict]) -> dict[str, Any]:
    tasks: dict[str, Any] = {}
    for task in s.tasks:
        rows = {row: {f: _per_seed(done, s, task, row, f) for f in TIMES} for row in s.rows}
        reference = {f: _per_seed(done, s, task, REFERENCE, f) for f in ("t0", "t10y", "digital")}
        if any(v is not None for vals in reference.values() for v in vals):
            rows[REFERENCE] = reference
        gains = ({row: {f: paired_gain(v[f], rows[BASELINE][f]) for f in ("t0", "t10y")}
                  for row, v in rows.items() if row not in (BASELINE, REFERENCE)} if BASELINE in rows else {})
        tasks[task] = {"metric": chance[task]["metric"] if task in chance else "", "steps": s.steps(task),
                       "chance": chance.get(task, {}).get("value"), "rows": rows, "gain_over_x1": gains}
    pending = [c.key for c in cells if c.key not in done]
    walls = [float(r.get("wall_s", 0.0)) for r in done.values()]
    imported = {k: r["imported_from"] for k, r in sorted(done.items()) if "imported_from" in r}
    return {"tasks": tasks, "command": s.command, "wall_s": math.fsum(walls), "machine": machine(s.threads),
            "model": s.model, "hardware": s.hardware_name, "seeds": list(s.recipe.seeds),
            "rows": {name: {"label": r.label, "modifier_scale": r.modifier_scale, "train_out_noise": r.out_noise,
                            "modifier_std": r.training_hardware(s.hardware).modifier.std}
                     for name, r in s.rows.items()},
            "imported": imported, "complete": not pending, "pending": pending, "recipe": recipe_text(s),
            "cells": {k: done[k] for k in sorted(done)}, "written_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def recipe_text(s: Settings) -> str:
    r, hw = s.recipe, s.hardware
    steps = ", ".join(f"{t} {s.steps(t)}" for t in s.tasks)
    return (f"Model {s.model}; deployment hardware `{s.hardware_name}` on every linear layer (training weight-noise "
            f"modifier {hw.modifier.kind} std {hw.modifier.std:g}, output noise {hw.out_noise:g}), heads digital. "
            f"Every run is the budget sweep's HWA-LoRA: batch {r.batch_size}, sequence length {r.max_length}, batches "
            f"grouped by length (groups of {r.group_by_length} batches, then shuffled), Adam with the learning rate "
            f"decaying linearly to 0; steps: {steps}; LoRA rank 8, alpha 32, dropout 0.1 on every linear layer, LoRA "
            f"lr {r.lora_lr}, head lr {r.head_lr}. Training examples: {r.train_examples or 'all'}; dev examples: "
            f"{r.eval_examples or 'all'}. Seeds {list(r.seeds)}: a seed fixes the model's noise seeds, the LoRA and "
            "head init, the data order and the evaluation's chips, so rows compare seed by seed. Each row trains "
            f"through `{s.hardware_name}` with only the training modifier and/or the output noise changed, then the "
            f"same model gets `{s.hardware_name}` back and is programmed anew in each of {r.trials} trials and read "
            "at 0 s and after 10 years of drift (global drift compensation); a seed's value is the trial mean. "
            "`unprogrammed`: the trained model read once through the preset's converters and output noise, without "
            "programming (what the training reached before programming noise and drift).")


def _cell(vals: Values, n: int, digits: int = 3) -> str:
    got = _given(vals)
    if not got:
        return "pending" if n else "-"
    return format_mean_std(got, digits) + ("" if len(got) == n else f" ({len(got)} of {n} seeds)")


def _row_label(data: dict[str, Any], row: str) -> str:
    if row == REFERENCE:
        return "digital LoRA deployed (budget sweep, reference)"
    return f"`{row}`: {data['rows'][row]['label']}"


def findings(task: str, t: dict[str, Any], n: int) -> list[str]:
    """What the rows show against the preset as is, or why it is not known yet."""
    lines = []
    for row, g in t["gain_over_x1"].items():
        for when in ("t0", "t10y"):
            got = _given(g[when])
            if len(got) < n:
                lines.append(f"- `{row}` vs `{BASELINE}`, {TIMES[when]}: pending ({len(got)} of {n} seed pairs).")
                continue
            mu, sd = mean_std(got)
            sd = 0.0 if math.isnan(sd) else sd
            beyond = abs(mu) > sd and all((v > 0) == (mu > 0) for v in got)
            lines.append(f"- `{row}` vs `{BASELINE}`, {TIMES[when]}: {mu:+.3f} ± {sd:.3f} (paired by seed): "
                         + ("the same sign in every seed, beyond the spread." if beyond
                            else "no difference beyond the seed spread."))
    return lines


def markdown(data: dict[str, Any]) -> str:
    status = "complete" if data["complete"] else f"incomplete, {len(data['pending'])} cells pending"
    n = len(data["seeds"])
    lines = ["# Training noise: what the weight noise in HWA-LoRA training does to the deployed model", "",
             f"**Status: {status}.**", "", f"Command: `{data['command']}`  ",
             f"Cell time (sum of the finished cells' wall times; a cell imported from the budget sweep counts 0 s): "
             f"{data['wall_s']:.0f} s. Machine: {data['machine']}. Written {data['written_at']}.", "",
             "Why: in the budget sweep HWA-LoRA stayed near the mean predictor on STS-B where the digital LoRA "
             "deployed on the same crossbar learned, and an ablation pointed at the training weight-noise modifier. "
             "Here each row changes only the noise the LoRA trains through; every row is deployed and evaluated on "
             "the same, unchanged hardware.", "", data["recipe"], "",
             "Rows (what the LoRA saw while training; the deployment is the same for every row):", ""]
    lines += [f"- `{name}`: {r['label']} (modifier std {r['modifier_std']:g}, output noise in training "
              f"{'on' if r['train_out_noise'] else 'off'})" for name, r in data["rows"].items()]
    lines += [f"- `{REFERENCE}`: the budget sweep's digital LoRA (same recipe and seed, trained without hardware) "
              "deployed on the same crossbar, when the sweep has that cell; its last column is its digital score.", "",
              f"`{BASELINE}` is the budget sweep's `hwa_lora` cell; it is imported from the sweep when the sweep has it "
              "with this recipe" + (f" ({len(data['imported'])} cells imported: JSON `imported`)." if data["imported"]
                                    else " (none imported in this run)."), "",
              "Values: the task's main metric, mean ± standard deviation over seeds. Gains: the row minus "
              f"`{BASELINE}`, seed by seed (paired).", ""]
    for task, t in data["tasks"].items():
        lines += [f"## {task} ({t['metric']}, {t['steps']} steps)", "",
                  "| training | 0 s | 10 y | unprogrammed | gain over x1, 0 s | gain over x1, 10 y |",
                  "|---|---:|---:|---:|---:|---:|"]
        for row, v in t["rows"].items():
            g = t["gain_over_x1"].get(row)
            last = (_cell(v["digital"], n) + " (digital)") if row == REFERENCE else _cell(v["unprogrammed"], n)
            lines.append(f"| {_row_label(data, row)} | {_cell(v['t0'], n)} | {_cell(v['t10y'], n)} | {last} | "
                         + (f"{_cell(g['t0'], n)} | {_cell(g['t10y'], n)} |" if g else "| |"))
        if t["chance"] is not None:
            lines += ["", f"Chance (constant predictor on the same dev examples): {t['chance']:.3f}."]
        lines += ["", "What the rows show:", ""] + findings(task, t, n) + [""]
    lines += ["## What this does not show yet", "",
              "- One budget per task: whether the preset's training noise costs less with more steps (or less "
              "learning-rate decay) is the budget sweep's question, not answered here.",
              f"- One model ({data['model']}), one deployment preset (`{data['hardware']}`), one modifier kind "
              "(additive Gaussian noise scaled by each tile's max |W|); the `no_out_noise` control is at the preset's "
              "modifier only.",
              "- Whether a smaller modifier keeps the robustness it is meant to buy: compare the 10 y column and the "
              "0 s to 10 y drop across rows; with 3 seeds a difference smaller than the spread is not a finding.",
              "- The spread over programming trials is inside each seed's value, not shown: the JSON holds every "
              "trial (`cells`).", ""]
    lines += pending_section(data["pending"])
    return "\n".join(lines)


def plot(data: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    tasks = list(data["tasks"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.8 * len(tasks), 3.6), squeeze=False)
    styles = {"t0": ("C0", "-", "0 s"), "t10y": ("C0", "--", "10 y"), "unprogrammed": ("gray", ":", "unprogrammed")}
    for ax, task in zip(axes[0], tasks):
        t = data["tasks"][task]
        scaled = sorted((r["modifier_scale"], name) for name, r in data["rows"].items() if name != NO_OUT_NOISE)
        for when, (color, ls, label) in styles.items():
            pts = [(x, mean_std(_given(t["rows"][name][when]))) for x, name in scaled if _given(t["rows"][name][when])]
            if pts:
                ax.errorbar([x for x, _ in pts], [mu for _, (mu, _) in pts],
                            yerr=[0.0 if math.isnan(sd) else sd for _, (_, sd) in pts], color=color, ls=ls, marker="o",
                            ms=4, capsize=3, label=f"HWA-LoRA, {label}")
        if NO_OUT_NOISE in t["rows"]:
            x = data["rows"][NO_OUT_NOISE]["modifier_scale"]
            for when, marker in (("t0", "s"), ("t10y", "D")):
                got = _given(t["rows"][NO_OUT_NOISE][when])
                if got:
                    mu, sd = mean_std(got)
                    ax.errorbar([x + 0.03], [mu], yerr=[0.0 if math.isnan(sd) else sd], color="C3", marker=marker,
                                ms=5, capsize=3, ls="none", label=f"no output noise in training, {TIMES[when]}")
        ref = t["rows"].get(REFERENCE)
        if ref:
            for when, ls in (("t0", "-"), ("t10y", "--")):
                got = _given(ref[when])
                if got:
                    ax.axhline(mean_std(got)[0], color="C1", ls=ls, lw=1,
                               label=f"digital LoRA deployed, {TIMES[when]} ({len(got)} seed(s))")
        if t["chance"] is not None:
            ax.axhline(t["chance"], color="k", lw=0.8, alpha=0.5, label="chance")
        ax.set_xlabel("training weight-noise modifier std / preset's")
        ax.set_ylabel(t["metric"])
        ax.set_title(f"{task}, {t['steps']} steps")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
