"""The training-noise experiment's rows (what the LoRA sees while training), its settings, its
cells in priority order and the config its cells are computed with."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from harness import Cell
from lorafusion_ext import HardwareConfig
from lorafusion_ext.hardware import Modifier
from sweep.protocol import Settings as SweepSettings
from sweep.protocol import sweep_config

#: Each task's training steps by default: budgets of the budget sweep at which its seed-0 cells
#: exist (STS-B: HWA-LoRA 0.313 against 0.839 for the deployed digital LoRA; SST-2: HWA-LoRA a
#: point or two behind), so that the `modifier_x1` row and the reference are imported.
STEPS = {"stsb": 310, "sst2": 270}
#: The training weight-noise modifier's std, as multiples of the deployment preset's.
SCALES = (0.0, 0.25, 0.5, 1.0)
#: The control row: the preset's modifier (x1), no output noise in training.
NO_OUT_NOISE = "no_out_noise"
#: The budget sweep's digital LoRA deployed on the same crossbar, shown as the reference row
#: (imported when present, never computed here).
REFERENCE = "digital_lora"


@dataclass(frozen=True)
class Row:
    """What the LoRA and head see while training: the deployment preset's weight-noise modifier
    with its std times `modifier_scale` (0: the modifier off, kind "none"), and its output noise
    on or off (`out_noise`). DAC, ADC, managements and everything else stay the preset's."""

    name: str
    modifier_scale: float
    out_noise: bool = True
    label: str = ""

    def training_hardware(self, hw: HardwareConfig) -> HardwareConfig:
        """`hw` as this row trains through it."""
        if self.modifier_scale == 0:
            modifier = Modifier("none")
        else:
            modifier = dataclasses.replace(hw.modifier, std=hw.modifier.std * self.modifier_scale)
        return hw.replace(modifier=modifier, out_noise=hw.out_noise if self.out_noise else 0.0)


def parse_scales(p: argparse.ArgumentParser, text: str) -> tuple[float, ...]:
    """`--scales`: comma-separated modifier scales, ascending and distinct; a bad value exits
    through `p.error`, naming the option."""
    try:
        scales = tuple(sorted({float(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        p.error(f"--scales {text!r}; expected comma-separated numbers")
    if not scales or min(scales) < 0:
        p.error(f"--scales {text!r}; expected at least one scale, none negative")
    return scales


def scale_row(scale: float) -> Row:
    """The row of the modifier's std times `scale`, output noise on."""
    label = ("weight-noise modifier off" if scale == 0 else
             "the preset as is" if scale == 1 else f"weight-noise modifier std x{scale:g}")
    return Row(f"modifier_x{scale:g}", float(scale), True, label)


def rows(scales: tuple[float, ...], out_noise_row: bool = True) -> dict[str, Row]:
    """The rows, in table order: one per modifier scale, then (if `out_noise_row`) the control."""
    out = {r.name: r for r in map(scale_row, scales)}
    if out_noise_row:
        out[NO_OUT_NOISE] = Row(NO_OUT_NOISE, 1.0, False, "the preset's modifier, output noise off in training")
    return out


@dataclass
class Settings(SweepSettings):
    """The budget sweep's settings with one budget per task (`budgets[task] == (steps,)`), the
    rows, and where the budget sweep's cells are read (`from_sweep`: run folders or report JSON
    files, first match wins)."""

    rows: dict[str, Row] = field(default_factory=dict)
    from_sweep: tuple[Path, ...] = ()

    def steps(self, task: str) -> int:
        return self.budgets[task][0]


def cell_key(task: str, row: str, steps: int, seed: int) -> str:
    return f"{task}/{row}/b{steps}/seed{seed}"


def config(s: Settings) -> dict:
    """What a finished cell must have been computed with to be reused (row, steps and seed are in
    its key; a row's training hardware is the deployment preset's, changed as its name says):
    the budget sweep's config less the full fine-tune's lr, which no cell here uses."""
    out = sweep_config(s)
    out.pop("full_finetune_lr")
    return out


def plan(s: Settings) -> list[Cell]:
    """Every cell, seed by seed (every row of a seed, paired, before the next seed)."""
    cells = [Cell(cell_key(task, row, s.steps(task), seed), "training_noise", task, "hwa_lora", seed, variant=row,
                  params=(("steps", s.steps(task)),))
             for seed in s.recipe.seeds for task in s.tasks for row in s.rows]
    return [c for c in cells if not s.only or c.key.startswith(s.only)]
