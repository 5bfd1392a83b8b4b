"""peft interop (safetensors + JSON). The pool's own file format (`save_pool` / `load_pool`)
is `lorafusion_ext.nn.pool`.

- `import_peft_adapters`: peft LoRA adapter folders (`adapter_config.json` +
  `adapter_model.safetensors`) -> a `LoRAPool`, checking ranks and targets.
- `export_peft_adapter`: a model's trained LoRA -> a folder that `peft.PeftModel.from_pretrained`
  loads.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from lorafusion_ext.nn.convert import single_lora
from lorafusion_ext.nn.pool import LoRAPool

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."


# ---------------------------------------------------------------------- peft import
def _read_peft_folder(folder: Path) -> tuple[dict, dict[str, tuple[Tensor, Tensor]]]:
    cfg_path, w_path = folder / PEFT_CONFIG, folder / PEFT_WEIGHTS
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise FileNotFoundError(f"import_peft_adapters: {p} is missing; expected a peft LoRA adapter folder")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"import_peft_adapters: {cfg_path} has peft_type {cfg.get('peft_type')!r}; expected 'LORA'")
    for key, ok in (("use_dora", False), ("fan_in_fan_out", False)):
        if bool(cfg.get(key, False)) != ok:
            raise ValueError(f"import_peft_adapters: {cfg_path} sets {key}={cfg.get(key)}; expected {ok} (not supported)")
    if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        raise ValueError(f"import_peft_adapters: {cfg_path} has rank_pattern/alpha_pattern; expected one rank and alpha for all layers")
    tensors = load_file(str(w_path))
    layers: dict[str, dict[str, Tensor]] = {}
    for key, t in tensors.items():
        for part in ("lora_A", "lora_B"):
            marker = f".{part}."
            if marker in key:
                path = key.split(marker)[0]
                path = path[len(_PEFT_PREFIX):] if path.startswith(_PEFT_PREFIX) else path
                layers.setdefault(path, {})[part] = t
    if not layers:
        raise ValueError(f"import_peft_adapters: {w_path} holds no lora_A/lora_B tensors")
    out = {}
    for path, d in layers.items():
        if set(d) != {"lora_A", "lora_B"}:
            raise ValueError(f"import_peft_adapters: {w_path} has only {sorted(d)} for layer {path!r}; expected lora_A and lora_B")
        A, B = d["lora_A"], d["lora_B"]
        if A.dim() != 2 or B.dim() != 2 or A.shape[0] != B.shape[1]:
            raise ValueError(f"import_peft_adapters: layer {path!r} has lora_A {tuple(A.shape)}, lora_B {tuple(B.shape)}; expected [r, d_in] and [d_out, r] (a linear LoRA)")
        out[path] = (A, B)
    return cfg, out


def import_peft_adapters(
    folders: Sequence[str | Path],
    names: Sequence[str] | None = None,
    *,
    rank: int | None = None,
    targets: Sequence[str] | None = None,
    dtype: torch.dtype = torch.float32,
) -> LoRAPool:
    """Stack K peft LoRA adapters into a pool (adapter k = folders[k]).

    Every adapter must have the same rank r (and `rank` if given) and adapt the same layers
    (and exactly `targets`, module paths, if given). Adapters whose scale differs from the
    first one's (alpha / r, or alpha / √r with rslora) get the ratio folded into B, which is
    exact, so the pool has one alpha.

    Raises:
        ValueError: naming the adapter folder and the mismatching rank or layers.
    """
    if not folders:
        raise ValueError("import_peft_adapters: folders is empty; expected at least one adapter folder")
    paths = [Path(f) for f in folders]
    adapters, scales, alpha0 = [], [], None
    r0, layers0 = None, None
    for k, folder in enumerate(paths):
        cfg, layers = _read_peft_folder(folder)
        ranks = {A.shape[0] for A, _ in layers.values()}
        r = int(cfg.get("r", next(iter(ranks))))
        if ranks != {r}:
            raise ValueError(f"import_peft_adapters: {folder} has tensors of ranks {sorted(ranks)} but r={r} in its config")
        want = rank if rank is not None else r0
        if want is not None and r != want:
            raise ValueError(f"import_peft_adapters: {folder} has rank {r}; expected rank {want} (all pool adapters share one rank)")
        if layers0 is None:
            layers0 = set(layers)
            if targets is not None and set(targets) != layers0:
                raise ValueError(
                    f"import_peft_adapters: {folder} adapts {sorted(layers0)[:5]}...; expected exactly the targets "
                    f"(missing {sorted(set(targets) - layers0)[:5]}, extra {sorted(layers0 - set(targets))[:5]})"
                )
        elif set(layers) != layers0:
            raise ValueError(
                f"import_peft_adapters: {folder} adapts other layers than {paths[0]} (missing "
                f"{sorted(layers0 - set(layers))[:5]}, extra {sorted(set(layers) - layers0)[:5]}); expected the same targets"
            )
        alpha = float(cfg.get("lora_alpha", r))
        scale = alpha / math.sqrt(r) if cfg.get("use_rslora", False) else alpha / r
        if alpha0 is None:
            alpha0 = scale * r  # the pool's alpha, in the plain alpha / r convention
        r0 = r
        adapters.append(layers)
        scales.append(scale)
    folded = []
    for layers, scale in zip(adapters, scales):
        ratio = scale / (alpha0 / r0)
        folded.append({p: (A.to(dtype), (B.to(torch.float64) * ratio).to(dtype) if ratio != 1.0 else B.to(dtype))
                       for p, (A, B) in layers.items()})
    adapter_names = list(names) if names is not None else [p.name for p in paths]
    return LoRAPool.from_adapters(folded, alpha0, adapter_names)


# ---------------------------------------------------------------------- peft export
def export_peft_adapter(
    model: nn.Module,
    folder: str | Path,
    *,
    base_model_name_or_path: str | None = None,
    task_type: str | None = None,
) -> Path:
    """Write the model's LoRA (its `LoRALinear` layers) as a peft LoRA adapter folder.

    target_modules lists the full module paths, so peft adapts exactly these layers. Task
    heads are not exported (peft's modules_to_save holds them; save the head separately).
    """
    # peft's LoraConfig has one r and one lora_alpha.
    layers, rank, alpha = single_lora(model, "export_peft_adapter")
    dropouts = {float(getattr(m.dropout, "p", 0.0)) for m in layers.values()}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for path, m in layers.items():
        tensors[f"{_PEFT_PREFIX}{path}.lora_A.weight"] = m.lora_A.detach().cpu().contiguous()
        tensors[f"{_PEFT_PREFIX}{path}.lora_B.weight"] = m.lora_B.detach().cpu().contiguous()
    save_file(tensors, str(folder / PEFT_WEIGHTS), metadata={"format": "pt"})
    config = {
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": base_model_name_or_path,
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": max(dropouts),
        "target_modules": sorted(layers),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
    }
    (folder / PEFT_CONFIG).write_text(json.dumps(config, indent=2))
    return folder
