"""The noise-levels measurement's settings and cells: which reads of the pretrained encoder are
compared, and how a cell is named."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness import Cell
from lorafusion_ext import HardwareConfig
from trainnoise.protocol import scale_row

YEAR = 365.25 * 86400.0
#: The deployed reads' times after programming (s) and their labels.
TIMES: tuple[float, ...] = (0.0, 3600.0, 86400.0, YEAR, 10 * YEAR)
TIME_LABELS: dict[float, str] = {0.0: "0 s", 3600.0: "1 h", 86400.0: "1 d", YEAR: "1 y", 10 * YEAR: "10 y"}
#: The training modifier's std as multiples of the preset's (the training-noise experiment's rows).
SCALES: tuple[float, ...] = (1.0, 0.5, 0.25, 0.0)
DIGITAL = "digital"
DEPLOYED = "deployed"


@dataclass(frozen=True)
class Settings:
    """One measurement.

    pairs: STS-B dev pairs read (None: all of them).
    layer_sentences: sentences (the first ones) whose hidden states of every layer are compared
        with the digital model's (the per-layer error).
    trials: noise draws per read (training reads: the layers' noise seeds 0..trials-1; deployed:
        programming trials of `lf.drift_sweep`, seed 0).
    """

    model: str
    glue_dir: str
    hardware_name: str
    out: Path
    docs: Path
    pairs: int | None = None
    trials: int = 3
    scales: tuple[float, ...] = SCALES
    times: tuple[float, ...] = TIMES
    max_length: int = 64
    batch_size: int = 64
    layer_sentences: int = 512
    threads: int = 1
    command: str = ""
    hardware: HardwareConfig = field(default=None)  # type: ignore[assignment]

    def training_hardware(self, scale: float) -> HardwareConfig:
        """The preset with its training modifier's std times `scale` (kind "none" at 0): the
        training-noise experiment's row of that scale."""
        return scale_row(scale).training_hardware(self.hardware)


def config(s: Settings) -> dict:
    """What a finished cell must have been computed with to be reused."""
    return {"model": s.model, "hardware": s.hardware_name, "pairs": s.pairs, "trials": s.trials,
            "max_length": s.max_length, "batch_size": s.batch_size, "layer_sentences": s.layer_sentences,
            "times": list(s.times), "batches": "pairs"}


def train_key(scale: float) -> str:
    return f"train/modifier_x{scale:g}"


def plan(s: Settings) -> list[Cell]:
    """The digital reference, one training read per modifier scale, the deployed reads."""
    cells = [Cell(DIGITAL, kind=DIGITAL)]
    cells += [Cell(train_key(x), kind="train", params=(("scale", x),)) for x in s.scales]
    cells.append(Cell(DEPLOYED, kind=DEPLOYED))
    return cells
