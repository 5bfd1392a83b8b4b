"""Crossbar mapping and reprogramming cost model.

Maps each analog layer onto physical tiles of a configurable size and counts, per adaptation
method, the crossbar cells that must be programmed and the digital parameters stored per
task:

- ``base``: deploying the pre-trained model (every analog weight, once);
- ``full_finetune``: a new task by full fine-tuning reprograms every analog weight;
- ``lora_on_crossbar``: a LoRA per task programmed onto crossbar tiles (A and B);
- ``hwa_lora``: HWA-LoRA, the LoRA stays digital: zero cells per task, the LoRA is stored;
- ``lorafusion``: the pool of K LoRAs is programmed once; a new task programs zero cells
  and stores only fusion coefficients and magnitude vectors.

Write energy = cells × energy per cell write × pulses per write. The default energy per cell
write, 10 pJ, is the order of a single PCM RESET pulse reported in G. W. Burr et al., "Recent
Progress in Phase-Change Memory Technology", IEEE JETCAS 6(2), 2016 (RESET energies from a few
pJ to tens of pJ per cell); iterative program-and-verify multiplies it by the pulses used, so
`pulses_per_write` is exposed. Each weight takes `cells_per_weight` cells (2: a differential
pair, as AIHWKIT's single-pair conductance converter).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Iterable

from torch import nn

from lorafusion_ext.nn.analog_linear import AnalogLinear


@dataclass(frozen=True)
class CostModel:
    """Crossbar geometry and write cost.

    Attributes:
        tile_rows: inputs (word lines) per physical tile.
        tile_cols: outputs (bit lines) per physical tile.
        cells_per_weight: conductance cells per weight (2: a G+/G- pair).
        energy_per_write_pj: energy of one cell write pulse, in pJ.
        pulses_per_write: write pulses per programmed cell (program-and-verify iterations).
    """

    tile_rows: int = 512
    tile_cols: int = 512
    cells_per_weight: int = 2
    energy_per_write_pj: float = 10.0
    pulses_per_write: float = 1.0

    def __post_init__(self) -> None:
        for name in ("tile_rows", "tile_cols", "cells_per_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"CostModel.{name} = {v!r}; expected a positive integer")
        for name in ("energy_per_write_pj", "pulses_per_write"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"CostModel.{name} = {v!r}; expected a finite number > 0")

    def tiles(self, in_features: int, out_features: int) -> int:
        """Physical tiles an [out, in] matrix occupies."""
        return math.ceil(in_features / self.tile_rows) * math.ceil(out_features / self.tile_cols)

    def cells(self, in_features: int, out_features: int) -> int:
        return in_features * out_features * self.cells_per_weight

    def energy_uj(self, cells: int) -> float:
        """Write energy of `cells` cells, in µJ."""
        return cells * self.energy_per_write_pj * self.pulses_per_write * 1e-6


@dataclass
class MethodCost:
    """Cost of one method: cells programmed once (deployment), cells per new task, tiles,
    digital parameters stored per task, and the write energies (µJ)."""

    method: str
    cells_once: int
    cells_per_task: int
    tiles: int
    digital_params_per_task: int
    energy_once_uj: float
    energy_per_task_uj: float


@dataclass
class CostReport:
    """Per-method costs of one model; `layers` lists the analog layer shapes (name, in, out)."""

    model: str
    cost_model: CostModel
    layers: list[tuple[str, int, int]]
    methods: list[MethodCost] = field(default_factory=list)

    def to_markdown(self) -> str:
        cm = self.cost_model
        lines = [
            f"Crossbar cost of {self.model}: {len(self.layers)} analog layers, tiles {cm.tile_rows}x{cm.tile_cols}, "
            f"{cm.cells_per_weight} cells/weight, {cm.energy_per_write_pj:g} pJ x {cm.pulses_per_write:g} pulses per write",
            "",
            "| method | cells programmed once | cells per new task | tiles | digital params per task "
            "| write energy once (µJ) | write energy per task (µJ) |",
            "|---|---|---|---|---|---|---|",
        ]
        for m in self.methods:
            lines.append(
                f"| {m.method} | {m.cells_once:,} | {m.cells_per_task:,} | {m.tiles:,} | {m.digital_params_per_task:,} "
                f"| {m.energy_once_uj:,.1f} | {m.energy_per_task_uj:,.1f} |"
            )
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(
            {"model": self.model, "cost_model": asdict(self.cost_model), "layers": self.layers,
             "methods": [asdict(m) for m in self.methods]},
            indent=2,
        )


def linear_layers(model: nn.Module) -> list[tuple[str, int, int]]:
    """(name, in_features, out_features) of every nn.Linear (AnalogLinear included) in `model`."""
    return [(name, m.in_features, m.out_features) for name, m in model.named_modules() if isinstance(m, nn.Linear)]


def pool_matrices(name: str, in_features: int, out_features: int, pool_size: int, rank: int) -> list[tuple[str, int, int]]:
    """The two crossbar matrices (name, in, out) that hold a layer's pool of `pool_size` LoRAs of
    rank `rank` on the crossbar: A_cat [K·r, d_in] and B_cat [d_out, K·r] (the layout of
    `lorafusion_ext.nn.AnalogPoolLayer`)."""
    kr = pool_size * rank
    return [(f"{name}.pool.shrink", in_features, kr), (f"{name}.pool.expand", kr, out_features)]


def crossbar_cost(
    layers: Iterable[tuple[str, int, int]],
    *,
    rank: int = 8,
    pool_size: int = 20,
    adapted: Iterable[str] | None = None,
    fusion_blocks: int | None = None,
    magnitude: bool = True,
    cost_model: CostModel | None = None,
    model_name: str = "model",
    pool_layers: Iterable[tuple[str, int, int]] | None = None,
    fusion_params: int | None = None,
) -> CostReport:
    """Costs per method for analog layers `layers` (name, in, out).

    Prefer `crossbar_cost_of(model)`, which takes every shape from the analog layers a model
    really holds; this function plans a model that is not deployed yet (e.g. `lorafusion cost`).

    Args:
        rank: LoRA rank r.
        pool_size: LoRAs K in the LoRAFusion pool.
        adapted: names of the layers that get a LoRA / pool (default: all of `layers`).
        fusion_blocks: coefficient groups (transformer blocks) for LoRAFusion: K coefficients
            each (default: one group per adapted layer).
        magnitude: LoRAFusion trains a magnitude vector (out_features) per adapted layer.
        pool_layers: the crossbar matrices (name, in, out) that hold the pool; default: the
            `pool_matrices` of every adapted layer.
        fusion_params: LoRAFusion's digital parameters per task; default: K per group plus
            the magnitudes.
    """
    cm = cost_model or CostModel()
    layers = list(layers)
    if rank < 1 or pool_size < 1:
        raise ValueError(f"rank = {rank}, pool_size = {pool_size}; expected positive integers")
    names = {n for n, _, _ in layers}
    adapted_set = set(adapted) if adapted is not None else names
    unknown = adapted_set - names
    if unknown:
        raise ValueError(f"adapted layers {sorted(unknown)} are not among the analog layers")
    ad = [(n, i, o) for n, i, o in layers if n in adapted_set]
    base_cells = sum(cm.cells(i, o) for _, i, o in layers)
    base_tiles = sum(cm.tiles(i, o) for _, i, o in layers)
    base_params = sum(i * o for _, i, o in layers)
    lora_params = sum(rank * (i + o) for _, i, o in ad)
    lora_cells = sum(cm.cells(i, rank) + cm.cells(rank, o) for _, i, o in ad)
    lora_tiles = sum(cm.tiles(i, rank) + cm.tiles(rank, o) for _, i, o in ad)
    groups = fusion_blocks if fusion_blocks is not None else len(ad)
    if fusion_params is None:
        fusion_params = pool_size * groups + (sum(o for _, _, o in ad) if magnitude else 0)
    if pool_layers is None:
        pool_layers = [m for n, i, o in ad for m in pool_matrices(n, i, o, pool_size, rank)]
    pool_layers = list(pool_layers)
    pool_cells = sum(cm.cells(i, o) for _, i, o in pool_layers)
    pool_tiles = sum(cm.tiles(i, o) for _, i, o in pool_layers)
    report = CostReport(model_name, cm, layers)

    def add(method: str, once: int, per_task: int, tiles: int, params: int) -> None:
        report.methods.append(MethodCost(method, once, per_task, tiles, params, cm.energy_uj(once), cm.energy_uj(per_task)))

    add("base model (deploy)", base_cells, 0, base_tiles, 0)
    add("full fine-tuning", base_cells, base_cells, base_tiles, base_params)
    add("LoRA on crossbar", base_cells, lora_cells, base_tiles + lora_tiles, 0)
    add("HWA-LoRA (digital LoRA)", base_cells, 0, base_tiles, lora_params)
    add(f"LoRAFusion (pool of {pool_size} on crossbar)", base_cells + pool_cells, 0, base_tiles + pool_tiles,
        fusion_params)
    return report


def _uniform_tile_geometry(layers: list[AnalogLinear]) -> tuple[int, int] | None:
    sizes = {(lay.hardware.tiles.max_in, lay.hardware.tiles.max_out) for lay in layers}
    if len(sizes) == 1:
        rows, cols = next(iter(sizes))
        if rows and cols:
            return int(rows), int(cols)
    return None


def crossbar_cost_of(
    model: nn.Module,
    *,
    rank: int = 8,
    cost_model: CostModel | None = None,
    model_name: str = "model",
) -> CostReport:
    """The cost table of a deployed model, counted from the analog layers it holds.

    Base cells and tiles come from its `AnalogLinear` layers outside any pool; LoRAFusion's
    from the same plus its `AnalogPoolLayer` tiles (A_cat, B_cat), so the cells equal what
    `lf.program(model)` programs (`programmed_cells`). LoRAFusion's digital parameters per task
    are the model's fusion coefficients and magnitudes. The adapted layers (for the LoRA rows)
    are those wrapped by a LoRA or fusion layer, else every analog layer; their rank is the
    pool's or the LoRA's, else `rank`. Without a pool on the crossbar, the LoRAFusion row
    plans one with `pool_matrices`.

    Tiles: by default the cost model takes the tile size the model's hardware simulates (when
    all analog layers share one); a layer simulated as a single unbounded tile is counted on
    the default 512×512 geometry, as no physical array is unbounded.

    Raises:
        ValueError: the model holds no AnalogLinear layer.
    """
    from lorafusion_ext.nn.analog_pool import AnalogPoolLayer
    from lorafusion_ext.nn.fusion import LoRAFusionLinear
    from lorafusion_ext.nn.lora import LoRALinear

    modules = dict(model.named_modules())
    pools = {n: m for n, m in modules.items() if isinstance(m, AnalogPoolLayer)}
    in_pool = tuple(n + "." for n in pools)
    analog = {n: m for n, m in modules.items() if isinstance(m, AnalogLinear)}
    if not analog:
        raise ValueError("crossbar_cost_of: the model holds no AnalogLinear layer; expected a converted model "
                         "(lf.convert_to_analog)")
    base = {n: m for n, m in analog.items() if not n.startswith(in_pool)}
    pool_mats = {n: m for n, m in analog.items() if n.startswith(in_pool)}
    if cost_model is None:
        geometry = _uniform_tile_geometry(list(analog.values()))
        cost_model = CostModel(*geometry) if geometry else CostModel()
    # A wrapped base layer is `<path>.base`: report it under the path the user knows.
    layers = [(n.removesuffix(".base"), m.in_features, m.out_features) for n, m in base.items()]
    wrappers = {n: m for n, m in modules.items() if isinstance(m, (LoRAFusionLinear, LoRALinear))}
    adapted = [n for n in wrappers] or [n for n, _, _ in layers]
    fusion = [m for m in wrappers.values() if isinstance(m, LoRAFusionLinear)]
    loras = [m for m in wrappers.values() if isinstance(m, LoRALinear)]
    pool_size = fusion[0].pool.num_adapters if fusion else 20
    if fusion:
        rank = fusion[0].pool.rank
    elif loras:
        rank = loras[0].rank
    fusion_params = None
    if fusion:
        seen: dict[int, int] = {}
        for m in fusion:
            seen.setdefault(id(m.coeffs), m.coeffs.numel())
            if m.magnitude is not None:
                seen.setdefault(id(m.magnitude), m.magnitude.numel())
        fusion_params = sum(seen.values())
    pool_layers = [(n, m.in_features, m.out_features) for n, m in pool_mats.items()] if pools else None
    return crossbar_cost(layers, rank=rank, pool_size=pool_size, adapted=adapted, cost_model=cost_model,
                         model_name=model_name, pool_layers=pool_layers, fusion_params=fusion_params)


def programmed_cells(model: nn.Module, cells_per_weight: int = 2) -> int:
    """Crossbar cells the model's programmed analog layers hold (`cells_per_weight` per weight)."""
    return sum(m.programmed_weight.numel() * cells_per_weight for m in model.modules()
               if isinstance(m, AnalogLinear) and m.programmed_weight is not None)
