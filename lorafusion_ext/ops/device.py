"""Device-model noise and fused device passes on the compiled extension (docs/numerics.md,
"Device noise streams").

* :class:`PhiloxNoise`: a :class:`~lorafusion_ext.devices.NoiseSource` drawing the extension's
  Philox normals (``lorafusion::philox_normal``, stream ``DEVICE_STREAM``): draw number ``p`` of
  a model call (its purpose: programming noise G+, ν G+, programming noise G-, ν G-; read noise
  G+, G- at drift) is the stream keyed ``(seed, pass = p)``, element ``i`` at counter ``i``. The
  same bits at any thread count and on CPU and CUDA.
* :func:`fused_program` / :func:`fused_drift`: the PCM-like model's per-weight arithmetic in one
  C++ pass per tile (``lorafusion::pcm_program`` / ``pcm_drift``), drawing the same Philox
  normals as :class:`PhiloxNoise` feeds the plain-PyTorch model (its oracle). They return None
  where they do not apply (another model, a dtype or device without a fused kernel, a
  torch-generator draw), and the caller takes the plain-PyTorch path.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from lorafusion_ext.devices import PCMLikeModel, ProgrammedState
from lorafusion_ext.devices.base import GeneratorLike, single_pair_scale
from lorafusion_ext.ops import extension
from lorafusion_ext.ops.seeds import MASK62, splitmix64

extension.load()

__all__ = ["DEVICE_STREAM", "DRIFT_PURPOSE", "PhiloxNoise", "device_normals", "fused_drift", "fused_program"]

#: Noise stream of the device models (kStreamDevice in csrc/include/lorafusion/philox.h).
DEVICE_STREAM = 5
#: First purpose of a drift call's draws (a program call's start at 0): read noise G+ = 8, G- = 9
#: (kPurposeReadPlus / kPurposeReadMinus in csrc/cpu/pcm_fused.h).
DRIFT_PURPOSE = 8


def device_normals(seed: int, purpose: int, count: int, device: torch.device | str = "cpu") -> Tensor:
    """float32 [count]: standard normals of device-noise stream (`seed`, `purpose`), elements
    0..count-1. Purposes past 255 (the key's pass field) move to a derived seed."""
    if purpose >= 256:
        seed = splitmix64(seed ^ (purpose >> 8)) & MASK62
    rng = torch.tensor([seed, 0], dtype=torch.int64, device=device)
    return torch.ops.lorafusion.philox_normal(rng, DEVICE_STREAM, purpose & 0xFF, 0, 0, count)


class PhiloxNoise:
    """Philox normals of one device-model call on one tile.

    Args:
        seed: the tile's 62-bit seed (call seed, layer and tile mixed: see
            ``lorafusion_ext.nn.tile_state.device_noise``).
        first_purpose: the purpose of the first draw (0 for program, ``DRIFT_PURPOSE`` for drift);
            each ``normal`` call takes the next one.
    """

    def __init__(self, seed: int, first_purpose: int = 0) -> None:
        if not 0 <= int(seed) <= MASK62:
            raise ValueError(f"PhiloxNoise: seed = {seed}; expected 0 <= seed < 2**62")
        self.seed = int(seed)
        self.first_purpose = int(first_purpose)
        self.purpose = self.first_purpose

    def normal(self, like: Tensor) -> Tensor:
        """Standard normals shaped like `like` (its dtype and device), element i at counter i of
        the logical (row-major) order."""
        z = device_normals(self.seed, self.purpose, like.numel(), like.device)
        self.purpose += 1
        return z.view(like.shape).to(like.dtype)


def _fused_applies(model: object, weights: Tensor, noise: GeneratorLike, first_purpose: int) -> bool:
    # Exactly PCMLikeModel: its subclasses change the ν statistics. A source that already drew
    # would not match the kernel's fixed purposes.
    return (type(model) is PCMLikeModel and isinstance(noise, PhiloxNoise)
            and noise.purpose == noise.first_purpose == first_purpose
            and weights.dtype == torch.float32 and weights.device.type == "cpu" and weights.dim() == 2)


@torch.no_grad()
def fused_program(model: object, weights: Tensor, noise: GeneratorLike) -> ProgrammedState | None:
    """`model.program(weights, noise, keep_conductances=False)` in one C++ pass, or None where no
    fused kernel applies. `weights` [out, in] finite float32 (checked by the caller)."""
    if not _fused_applies(model, weights, noise, 0):
        return None
    assert isinstance(model, PCMLikeModel) and isinstance(noise, PhiloxNoise)
    w = weights.detach().contiguous()
    scale = single_pair_scale(w, model.g_max)
    programmed, nu = torch.ops.lorafusion.pcm_program(
        w, float(scale), [float(c) for c in model.prog_coeff], model.g_max,
        model.g_max / model.effective_prog_coeff_g_max_reference, model.prog_noise_scale, model.drift_scale,
        noise.seed,
    )
    noise.purpose += 4
    return ProgrammedState(weights=programmed, scale=scale, nu=nu)


@torch.no_grad()
def fused_drift(model: object, state: ProgrammedState, t_seconds: float, noise: GeneratorLike) -> Tensor | None:
    """`model.drift(state, t_seconds, noise)` in one C++ pass, or None where no fused kernel
    applies. `t_seconds` (s) checked by the caller."""
    w = state.weights
    if not _fused_applies(model, w, noise, DRIFT_PURPOSE) or state.nu is None or state.nu.dtype != w.dtype:
        return None
    assert isinstance(model, PCMLikeModel) and isinstance(noise, PhiloxNoise)
    state.validate()
    scale = single_pair_scale(w, model.g_max)
    t = float(t_seconds) + model.t_0
    # numpy for the scalar, as PCMLikeModel.read_noise_rel_std.
    read_sigma = float(np.sqrt(np.log((t + model.t_read) / (2 * model.t_read))))
    out = torch.ops.lorafusion.pcm_drift(
        w.contiguous(), state.nu.contiguous(), float(scale), model.g_max, t / model.t_0, t > model.t_0,
        read_sigma, model.read_noise_scale, noise.seed,
    )
    noise.purpose += 2
    return out
