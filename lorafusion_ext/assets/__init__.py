"""Data shipped inside the package: the GLUE LoRA pool of the demo.

`glue_pool/` holds HWA-LoRAs (rank 8, alpha 32, every linear layer of all-MiniLM-L6-v2,
trained through the `pcm_paper` hardware) of CoLA, MRPC, STS-B and RTE, written by
`python/experiments/lorafusion_glue.py --export-pool` from its pool members: `pool.safetensors`
+ `pool_config.json` (a `LoRAPool`), `heads.safetensors` (each member's classification head,
"<task>.weight" [labels, 384] and "<task>.bias" [labels]) and `provenance.json` (the command,
the budget, each member's dev score, the held-out task the pool excludes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from lorafusion_ext.nn.pool import LoRAPool

GLUE_POOL = Path(__file__).resolve().parent / "glue_pool"
HEADS = "heads.safetensors"
PROVENANCE = "provenance.json"


@dataclass
class PackagedPool:
    """A pool with its members' heads and provenance."""

    pool: LoRAPool
    heads: dict[str, tuple[Tensor, Tensor]]  # task -> (weight [labels, d], bias [labels])
    provenance: dict

    @property
    def model(self) -> str:
        """The Hugging Face model id the members were trained on."""
        return str(self.provenance["model"])

    @property
    def tasks(self) -> list[str]:
        """The members' GLUE task names, in pool order."""
        return list(self.pool.adapter_names)


def load_packaged_pool(folder: str | Path = GLUE_POOL) -> PackagedPool:
    """Read a pool folder written by the experiment's `--export-pool`.

    Raises:
        FileNotFoundError: the folder lacks one of its files (names it).
        ValueError: the heads do not match the pool's members.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    for name in (HEADS, PROVENANCE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"load_packaged_pool: {folder / name} is missing; expected a folder written by "
                                    "python/experiments/lorafusion_glue.py --export-pool")
    pool = LoRAPool.load(folder)
    tensors = load_file(str(folder / HEADS))
    heads = {}
    for task in pool.adapter_names:
        if f"{task}.weight" not in tensors or f"{task}.bias" not in tensors:
            raise ValueError(f"load_packaged_pool: {folder / HEADS} has no head for pool member {task!r}")
        heads[task] = (tensors[f"{task}.weight"], tensors[f"{task}.bias"])
    return PackagedPool(pool, heads, json.loads((folder / PROVENANCE).read_text()))
