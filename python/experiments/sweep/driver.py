"""The main loop shared by the GLUE training sweeps of this folder (`budget_sweep.py`,
`on_device.py`, `training_noise.py`): the run folder, the committed cells, the chance levels,
the extra workers, the claimed queue and the report after every cell."""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import torch

from harness import Cell, Claims, RunFolder, read_json, run_queue, start_workers, write_page

from .methods import chance_levels
from .protocol import Settings

#: Seconds between two plots while cells finish (a plot takes about a second; the page and the
#: JSON are rewritten after every cell, the plot at this pace and at the end).
PLOT_EVERY_S = 300.0


def write(report: ModuleType, s: Settings, cells: list[Cell], done: dict[str, dict], chance: dict[str, dict],
          with_plot: bool = True) -> dict[str, Any]:
    """Write `report`'s page, JSON and (if `with_plot`) plot in `s.docs`: `report` is a sweep's
    report module, with `NAME`, `build(s, cells, done, chance)` -> JSON, `markdown(JSON)` and
    `plot(JSON, path)`. Returns the JSON."""
    data = report.build(s, cells, done, chance)
    write_page(s.docs, report.NAME, report.markdown(data), data, json_newline=True,
               plot=(lambda p: report.plot(data, p)) if with_plot else None)
    return data


def run(report: ModuleType, script: Path, s: Settings, a: argparse.Namespace, argv: list[str], config: dict,
        plan: Callable[[Any], list[Cell]], compute: Callable[[Any, Cell], dict],
        prepare: Callable[[RunFolder, Callable[[str], None]], None] | None = None) -> dict:
    """Compute the unfinished cells of `plan(s)` (`compute(s, cell)` -> record), sharing the queue
    with `a.workers - 1` more processes of `script` (started with `argv`), and rewrite the report
    (`write`) after each; `--report-only` (`a.report_only`) only rewrites it. A run folder with
    no finished cell first takes those of the committed report (`<docs>/<NAME>.json`) that match
    `config`; then `prepare(folder, log)`, if given, may add cells computed elsewhere (e.g.
    another experiment's cell of the same run). Returns the report's JSON."""
    name = report.NAME
    torch.set_num_threads(s.threads)
    s.out.mkdir(parents=True, exist_ok=True)
    folder = RunFolder(s.out / "cells", config=config, config_field="config")
    log = lambda msg: print(f"[{name} {os.getpid()}] {msg}", flush=True)  # noqa: E731
    committed = read_json(s.docs / f"{name}.json")
    taken = folder.adopt(committed.get("cells", {})) if committed else []
    if taken:
        log(f"{len(taken)} finished cells taken from the committed report")
    if prepare is not None:
        prepare(folder, log)
    all_cells = plan(dataclasses.replace(s, only=()))
    chance = chance_levels(s, config)
    if a.report_only:
        return write(report, s, all_cells, folder.load(), chance)
    helpers = start_workers(script, argv, a.workers)
    plotted = time.monotonic()

    def finished(cell: Cell, rec: dict) -> None:
        nonlocal plotted
        shown = " ".join(f"{k} {rec[k]:.4f}" for k in ("t0", "t10y", "digital") if k in rec)
        log(f"{cell.key}: {shown} ({rec['metric']}, {rec['wall_s']:.0f} s)")
        replot = time.monotonic() - plotted >= PLOT_EVERY_S
        write(report, s, all_cells, folder.load(), chance, replot)
        plotted = time.monotonic() if replot else plotted

    run_queue(plan(s), folder, Claims(s.out / "claims"), lambda cell, done: compute(s, cell), after_cell=finished,
              log=log)
    for h in helpers:
        h.wait()
    return write(report, s, all_cells, folder.load(), chance)
