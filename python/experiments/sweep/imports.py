"""Cells of another experiment taken from the budget sweep instead of computed again: where its
cells are looked up (`SOURCES`, `--from-sweep`), which match (`sweep_config` less the full
fine-tune's lr, the current noise stream), and the driver's `prepare` that adds them to a run
folder. `training_noise.py` (its `modifier_x1` row and the reference) and `on_device.py` (its
ideal-backward HWA-LoRA) use it; each says which sweep cell is which of its own cells."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from harness import NOISE_STREAM, RunFolder, noise_stream_of, read_json

from .protocol import Settings, cell_key, sweep_config

#: Where the budget sweep's cells are looked up without `--from-sweep`: its default run folder,
#: then its committed report (a fresh clone).
SOURCES = (Path("results/budget_sweep"), Path("docs/results/budget_sweep.json"))


def add_argument(p: argparse.ArgumentParser, what: str) -> None:
    """`--from-sweep`: a budget-sweep run folder or report JSON to import `what` from."""
    p.add_argument("--from-sweep", default=None,
                   help=f"budget-sweep run folder or report JSON to import {what} from "
                        f"(default: {', then '.join(map(str, SOURCES))})")


def sources(a: argparse.Namespace) -> tuple[Path, ...]:
    """The sources `--from-sweep` names (its value alone, or `SOURCES`)."""
    return (Path(a.from_sweep),) if a.from_sweep else SOURCES


@dataclass(frozen=True)
class Pair:
    """The sweep's `method` cell at a task's steps and a seed is this run's cell `key(task,
    steps, seed)`, its record given `fields` too (e.g. the row or the backward setting)."""

    method: str
    key: Callable[[str, int, int], str]
    fields: dict[str, Any] = field(default_factory=dict)


def sweep_records(source: Path) -> dict[str, dict]:
    """The finished cells of a budget-sweep run folder (`<source>/cells`) or report JSON file
    (its "cells"), of the current noise stream; {} when there is none."""
    if source.is_file():
        cells = (read_json(source) or {}).get("cells", {})
        return {k: r for k, r in cells.items() if isinstance(r, dict) and noise_stream_of(r) == NOISE_STREAM}
    if (source / "cells").is_dir():
        return RunFolder(source / "cells").load()
    return {}


def _comparable(cfg: Any) -> Any:
    return {k: v for k, v in cfg.items() if k != "full_finetune_lr"} if isinstance(cfg, dict) else cfg


def from_sweep(s: Settings, where: Sequence[Path], pairs: Sequence[Pair], config: dict) -> dict[str, dict]:
    """This run's cells (`s`: one budget per task, `budgets[task] == (steps,)`) that the budget
    sweep has computed, as records of this run (`config`: this run's config): the sweep's cell of
    each pair, when it was computed with this run's model, hardware and recipe (its config less
    the full fine-tune's lr equals `sweep_config(s)`'s). Each keeps its source (`imported_from`,
    `source_config`, `source_wall_s`); its `wall_s` is 0 (nothing was computed here). The first
    source of `where` that has a cell gives it."""
    want = _comparable(sweep_config(s))
    out: dict[str, dict] = {}
    for source in where:
        records = sweep_records(source)
        for task in s.tasks:
            steps = s.budgets[task][0]
            for seed in s.recipe.seeds:
                for pair in pairs:
                    theirs = cell_key(task, pair.method, steps, seed)
                    mine = pair.key(task, steps, seed)
                    rec = records.get(theirs)
                    if mine in out or rec is None or _comparable(rec.get("config")) != want:
                        continue
                    out[mine] = {**rec, "key": mine, **pair.fields, "steps": steps, "config": config,
                                 "imported_from": f"{source}:{theirs}", "source_config": rec.get("config"),
                                 "source_wall_s": rec.get("wall_s"), "wall_s": 0.0}
    return out


def prepare(found: Callable[[], dict[str, dict]]) -> Callable[[RunFolder, Callable[[str], None]], None]:
    """The driver's `prepare`: add to the run folder the cells `found()` gives that it lacks (a
    cell computed or imported here before is never replaced)."""

    def run(folder: RunFolder, log: Callable[[str], None]) -> None:
        done = folder.load()
        new = {k: r for k, r in found().items() if k not in done}
        for key, rec in new.items():
            folder.add(key, rec)
        if new:
            log(f"{len(new)} cells imported from the budget sweep: {', '.join(sorted(new))}")

    return run
