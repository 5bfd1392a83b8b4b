"""The on-device measurement's backward settings, its settings and its cells in priority order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness import Cell
from lorafusion_ext import HardwareConfig
from lorafusion_ext.hardware import Periphery
from sweep.protocol import Settings as SweepSettings

TASKS = ("sst2", "stsb")
METHODS = ("hwa_lora", "lorafusion")
#: Each task's training steps by default: the budget sweep's largest budget of the task (the
#: real-budget issue's): STS-B 540 (3 epochs at batch 32), SST-2 1,000 (the sweep's
#: ``--budgets sst2=100,270,520,1000``: its rule's 2,000 trimmed to keep that issue within its
#: compute cap).
STEPS = {"sst2": 1000, "stsb": 540}
ONE_DAY = 86400.0


@dataclass(frozen=True)
class Backward:
    """One backward setting: the backward read's converter bits (None: the ideal straight-through
    backward; else the forward's periphery with both converters at `bits`), and the age (s) of
    the crossbar the training reads (None: the target weights, as HWA training reads them;
    else programmed and drifted to that age before the first step, compensation applied)."""

    bits: int | None
    age_s: float | None = None
    label: str = ""

    def hardware(self, hw: HardwareConfig) -> HardwareConfig:
        """`hw` with this setting's backward read."""
        if self.bits is None:
            return hw.replace(backward=None)
        return hw.replace(backward=Periphery.with_bits(self.bits, hw.forward_periphery))


BACKWARDS: dict[str, Backward] = {
    "ideal": Backward(None, label="ideal (straight-through)"),
    "8bit": Backward(8, label="8-bit, the forward's periphery"),
    "6bit": Backward(6, label="6-bit DAC and ADC"),
    "8bit_1day": Backward(8, ONE_DAY, label="8-bit, on the crossbar 1 day after programming"),
}


@dataclass
class Settings(SweepSettings):
    """The budget sweep's settings with one budget per task (`budgets[task] == (steps,)`), the
    backward settings, the LoRAFusion pool's folder, and where the budget sweep's cells are read
    (`from_sweep`: run folders or report JSON files, first match wins)."""

    backwards: tuple[str, ...] = tuple(BACKWARDS)
    pool: Path = Path()
    from_sweep: tuple[Path, ...] = ()

    def steps(self, task: str) -> int:
        return self.budgets[task][0]


def cell_key(task: str, method: str, backward: str, steps: int, seed: int) -> str:
    return f"{task}/{method}/{backward}/b{steps}/seed{seed}"


def plan(s: Settings) -> list[Cell]:
    """Every cell, seed by seed (a whole first seed, every setting paired, before the next)."""
    cells = [Cell(cell_key(task, method, bw, s.steps(task), seed), "on_device", task, method, seed, variant=bw,
                  params=(("steps", s.steps(task)),))
             for seed in s.recipe.seeds for task in s.tasks for method in METHODS for bw in s.backwards]
    return [c for c in cells if not s.only or c.key.startswith(s.only)]
