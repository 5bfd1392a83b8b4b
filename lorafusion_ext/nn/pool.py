"""`LoRAPool`: K LoRA adapters for each of a set of layers, stacked for `pool_fusion`, and its
file format.

`save_pool` / `load_pool` (also `LoRAPool.save` / `LoRAPool.load`): `pool.safetensors` (tensors
"<layer path>.A" [K, r, d_in] and "<layer path>.B" [K, d_out, r]) + `pool_config.json` (alpha,
rank, adapter names, layers).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn


class PoolLayer(nn.Module):
    """The pool of one layer: `A` [K, r, d_in] and `B` [K, d_out, r] (parameters, so the pool
    can be trained; frozen when fused)."""

    def __init__(self, A: Tensor, B: Tensor) -> None:
        super().__init__()
        if A.dim() != 3 or B.dim() != 3:
            raise ValueError(f"PoolLayer: A {tuple(A.shape)}, B {tuple(B.shape)}; expected [K, r, d_in] and [K, d_out, r]")
        if A.shape[0] != B.shape[0] or A.shape[1] != B.shape[2]:
            raise ValueError(
                f"PoolLayer: A {tuple(A.shape)} and B {tuple(B.shape)} disagree; expected A [K, r, d_in] and "
                "B [K, d_out, r] with the same K and r"
            )
        if A.dtype != B.dtype or A.device != B.device:
            raise ValueError(f"PoolLayer: A ({A.dtype}, {A.device}) and B ({B.dtype}, {B.device}); expected the same dtype and device")
        self.A = nn.Parameter(A.detach().clone().contiguous())
        self.B = nn.Parameter(B.detach().clone().contiguous())

    @property
    def num_adapters(self) -> int:
        """K, the number of adapters."""
        return self.A.shape[0]

    @property
    def rank(self) -> int:
        """r, the rank of every adapter."""
        return self.A.shape[1]

    @property
    def in_features(self) -> int:
        """d_in of the pooled layer."""
        return self.A.shape[2]

    @property
    def out_features(self) -> int:
        """d_out of the pooled layer."""
        return self.B.shape[1]


def _key(name: str) -> str:
    # ModuleDict keys cannot hold dots; module paths do.
    return name.replace(".", "::")


class LoRAPool(nn.Module):
    """K LoRA adapters (same rank r and alpha) for each adapted layer of a model.

    Layers are keyed by their module path in the model (e.g.
    "encoder.block.0.layer.0.SelfAttention.q"); adapter k of every layer belongs to the k-th
    source task, named `adapter_names[k]`.

    Args:
        layers: module path -> (A [K, r, d_in], B [K, d_out, r]).
        alpha: the pool's alpha; each layer's scale is s = alpha / r.
        adapter_names: K names (default "adapter_0", ...).
    """

    def __init__(
        self,
        layers: Mapping[str, tuple[Tensor, Tensor]],
        alpha: float,
        adapter_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if not layers:
            raise ValueError("LoRAPool: layers is empty; expected at least one layer")
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not math.isfinite(alpha):
            raise ValueError(f"LoRAPool: alpha = {alpha!r}; expected a finite number")
        self.alpha = float(alpha)
        self.layers = nn.ModuleDict()
        self._names: list[str] = []
        K = r = None
        for name, (A, B) in layers.items():
            layer = PoolLayer(A, B)
            if K is None:
                K, r = layer.num_adapters, layer.rank
            if layer.num_adapters != K or layer.rank != r:
                raise ValueError(
                    f"LoRAPool: layer {name!r} has K={layer.num_adapters}, r={layer.rank}; expected "
                    f"K={K}, r={r} like the first layer"
                )
            self.layers[_key(name)] = layer
            self._names.append(name)
        names = list(adapter_names) if adapter_names is not None else [f"adapter_{k}" for k in range(K)]
        if len(names) != K or len(set(names)) != K:
            raise ValueError(f"LoRAPool: adapter_names has {len(names)} entries ({names}); expected {K} distinct names")
        self.adapter_names = names

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_adapters(
        cls,
        adapters: Sequence[Mapping[str, tuple[Tensor, Tensor]]],
        alpha: float,
        adapter_names: Sequence[str] | None = None,
    ) -> "LoRAPool":
        """Stack K single LoRAs (each: module path -> (A [r, d_in], B [d_out, r]) with the
        scale alpha / r) into a pool; every adapter must cover the same layers."""
        if not adapters:
            raise ValueError("LoRAPool.from_adapters: adapters is empty; expected at least one")
        names = [list(a.keys()) for a in adapters]
        first = set(names[0])
        for k, a in enumerate(names[1:], start=1):
            if set(a) != first:
                missing, extra = sorted(first - set(a)), sorted(set(a) - first)
                raise ValueError(
                    f"LoRAPool.from_adapters: adapter {k} targets other layers than adapter 0 "
                    f"(missing {missing[:5]}, extra {extra[:5]}); expected the same targets"
                )
        layers = {}
        for name in names[0]:
            As = [a[name][0] for a in adapters]
            Bs = [a[name][1] for a in adapters]
            ranks = {t.shape[0] for t in As}
            if len(ranks) != 1:
                raise ValueError(f"LoRAPool.from_adapters: layer {name!r} has ranks {sorted(ranks)}; expected one rank for all adapters")
            layers[name] = (torch.stack([t.detach() for t in As]), torch.stack([t.detach() for t in Bs]))
        return cls(layers, alpha, adapter_names)

    # ------------------------------------------------------------------ access
    @property
    def layer_names(self) -> list[str]:
        """Module paths of the pooled layers, in insertion order."""
        return list(self._names)

    @property
    def num_adapters(self) -> int:
        """K, the number of adapters (source tasks)."""
        return len(self.adapter_names)

    @property
    def rank(self) -> int:
        """r, shared by every adapter and layer."""
        return self.layer(self._names[0]).rank

    @property
    def scaling(self) -> float:
        """s = alpha / r."""
        return self.alpha / self.rank

    def layer(self, name: str) -> PoolLayer:
        """The pool of the layer at module path `name`."""
        key = _key(name)
        if key not in self.layers:
            raise KeyError(f"LoRAPool: no layer {name!r}; the pool holds {self._names[:5]}{'...' if len(self._names) > 5 else ''}")
        return self.layers[key]  # type: ignore[return-value]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _key(name) in self.layers

    def config(self) -> dict:
        """JSON-able description (no tensors)."""
        return {
            "alpha": self.alpha,
            "rank": self.rank,
            "num_adapters": self.num_adapters,
            "adapter_names": list(self.adapter_names),
            "layers": {n: [self.layer(n).in_features, self.layer(n).out_features] for n in self._names},
        }

    # ------------------------------------------------------------------ I/O
    def save(self, folder: str | Path) -> Path:
        """Write `pool.safetensors` + `pool_config.json` into `folder`; returns the folder."""
        return save_pool(self, folder)

    @classmethod
    def load(cls, folder: str | Path, device: torch.device | str | None = None) -> "LoRAPool":
        """Read a pool written by `save`."""
        return load_pool(folder, device=device)

    def extra_repr(self) -> str:
        return f"layers={len(self._names)}, K={self.num_adapters}, r={self.rank}, alpha={self.alpha}"


# ---------------------------------------------------------------------- pool I/O
POOL_WEIGHTS = "pool.safetensors"
POOL_CONFIG = "pool_config.json"
_FORMAT_VERSION = 1


def save_pool(pool: LoRAPool, folder: str | Path) -> Path:
    """Write `pool` into `folder` (created if needed); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, Tensor] = {}
    for name in pool.layer_names:
        lay = pool.layer(name)
        tensors[f"{name}.A"] = lay.A.detach().cpu().contiguous()
        tensors[f"{name}.B"] = lay.B.detach().cpu().contiguous()
    save_file(tensors, str(folder / POOL_WEIGHTS))
    config = {"format_version": _FORMAT_VERSION, **pool.config()}
    (folder / POOL_CONFIG).write_text(json.dumps(config, indent=2))
    return folder


def load_pool(folder: str | Path, device: torch.device | str | None = None) -> LoRAPool:
    """Read a pool written by `save_pool` (bit-exact round trip)."""
    folder = Path(folder)
    cfg_path, w_path = folder / POOL_CONFIG, folder / POOL_WEIGHTS
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise FileNotFoundError(f"load_pool: {p} is missing; expected a folder written by LoRAPool.save")
    config = json.loads(cfg_path.read_text())
    if config.get("format_version") != _FORMAT_VERSION:
        raise ValueError(f"load_pool: {cfg_path} has format_version {config.get('format_version')!r}; expected {_FORMAT_VERSION}")
    tensors = load_file(str(w_path), device=str(device) if device is not None else "cpu")
    layers = {}
    for name, (d_in, d_out) in config["layers"].items():
        try:
            A, B = tensors[f"{name}.A"], tensors[f"{name}.B"]
        except KeyError as exc:
            raise ValueError(f"load_pool: {w_path} lacks tensor {exc.args[0]!r} listed in {cfg_path}") from None
        expected_a = (config["num_adapters"], config["rank"], d_in)
        expected_b = (config["num_adapters"], d_out, config["rank"])
        if tuple(A.shape) != expected_a or tuple(B.shape) != expected_b:
            raise ValueError(
                f"load_pool: layer {name!r} has A {tuple(A.shape)}, B {tuple(B.shape)}; expected {expected_a}, {expected_b} per {cfg_path}"
            )
        layers[name] = (A, B)
    return LoRAPool(layers, config["alpha"], config["adapter_names"])
