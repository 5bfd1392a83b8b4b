"""The noise-levels page: its JSON, Markdown and plot."""

from __future__ import annotations

import math
import time
from typing import Any

from harness import format_mean_std, machine, mean_std, pending_section, pyplot
from harness.report import mean_and_error
from harness.cells import Cell

from .protocol import DEPLOYED, DIGITAL, TIME_LABELS, Settings, train_key

NAME = "noise_levels"
FIELDS = ("pearson", "spearman", "embedding_rel_err", "cls_rel_err")


def _per_trial(reads: list[dict[str, Any]]) -> dict[str, Any]:
    """{field: [value per trial]}, and the per-layer errors as [[value per trial] per layer]."""
    out: dict[str, Any] = {f: [float(r[f]) for r in reads] for f in FIELDS}
    out["layer_rel_err"] = [list(x) for x in zip(*(r["layer_rel_err"] for r in reads))]
    return out


def time_label(t: float) -> str:
    return TIME_LABELS.get(t, f"{t:g} s")


def rows(s: Settings, done: dict[str, dict]) -> list[dict[str, Any]]:
    """One row per read, in the page's order: digital, training reads (largest modifier
    first), deployed reads by time. Rows whose cell is not finished are left out."""
    out = []
    if DIGITAL in done:
        out.append({"name": DIGITAL, "label": "digital (no hardware)", "kind": DIGITAL,
                    **_per_trial(done[DIGITAL]["reads"])})
    for scale in s.scales:
        rec = done.get(train_key(scale))
        if rec is not None:
            out.append({"name": train_key(scale), "label": f"training read, modifier x{scale:g}", "kind": "train",
                        "modifier_scale": scale, "modifier_std": rec["modifier_std"], **_per_trial(rec["reads"])})
    rec = done.get(DEPLOYED)
    if rec is not None:
        for t, reads in zip(rec["times"], rec["reads_by_time"]):
            out.append({"name": f"{DEPLOYED}/{time_label(t).replace(' ', '')}", "label": f"deployed, {time_label(t)}",
                        "kind": DEPLOYED, "time_s": t, **_per_trial(reads)})
    return out


def _mean(row: dict[str, Any] | None, field: str) -> float:
    return math.nan if row is None else mean_std(row[field])[0]


def preset_and_deployed(table: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The preset's training read (modifier x1; None while pending) and the deployed reads, by time."""
    train = next((r for r in table if r["name"] == train_key(1.0)), None)
    return train, [r for r in table if r["kind"] == DEPLOYED]


def ratios(table: list[dict[str, Any]]) -> dict[str, float]:
    """How the preset's training read compares with the deployed reads: the ratio of their mean
    embedding errors (training read / deployed read) at 0 s and at the last time."""
    train, deployed = preset_and_deployed(table)
    out = {}
    if train is not None and deployed:
        for tag, row in (("first", deployed[0]), ("last", deployed[-1])):
            out[f"train_x1_over_deployed_{tag}"] = _mean(train, "embedding_rel_err") / _mean(row, "embedding_rel_err")
            out[f"deployed_{tag}_time_s"] = row["time_s"]
    return out


def build(s: Settings, cells: list[Cell], done: dict[str, dict]) -> dict[str, Any]:
    table = rows(s, done)
    digital = done.get(DIGITAL, {})
    pending = [c.key for c in cells if c.key not in done]
    return {"reads": table, "ratios": ratios(table), "command": s.command,
            "wall_s": math.fsum(float(r.get("wall_s", 0.0)) for r in done.values()), "machine": machine(s.threads),
            "model": s.model, "hardware": s.hardware_name, "pairs": s.pairs, "trials": s.trials,
            "sentences": digital.get("sentences"), "layer_sentences": digital.get("layer_sentences", s.layer_sentences),
            "complete": not pending, "pending": pending,
            "cells": {k: done[k] for k in sorted(done)}, "written_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def _layers_cell(row: dict[str, Any]) -> str:
    return " / ".join(f"{mean_std(v)[0]:.3g}" for v in row["layer_rel_err"])


def markdown(data: dict[str, Any], s: Settings) -> str:
    table = data["reads"]
    n_layers = max((len(r["layer_rel_err"]) for r in table), default=0)
    status = ("**Status: complete.**" if data["complete"] else
              f"**Status: partial** ({len(data['pending'])} cells pending; rerun the command to finish).")
    lines = [
        "# How noisy is the model a LoRA trains through, and the one it is deployed on?", "",
        status, "",
        f"The pretrained encoder `{data['model']}`, every linear layer analog (`{data['hardware']}`), no adapter "
        "and no head, reads the STS-B dev sentences "
        f"({'all pairs' if s.pairs is None else f'{s.pairs} pairs'}). The model is a sentence embedder, so the "
        "cosine of two mean-pooled sentence embeddings is its zero-shot STS prediction: how much of that signal a "
        "read keeps, and how far its hidden states move from the digital model's, is the noise an adapter "
        "trained through that read (HWA-LoRA) or deployed on it must live with.", "",
        "- **Training read**: what HWA-LoRA trains through: the layers unprogrammed and in training mode, so "
        "the training weight-noise modifier is drawn on every call, with DAC/ADC quantisation and output noise "
        "(dropout off, so that only the hardware differs). Both sentences of a pair are read in the same call, "
        "under the same draw, as a training step reads its batch. The modifier's std is scaled as in "
        "`docs/results/training_noise.md`.",
        "- **Deployed read**: the layers programmed onto the device (programming noise), drifted to the time "
        "and compensated (global drift compensation), read in eval mode: what every method meets on the chip.",
        "",
        f"Means ± std over {s.trials} noise draws (training reads: the layers' noise seeds; deployed: "
        f"`lf.drift_sweep` programming trials, seed 0). Embedding error: mean over sentences of "
        "‖e − e_digital‖ / ‖e_digital‖ of the mean-pooled embedding; [CLS] error: the same for the last "
        "layer's first token (what a BERT classification head reads); per-layer error: ‖H − H_digital‖ / "
        f"‖H_digital‖ over the real tokens of the first {data['layer_sentences']} of the {data['sentences']} "
        f"sentences, layers 1 to {n_layers}.", "",
        "| read | modifier std | zero-shot Pearson | Spearman | embedding error | [CLS] error | per-layer error |",
        "|---|---:|---|---|---|---|---|",
    ]
    for r in table:
        std = f"{r['modifier_std']:g}" if r["kind"] == "train" else ""
        lines.append(f"| {r['label']} | {std} | {format_mean_std(r['pearson'])} | {format_mean_std(r['spearman'])} | "
                     f"{format_mean_std(r['embedding_rel_err'])} | {format_mean_std(r['cls_rel_err'])} | "
                     f"{_layers_cell(r)} |")
    lines.append("")
    lines += says(data)
    lines += [
        "## What not to conclude", "",
        "- This is the encoder alone, before any training: it measures the noise each read puts on the "
        "pretrained features, not what an adapter learns through it. A LoRA trained through a noisy read may "
        "learn features that survive it; the budget sweep and the training-noise experiment measure that.",
        "- The zero-shot score uses mean pooling, which this model was trained for; the classifiers of the "
        "other pages read the [CLS] token through a fresh pooler and head (the [CLS] column).",
        "- One model and one preset: another device or another modifier changes the levels.",
        "",
    ]
    lines += pending_section(data["pending"])
    lines += [
        "## Reproduce", "",
        "```", data["command"], "```", "",
        f"Cell time {data['wall_s'] / 60:.1f} min on {data['machine']} (the digital reference read, once per "
        f"process, not included); written {data['written_at']}.", "",
    ]
    return "\n".join(lines)


def says(data: dict[str, Any]) -> list[str]:
    """The comparison the numbers make, in words (only what the finished rows support)."""
    by = {r["name"]: r for r in data["reads"]}
    train, deployed = preset_and_deployed(data["reads"])
    if train is None or not deployed or DIGITAL not in by:
        return []
    first, last = deployed[0], deployed[-1]
    rt = data["ratios"]
    return [
        "## What the numbers say", "",
        f"The preset's training read moves the sentence embeddings by {_mean(train, 'embedding_rel_err'):.2f} of "
        f"their norm, {rt['train_x1_over_deployed_first']:.1f}x the deployed read at {time_label(first['time_s'])} "
        f"({_mean(first, 'embedding_rel_err'):.2f}) and {rt['train_x1_over_deployed_last']:.1f}x the deployed "
        f"read at {time_label(last['time_s'])} ({_mean(last, 'embedding_rel_err'):.2f}). The zero-shot Pearson "
        f"is {_mean(by[DIGITAL], 'pearson'):.3f} digital, {_mean(train, 'pearson'):.3f} through the training "
        f"read, {_mean(first, 'pearson'):.3f} deployed at {time_label(first['time_s'])} and "
        f"{_mean(last, 'pearson'):.3f} at {time_label(last['time_s'])}.", "",
        *_placement(train, deployed, [r for r in data["reads"] if r["kind"] == "train"]),
    ]


def _placement(train: dict[str, Any], deployed: list[dict[str, Any]], scaled: list[dict[str, Any]]) -> list[str]:
    """Where the preset's training read falls among the deployed reads, and which scaled
    training read is nearest the deployed read at the first time."""
    worst = min(deployed, key=lambda r: _mean(r, "pearson"))
    best = max(deployed, key=lambda r: _mean(r, "pearson"))
    p_train, p_worst, p_best = _mean(train, "pearson"), _mean(worst, "pearson"), _mean(best, "pearson")
    span = (f"(deployed: {p_worst:.3f} at {time_label(worst['time_s'])} to {p_best:.3f} at "
            f"{time_label(best['time_s'])})")
    if p_train < p_worst:
        where = f"keeps less of the zero-shot signal than the deployed read at any time measured {span}"
    elif p_train > p_best:
        where = f"keeps more of the zero-shot signal than the deployed read at any time measured {span}"
    else:
        where = f"keeps as much of the zero-shot signal as the deployed read somewhere in the times measured {span}"
    first = deployed[0]
    near = min(scaled, key=lambda r: abs(_mean(r, "embedding_rel_err") - _mean(first, "embedding_rel_err")))
    return [
        f"- The preset's training read {where}.",
        f"- Of the training reads, modifier x{near['modifier_scale']:g} (std {near['modifier_std']:g}) is the nearest "
        f"to the deployed read at {time_label(first['time_s'])} in embedding error "
        f"({_mean(near, 'embedding_rel_err'):.2f} against {_mean(first, 'embedding_rel_err'):.2f}).", "",
    ]


def plot(data: dict[str, Any], path) -> None:
    plt = pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    for r in data["reads"]:
        if r["kind"] == DIGITAL or not r["layer_rel_err"]:
            continue
        ys = [mean_std(v)[0] for v in r["layer_rel_err"]]
        style = "-" if r["kind"] == "train" else "--"
        ax.plot(range(1, len(ys) + 1), ys, style, marker="o", label=r["label"])
    ax.set_xlabel("layer")
    ax.set_ylabel("relative error of the hidden states")
    ax.set_title("distance from the digital model, per layer")
    if ax.lines:
        ax.legend(fontsize=7)
    labels = [r["label"] for r in data["reads"]]
    means, errs = zip(*(mean_and_error(r["pearson"]) for r in data["reads"])) if data["reads"] else ((), ())
    bx.barh(range(len(labels)), means, xerr=errs, color=["C7" if r["kind"] == DIGITAL else "C0" if r["kind"] == "train"
                                                          else "C1" for r in data["reads"]])
    bx.set_yticks(range(len(labels)), labels, fontsize=7)
    bx.invert_yaxis()
    bx.set_xlabel("zero-shot STS-B Pearson (cosine of mean-pooled embeddings)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
