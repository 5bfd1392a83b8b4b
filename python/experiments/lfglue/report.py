"""The report of the LoRAFusion GLUE experiment: its JSON, its Markdown page, its plot, and what
the pool can express (`pool_span`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from harness import Cell, format_mean_std, machine, mean_std, pyplot, read_json, write_page
from harness.report import mean_and_error
from lorafusion_ext import LoRAPool
from lorafusion_ext.data.glue import task_spec
from lorafusion_ext.training.methods import FusionConfig

from .protocol import LEARNABLE_MARGIN, METHODS, Settings, fixed_pool_steps, pool_hwa_tasks, steps_of

#: The run-level figures of a committed report whose cells a fresh run folder took (`<out>/`).
ADOPTED = "adopted_report.json"

# ---------------------------------------------------------------------- report
def _fmt(xs: list[float]) -> str:
    if not xs:
        return "pending"
    return format_mean_std(xs) + ("" if len(xs) > 1 else " (1 seed)")


def collect(s: Settings, cells: list[Cell], done: dict[str, dict]) -> dict:
    """The JSON report: held_out, ablations (incl. diagnosis), pool, pending cells, and which
    cells were taken from the budget sweep (`from_sweep`) or left out (`skipped`: a task the
    model does not learn, `--skip-unlearnable`)."""
    skipped = {k: r["skipped"] for k, r in done.items() if "skipped" in r}
    done = {k: r for k, r in done.items() if "skipped" not in r}
    held: dict[str, dict] = {}
    for t in s.tasks:
        metric = task_spec(t).metrics[0]
        for m in METHODS:
            recs = [done.get(f"held_out/{t}/{m}/seed{seed}") for seed in s.budget.seeds]
            got = [r for r in recs if r is not None]
            entry = {"metric": metric, "t0": [r["t0"] for r in got], "t10y": [r["t10y"] for r in got],
                     "seeds": [seed for seed, r in zip(s.budget.seeds, recs) if r is not None],
                     "trainable": got[0]["trainable"] if got else None,
                     "cells_per_task": got[0]["cells_per_task"] if got else None,
                     "cells_once": got[0]["cells_once"] if got else None}
            held.setdefault(t, {})[m] = entry
    references = {t: reference_levels(t, done) for t in s.tasks}
    for t, ref in references.items():
        held[t].update({k: ref[k] for k in ("chance", "full_finetune_t0", "learnable")})
    ablations: dict[str, dict] = {}
    for c in cells:
        if c.kind in ("ablation", "diagnosis") and c.key in done:
            r = done[c.key]
            ablations.setdefault(c.kind, {}).setdefault(c.task, {})[c.variant] = {
                "metric": r["metric"], "t0": [r["t0"]], "t10y": [r["t10y"]], "trainable": r["trainable"],
                "params": dict(c.params), "seeds": [0]}
    pool = {c.task: {k: done[c.key][k] for k in ("metric", "dev", "t0", "t10y")}
            for c in cells if c.kind == "pool" and c.key in done}
    pending = [c.key for c in cells if c.key not in done and c.key not in skipped]
    imported = {k: r["imported_from"] for k, r in done.items() if "imported_from" in r}
    swept = {k: r["from_sweep"] for k, r in done.items() if "from_sweep" in r}
    wall = sum(r.get("wall_s", 0.0) for r in done.values())
    ends = [r["finished_at"] for r in done.values() if "finished_at" in r]
    span = (max(ends) - min(ends)) if len(ends) > 1 else None
    # First computed cell's start to the last one's end: the run's wall clock when it ran in one go.
    computed = [r for r in done.values()
                if "finished_at" in r and "imported_from" not in r and "reused_from" not in r and "from_sweep" not in r]
    elapsed = (max(r["finished_at"] for r in computed) - min(r["finished_at"] - r.get("wall_s", 0.0) for r in computed)
               if computed else None)
    workers = len({r.get("worker") for r in done.values() if "worker" in r})
    where = machine()
    adopted = read_json(s.out / ADOPTED)
    if adopted is not None:  # cells taken from a committed report: its run's figures
        wall += adopted.get("wall_s") or 0.0
        workers += adopted.get("workers") or 0
        if not ends:  # nothing computed since: the timings and machine are the report's
            span, elapsed, where = adopted.get("span_s"), adopted.get("elapsed_s"), adopted.get("machine", where)
    return {"held_out": held, "references": references, "ablations": ablations, "pool": pool,
            "budget": dataclasses.asdict(s.budget),
            "fusion_config": dataclasses.asdict(s.fusion), "hardware": s.hardware_name, "model": s.model,
            "tasks": list(s.tasks), "complete": not pending, "pending": pending, "imported": imported,
            "from_sweep": swept, "skipped": skipped,
            "command": s.command,
            "wall_s": wall, "span_s": span, "elapsed_s": elapsed,
            "workers": workers, "threads": s.threads,
            "machine": where}


def reference_levels(task: str, done: dict[str, dict]) -> dict[str, Any]:
    """The task's chance level, its full fine-tune's dev score and whether it is learnable
    (the fine-tune above chance by more than `LEARNABLE_MARGIN`; None while either is pending)."""
    ch, ft = done.get(f"chance/{task}"), done.get(f"reference/{task}/full_finetune")
    chance = ch["chance"] if ch else None
    full = ft["digital"] if ft else None
    learnable = None if chance is None or full is None else bool(full > chance + LEARNABLE_MARGIN)
    return {"metric": task_spec(task).metrics[0], "chance": chance, "full_finetune_t0": full, "learnable": learnable,
            "full_finetune_steps": ft.get("steps") if ft else None, "dev_examples": ch.get("dev_examples") if ch else None}


def learned_above_chance(entry: dict, chance: float) -> bool | None:
    """Whether a method's t = 0 mean is above `chance` by more than its seed standard deviation
    (None with fewer than 2 seeds: the spread is unknown)."""
    if len(entry["t0"]) < 2:
        return None
    mean, sd = mean_std(entry["t0"])
    return bool(mean - chance > sd)


def _plot(path: Path, res: dict) -> None:
    plt = pyplot()
    tasks = list(res["held_out"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    width = 0.8 / len(METHODS)
    for ax, when in zip(axes, ("t0", "t10y")):
        for j, m in enumerate(METHODS):
            xs, ys, es = [], [], []
            for i, t in enumerate(tasks):
                vals = res["held_out"][t][m][when]
                if vals:
                    mean, err = mean_and_error(vals)
                    xs.append(i + (j - (len(METHODS) - 1) / 2) * width)
                    ys.append(mean)
                    es.append(err)
            ax.bar(xs, ys, width, yerr=es, capsize=2, label=m)
        ax.set_xticks(range(len(tasks)))
        ax.set_xticklabels([f"{t}\n({res['held_out'][t][METHODS[0]]['metric']})" for t in tasks])
        ax.set_title({"t0": "t = 0", "t10y": "t = 10 years"}[when])
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("dev metric (mean ± std over seeds)")
    axes[1].legend(fontsize=8)
    fig.suptitle("Held-out GLUE task: LoRAFusion vs baselines on the analog model")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(s: Settings, cells: list[Cell], done: dict[str, dict]) -> dict:
    res = collect(s, cells, done)
    adopted = read_json(s.out / ADOPTED) or {}
    if (s.out / "pool" / "all" / "pool.safetensors").is_file():
        res["pool_span"] = pool_span(LoRAPool.load(s.out / "pool" / "all"))
    elif adopted.get("pool_span"):  # the pool's weights are not committed; the report's analysis is
        res["pool_span"] = adopted["pool_span"]
    b = s.budget
    reused = pool_hwa_tasks(s)
    status = ("**Complete**: every cell below finished." if res["complete"] else
              f"**Incomplete**: {len(res['pending'])} of {len(cells)} cells are pending (listed at the end); "
              "tables show only finished cells, and a method with fewer seeds says so. Rerun the command to "
              "complete them (finished cells are skipped).")
    lines = [
        "# LoRAFusion on GLUE: leave-one-out reproduction on the analog model",
        "",
        *([_page_note(s), ""] if _page_note(s) else []),
        status,
        "",
        f"Model `{s.model}`, every linear layer analog (`{s.hardware_name}`), heads digital. Tasks: "
        f"{', '.join(s.tasks)}; each held out in turn, the pool being the HWA-LoRAs of the others "
        f"(K = {len(s.tasks) - 1}).",
        "",
        _pool_budget_text(s)
        + (f"steps per task ({', '.join(f'{k} {v}' for k, v in b.task_steps.items())}) of batch {b.batch_size}, "
           if b.task_steps else f"{b.steps} steps of batch {b.batch_size}, ")
        + f"sequence length {b.max_length}" + (f", batches grouped by length (groups of {b.group_by_length} batches)"
                                             if b.group_by_length else "")
        + f", {'at most ' + str(b.train_examples) + ' training examples (a fixed subsample, seed ' + str(b.data_seed) + ')' if b.train_examples else 'every training example'}, "
        f"head learning rate {b.head_lr:g}; LoRA (rank 8, alpha 32, all linear layers) "
        f"learning rate {b.lora_lr:g}; LoRAFusion `FusionConfig` {_fusion_text(s.fusion)}. Dev metric on "
        f"{'at most ' + str(b.eval_examples) + ' dev examples (fixed subsample)' if b.eval_examples else 'the whole dev split'}. "
        f"Seeds {list(b.seeds)}; each seed's value is the mean "
        f"over {b.trials} programming + drift trials (reprogrammed each trial) at t = 0 and t = 10 years.",
        "",
        "Methods: `lorafusion` (pool fused by coefficients + DoRA magnitudes, pool "
        + ("digital: `--pool-digital`" if s.pool_digital else "on the crossbar") + "), `hwa_lora` (LoRA trained "
        "through the hardware" + ("; its seed-0 run is the pool member of that task, reused" if reused == s.tasks
                                  else f"; its seed-0 run on {', '.join(reused)} is the pool member of that task, "
                                       "reused" if reused else "") + "), `digital_lora` (the same "
        "LoRA recipe trained on the digital model, then deployed with the pretrained weights on the crossbar), "
        "`head_only` (only the head), `magnitude_only` (DoRA magnitudes + head, coefficients frozen at 0).",
        "",
        "## Pool members (HWA-LoRA per task, seed 0)",
        "",
        "| task | metric | dev (analog, not programmed) | t = 0 | t = 10 y |",
        "|---|---|---|---|---|",
    ]
    for t in s.tasks:
        p = res["pool"].get(t)
        lines.append(f"| {t} | {task_spec(t).metrics[0]} | " + (
            f"{p['dev'][p['metric']]:.3f} | {p['t0']:.3f} | {p['t10y']:.3f} |" if p else "pending | pending | pending |"))
    lines += ["", "## Held-out task: mean ± std over seeds", "",
              "| task | method | t = 0 | t = 10 y | trainable params | cells programmed once | cells reprogrammed per task |",
              "|---|---|---|---|---|---|---|"]
    for t in s.tasks:
        for m in METHODS:
            e = res["held_out"][t][m]
            tr = "" if e["trainable"] is None else f"{e['trainable']:,}"
            cp = "" if e["cells_per_task"] is None else f"{e['cells_per_task']:,}"
            co = "" if e["cells_once"] is None else f"{e['cells_once']:,}"
            if not e["t0"] and any(k.startswith(f"held_out/{t}/{m}/") for k in res["skipped"]):
                lines.append(f"| {t} ({e['metric']}) | {m} | not computed (not learnable) | | | | |")
                continue
            lines.append(f"| {t} ({e['metric']}) | {m} | {_fmt(e['t0'])} | {_fmt(e['t10y'])} | {tr} | {co} | {cp} |")
    lines += ["", "## What this model can learn", "",
              f"Each task's constant predictor (chance) on the dev examples used, and the digital model fully "
              f"fine-tuned with the pool members' budget (body lr {b.full_finetune_lr:g}, head lr {b.head_lr:g}, seed "
              f"{b.seeds[0]}). A task is learnable when the fine-tune beats chance by more than {LEARNABLE_MARGIN} "
              "(in the metric's units); the methods are compared only on learnable tasks. The last two columns: "
              "whether `digital_lora` and `hwa_lora` are above chance at t = 0 by more than their seed standard "
              "deviation.", "",
              "| task | metric | chance | full fine-tune | learnable | digital_lora above chance | hwa_lora above chance |",
              "|---|---|---|---|---|---|---|"]
    show = lambda v: "pending" if v is None else (("yes" if v else "no") if isinstance(v, bool) else f"{v:.3f}")  # noqa: E731
    for t in s.tasks:
        ref = res["references"][t]
        above = [None if ref["chance"] is None else learned_above_chance(res["held_out"][t][m], ref["chance"])
                 for m in ("digital_lora", "hwa_lora")]
        lines.append(f"| {t} | {ref['metric']} | {show(ref['chance'])} | {show(ref['full_finetune_t0'])} "
                     f"| {show(ref['learnable'])} | {show(above[0])} | {show(above[1])} |")
    unlearnable = [t for t in s.tasks if res["references"][t]["learnable"] is False]
    if unlearnable:
        lines += ["", f"Not learnable by this model at this budget, left out of the comparison: {', '.join(unlearnable)} "
                  "(the full fine-tune stays at chance)" + (
                      f"; their held-out cells were not computed (`--skip-unlearnable`: {len(res['skipped'])} cells)."
                      if res["skipped"] else ".")]
    gap = _gap(res, s)
    if gap:
        lines += ["", gap]
    over = _fusion_over_magnitudes(res, s)
    if over:
        lines += ["", over]
    for kind, title in (("ablation", "Ablations (seed 0; the `lorafusion` seed-0 cell is the reference)"),
                        ("diagnosis", "Diagnosis (seed 0)")):
        block = res["ablations"].get(kind)
        if not block:
            continue
        lines += ["", f"## {title}", "", "| held-out task | variant | t = 0 | t = 10 y | trainable |", "|---|---|---|---|---|"]
        for t, variants in block.items():
            ref = done.get(f"held_out/{t}/lorafusion/seed0")
            if ref:
                lines.append(f"| {t} | reference (`lorafusion` seed 0) | {ref['t0']:.3f} | {ref['t10y']:.3f} | {ref['trainable']:,} |")
            for v, e in variants.items():
                lines.append(f"| {t} | {v} | {e['t0'][0]:.3f} | {e['t10y'][0]:.3f} | {e['trainable']:,} |")
    if not s.ablation_tasks and not res["ablations"]:
        lines += ["", "## Ablations", "",
                  "Not run at this budget (`--ablation-tasks none`: each is a LoRAFusion run of the full budget). "
                  "The ablations at the short budget (100 steps on 1,600 examples) are in "
                  "[lorafusion_short_budget.md](lorafusion_short_budget.md)."]
    span = res.get("pool_span")
    if span:
        lines += ["", "## What the pool can express (weights only, no training)", "",
                  "Fraction of each task's own HWA-LoRA update ΔW = s·B·A that the other pool members can "
                  "reproduce by least squares (`pool_span`): per-layer coefficients (`sum` mode) and one global "
                  "vector; and the largest |cosine similarity| of its flattened update with another member's.", "",
                  "| held-out task | explained, per-layer c | explained, global c | max abs cosine to another member |",
                  "|---|---|---|---|"]
        for t in span["members"]:
            cos = max(abs(v) for k, v in span["cosine"][t].items() if k != t)
            lines.append(f"| {t} | {span['explained_layer'][t]:.3f} | {span['explained_global'][t]:.3f} | {cos:.3f} |")
    lines += ["", f"![held-out results]({s.page}.png)", "",
              "## Reproduce", "", "```", s.command, "```", "",
              f"Wall time of the finished cells: {res['wall_s']:.0f} s (`wall_s`: the sum of each cell's own wall "
              f"time; cells ran in {res['workers']} worker process(es) of {res['threads']} torch thread(s) each, "
              f"sharing the CPUs with other jobs" + (f"; first to last finished cell: {res['span_s']:.0f} s" if res['span_s'] else "")
              + (f"; first cell's start to last cell's end: {res['elapsed_s']:.0f} s ({res['elapsed_s'] / 3600:.2f} h)"
                 if res.get('elapsed_s') else "")
              + f"). Machine: {res['machine']}."]
    if res["imported"]:
        source_cmd = adopted.get("import_command", "")
        if s.import_from is not None and (s.import_from / "settings.json").is_file():
            source_cmd = json.loads((s.import_from / "settings.json").read_text()).get("command", "")
        lines += ["", f"{len(res['imported'])} cells were imported (`--import-from`) from a run with the same per-task "
                  "budget, model and hardware (same training, seed and data, so the same result); the JSON's "
                  "`imported` maps each to its source" + (f", written by `{source_cmd}`" if source_cmd else "") + "."]
    if res["from_sweep"]:
        lines += ["", "## Cells taken from the budget sweep", "",
                  f"{len(res['from_sweep'])} cells were not computed here but taken from the budget sweep's run "
                  "folder (`--from-sweep`, docs/results/budget_sweep.md), whose cells of the identical recipe are "
                  "these cells (same model, hardware, batch size, sequence length, learning rates, length grouping, "
                  "training and dev examples, data seed, LoRA, steps, seed, and drift trials at 0 s and 10 years with "
                  "the same seeds; a sweep of another recipe is refused). Their values are the sweep's; trainable "
                  "parameters and crossbar cells are counted here; a pool member is the sweep's seed-0 HWA-LoRA "
                  "adapter (LoRA and head) at its pool-member steps"
                  + (", and also this page's seed-0 `hwa_lora` of its task" if reused == s.tasks else
                     f", and also this page's seed-0 `hwa_lora` of its task for {', '.join(reused)}" if reused else "")
                  + ". The JSON's `from_sweep` maps each to its sweep cell.", "",
                  "| cell | budget-sweep cell |", "|---|---|"]
        lines += [f"| `{k}` | `{v.rsplit(':', 1)[-1]}` |" for k, v in sorted(res["from_sweep"].items())]
    if res["skipped"]:
        lines += ["", "## Cells left out (task not learnable)", "",
                  "Held-out cells of a task whose full fine-tune stays at chance (`--skip-unlearnable`): not "
                  "computed, since a tie at chance says nothing about the methods.", "",
                  ", ".join(f"`{k}`" for k in sorted(res["skipped"]))]
    if res["pending"]:
        lines += ["", "## Pending cells", "", ", ".join(f"`{k}`" for k in res["pending"])]
    write_page(s.docs, s.page, "\n".join(lines) + "\n", res, json_newline=True,
               plot=lambda path: _plot(path, res))
    return res


#: The pages of this script that are not its main page (`--page`), and the sentence that opens each.
PAGE_NOTES = {
    "lorafusion_short_budget": (
        "*The short budget: 100 steps of batch 16 on at most 1,600 training examples per held-out run, pool members "
        "300 steps on 4,800, 200 dev examples. The rerun at a real budget (pool members and every method trained "
        "on every training example for the budget sweep's largest budget of the task, whole dev sets) is {main}; the ablations were run only here. "
        "This page was `lorafusion.md` until then (its run wrote that name; `--page lorafusion_short_budget` "
        "writes this one).*"),
}


def _pool_budget_text(s: Settings) -> str:
    """The page's sentence on the pool members' budget, up to the held-out budget that follows:
    one budget for everything when every pool member is its task's seed-0 `hwa_lora`; else the
    pool members' own, and per task which member is (or is not) its task's seed-0 `hwa_lora`."""
    b = s.budget
    reused = pool_hwa_tasks(s)
    if reused == s.tasks:
        return "Budget, identical for every method and every pool member: "
    examples = b.pool_train_examples or b.train_examples or "all"
    if b.pool_epochs is not None:
        text = (f"Pool members: {b.pool_epochs:g} epochs of their training examples, at most {b.pool_max_steps} "
                f"steps (on at most {examples} examples). ")
    else:
        steps = (f"steps per task ({', '.join(f'{t} {n}' for t, n in b.pool_task_steps.items())})"
                 if b.pool_task_steps else f"{b.pool_steps or b.steps} steps")
        text = f"Pool members: {steps} on at most {examples} examples. "
        if reused or b.pool_task_steps:  # some members are their task's seed-0 hwa_lora, some not: say which
            differ = ", ".join(f"{t} ({fixed_pool_steps(b, t)} steps, held out at {steps_of(b, t)})"
                               for t in s.tasks if t not in reused)
            text += ((f"The pool member of {', '.join(reused)} is also the seed-0 `hwa_lora` of its task (the same "
                      f"run); that of {differ} is not, its seed-0 `hwa_lora` being a run of its own. ") if reused else
                     f"No pool member is its task's seed-0 `hwa_lora`, each being a run of its own: {differ}. ")
    return text + "Budget, identical for every method on the held-out task: "


def _page_note(s: Settings) -> str:
    """The opening sentence of a page other than the main one (`PAGE_NOTES`); '' for the others.
    The main page is linked once it exists (a link to a missing page breaks the strict docs build)."""
    note = PAGE_NOTES.get(s.page, "")
    main = "[lorafusion.md](lorafusion.md)" if (s.docs / "lorafusion.md").is_file() else "`lorafusion.md`"
    return note.format(main=main)


def _fusion_text(f: FusionConfig) -> str:
    return ", ".join(f"{k} {v}" for k, v in dataclasses.asdict(f).items() if k != "head_lr")


def _gap(res: dict, s: Settings) -> str:
    """Mean gap (points) of lorafusion to hwa_lora at t = 0 over the tasks where both exist."""
    diffs = []
    for t in s.tasks:
        if res["held_out"][t].get("learnable") is False:
            continue
        a, b = res["held_out"][t]["lorafusion"]["t0"], res["held_out"][t]["hwa_lora"]["t0"]
        if a and b:
            diffs.append(100 * (mean_std(b)[0] - mean_std(a)[0]))
    if not diffs:
        return ""
    return (f"Mean gap `hwa_lora` − `lorafusion` at t = 0 over {len(diffs)} task(s) with both (learnable or not yet "
            "known): "
            f"{sum(diffs) / len(diffs):.1f} points (metric × 100).")


def _fusion_over_magnitudes(res: dict, s: Settings) -> str:
    """Whether fusing the pool adds anything over `magnitude_only` (the same magnitudes and head,
    the pool's coefficients frozen at 0): per learnable task with at least 2 seeds of both, the
    difference of the t = 0 means against the larger of the two seed standard deviations."""
    parts, above = [], 0
    for t in s.tasks:
        e = res["held_out"][t]
        if e.get("learnable") is False or len(e["lorafusion"]["t0"]) < 2 or len(e["magnitude_only"]["t0"]) < 2:
            continue
        (fm, fs), (mm, ms) = mean_std(e["lorafusion"]["t0"]), mean_std(e["magnitude_only"]["t0"])
        spread = max(fs, ms)
        above += (fm - mm) > spread
        parts.append(f"{t} {100 * (fm - mm):+.1f} (seed std {100 * spread:.1f})")
    if not parts:
        return ""
    return (f"`lorafusion` − `magnitude_only` at t = 0 (points, metric × 100; the pool's contribution): "
            f"{'; '.join(parts)}. Above by more than the seed spread on {above} of {len(parts)} task(s).")


# ---------------------------------------------------------------------- pool span (diagnosis)
@torch.no_grad()
def pool_span(pool: LoRAPool) -> dict:
    """How much of each member's weight update ΔW_T = s B_T A_T the other members can express.

    For held-out T, per layer: the least-squares fit min_c ‖ΔW_T − Σ_k c_k ΔW_k‖_F over the
    other members k (`sum` mode with one coefficient per layer: a superset of what `block`
    and `global` coefficients can reach); `explained_layer` is 1 − Σ residual² / Σ ‖ΔW_T‖²
    over the layers; `explained_global` the same with one coefficient vector for the whole
    model. `cosine` is the cosine similarity of the flattened updates of every member pair.
    A small explained fraction means the pool cannot reproduce the held-out task's own LoRA
    update: the fusion must find another solution or rely on magnitudes and head."""
    names = list(pool.adapter_names)
    K = len(names)
    flat = {n: (pool.layer(n).B.double() @ pool.layer(n).A.double()).reshape(K, -1) for n in pool.layer_names}
    gram_layers = {n: v @ v.t() for n, v in flat.items()}  # [K, K] per layer
    gram_total = sum(gram_layers.values())
    out: dict[str, Any] = {"members": names, "explained_layer": {}, "explained_global": {}}
    for t in range(K):
        others = [k for k in range(K) if k != t]
        target_sq = float(gram_total[t, t])
        res_layer = 0.0
        for g in gram_layers.values():
            G = g[others][:, others]
            b = g[others, t]
            c = torch.linalg.lstsq(G, b.unsqueeze(1)).solution.squeeze(1)
            res_layer += float(g[t, t] - 2 * c @ b + c @ G @ c)
        G = gram_total[others][:, others]
        b = gram_total[others, t]
        c = torch.linalg.lstsq(G, b.unsqueeze(1)).solution.squeeze(1)
        res_global = float(gram_total[t, t] - 2 * c @ b + c @ G @ c)
        out["explained_layer"][names[t]] = 1 - res_layer / target_sq
        out["explained_global"][names[t]] = 1 - res_global / target_sq
    norms = gram_total.diagonal().sqrt()
    out["cosine"] = {names[i]: {names[j]: float(gram_total[i, j] / (norms[i] * norms[j])) for j in range(K)}
                     for i in range(K)}
    return out
