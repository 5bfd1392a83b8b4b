"""The demo's packaged pool, exported from a run of the LoRAFusion GLUE experiment."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import torch

from lorafusion_ext.data.glue import task_spec

from .methods import pool_for
from .protocol import Settings, run_folder

# ---------------------------------------------------------------------- the demo's pool
def export_pool(s: Settings, held_out: str, folder: Path) -> Path:
    """Write the pool for held-out `held_out` (the other members), their heads and their
    provenance into `folder`, as `lorafusion_ext.assets.load_packaged_pool` reads it."""
    from safetensors.torch import save_file

    from lorafusion_ext.assets import HEADS, PROVENANCE

    pool = pool_for(s, held_out)
    done = run_folder(s).load()
    heads, members = {}, {}
    for t in s.tasks:
        if t == held_out:
            continue
        state = torch.load(s.out / "pool" / t / "task_state.pt", weights_only=True)
        heads[f"{task_spec(t).name}.weight"] = state["classifier.weight"].contiguous()
        heads[f"{task_spec(t).name}.bias"] = state["classifier.bias"].contiguous()
        rec = done[f"pool/{t}"]
        members[task_spec(t).name] = {k: rec[k] for k in ("metric", "dev", "t0", "t10y")}
    pool.save(folder)
    save_file(heads, str(folder / HEADS))
    settings = json.loads((s.out / "settings.json").read_text())
    # The run's own command, less what the pool does not depend on (imports from another run).
    pool_command = re.sub(r" --import-from \S+", "", settings.get("command", "python python/experiments/lorafusion_glue.py"))
    provenance = {
        "source": "python/experiments/lorafusion_glue.py (pool members: HWA-LoRA per task, seed 0)",
        "regenerate": f"{pool_command} --only pool/ && python python/experiments/lorafusion_glue.py "
                      f"--glue-dir {shlex.quote(s.glue_dir)} --out {s.out} --export-pool {folder} "
                      f"--export-held-out {held_out}",
        "model": settings["model"], "hardware": settings["hardware"], "budget": settings["budget"],
        "held_out": task_spec(held_out).name, "members": members,
        "lora": {"rank": pool.rank, "alpha": pool.alpha, "targets": "every linear layer but the head"},
    }
    (folder / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n")
    for f in folder.iterdir():
        f.chmod(0o644)  # shipped in the package: readable by every user
    return folder
