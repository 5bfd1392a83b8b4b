"""`AnalogPoolLayer`: one layer's LoRA pool programmed onto crossbar tiles, as LoRAFusion deploys it.

The K adapters of a layer are concatenated into two matrices,

    A_cat [K·r, d_in]   (rows k·r … k·r+r-1 hold A_k),
    B_cat [d_out, K·r]  (columns k·r … k·r+r-1 hold B_k),

each held by an `AnalogLinear` without bias (`shrink` and `expand`): mapped, tiled, quantised
and noisy exactly like any analog layer of the model, and programmed and drifted with it. The
fusion coefficients c never touch the crossbar; they are applied digitally between the two MVMs:

    u   = crossbar(x, A_cat)                         [..., K·r], u_k = its k-th block of r
    sum:      v_k = c_k u_k
    lorahub:  v_j = c_j Σ_k c_k u_k                  (for every j)
    Δy  = s · crossbar(v, B_cat)                     [..., d_out]

With ideal hardware this is the digital `pool_fusion`: sum gives s Σ_k c_k B_k A_k x, and
lorahub gives s Σ_j B_j c_j (Σ_k c_k A_k x) = s (Σ_j c_j B_j)(Σ_k c_k A_k) x.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lorafusion_ext.hardware import HardwareConfig
from lorafusion_ext.nn.analog_linear import AnalogLinear
from lorafusion_ext.nn.mapping import clip_and_remap
from lorafusion_ext.nn.pool import PoolLayer
from lorafusion_ext.ops import precision
from lorafusion_ext.ops.seeds import MASK62, splitmix64

# Mixed into the base layer's seed so that the pool's noise streams are distinct from the base's
# and from each other, and reproducible from the base's seed alone.
_SHRINK_TAG = 0x5A11_0001
_EXPAND_TAG = 0x5A11_0002


def pool_seeds(base_seed: int) -> tuple[int, int]:
    """(shrink seed, expand seed) of the pool tiles of a layer whose own noise seed is `base_seed`."""
    return (splitmix64(int(base_seed) ^ _SHRINK_TAG) & MASK62, splitmix64(int(base_seed) ^ _EXPAND_TAG) & MASK62)


def _analog_from_weight(weight: Tensor, hardware: HardwareConfig, seed: int) -> AnalogLinear:
    """A bias-free AnalogLinear holding `weight` [out, in] (conditioned by the hardware's clip
    recipe, as `AnalogLinear.from_linear` does), frozen."""
    out_features, in_features = weight.shape
    # nn.Linear's constructor draws its init from torch's global RNG; the weights are overwritten
    # at once, so keep the caller's RNG stream untouched.
    with torch.random.fork_rng(devices=[]):
        layer = AnalogLinear(in_features, out_features, bias=False, hardware=hardware,
                             device=weight.device, dtype=weight.dtype, seed=seed)
    with torch.no_grad():
        # Conditioned in the compute dtype, like from_linear; a half pool stores it rounded once.
        layer.weight.copy_(clip_and_remap(precision.upcast(weight.detach()), layer.layout, hardware))
    layer.requires_grad_(False)  # the weights and any learned out-scaling belong to the frozen pool
    return layer


def mix_coefficients(u: Tensor, coeffs: Tensor, mode: str, num_adapters: int) -> Tensor:
    """The digital mixing between the two pool MVMs.

    Args:
        u: [..., K·r] shrink outputs, adapter-major (block k = u[..., k·r:(k+1)·r]).
        coeffs: [K], or per token [..., K] broadcastable against u's leading dims.
        mode: "sum" (v_k = c_k u_k) or "lorahub" (v_j = c_j Σ_k c_k u_k).
        num_adapters: K.

    Returns:
        v: [..., K·r], the expand MVM's input.
    """
    K = num_adapters
    lead = u.shape[:-1]
    u3 = u.reshape(*lead, K, u.shape[-1] // K)
    c3 = coeffs.unsqueeze(-1)  # [..., K, 1]
    weighted = u3 * c3
    if mode == "lorahub":
        weighted = c3 * weighted.sum(-2, keepdim=True)
    return weighted.reshape(*lead, u.shape[-1])


class AnalogPoolLayer(nn.Module):
    """The pool of one layer on the crossbar: `shrink` holds A_cat [K·r, d_in] and `expand`
    holds B_cat [d_out, K·r] (see the module docstring for the forward algebra).

    Both are `AnalogLinear` layers (no bias) with `hardware`, so `lf.program`, `lf.drift`,
    `lf.unprogram`, `drift_sweep` and `state_dict` reach them like every analog layer. Their
    weights are frozen; set `requires_grad` on them to train the pool through the crossbar's
    straight-through backward. `A` and `B` are views of the (target) weights in the digital
    pool's layout, [K, r, d_in] and [K, d_out, r].

    Args:
        A: [K, r, d_in] and B: [K, d_out, r], the adapters (copied; conditioned by the
            hardware's clip recipe, like any weights converted to analog).
        hardware: the crossbar configuration of both tiles.
        seeds: (shrink seed, expand seed) of the tiles' noise (see `pool_seeds`).
    """

    def __init__(self, A: Tensor, B: Tensor, hardware: HardwareConfig, seeds: tuple[int, int]) -> None:
        super().__init__()
        digital = PoolLayer(A, B)  # validates the shapes, dtypes and devices
        K, r, d_in = digital.A.shape
        d_out = digital.B.shape[1]
        self.num_adapters, self.rank = K, r
        with torch.no_grad():
            a_cat = digital.A.reshape(K * r, d_in)
            b_cat = digital.B.permute(1, 0, 2).reshape(d_out, K * r)
        self.shrink = _analog_from_weight(a_cat, hardware, seeds[0])
        self.expand = _analog_from_weight(b_cat, hardware, seeds[1])

    @classmethod
    def from_pool_layer(cls, pool: PoolLayer, hardware: HardwareConfig, seeds: tuple[int, int]) -> "AnalogPoolLayer":
        """The analog copy of a digital `PoolLayer`."""
        return cls(pool.A, pool.B, hardware, seeds)

    @property
    def hardware(self) -> HardwareConfig:
        """The crossbar configuration of both pool layers (the base layer's)."""
        return self.shrink.hardware

    @property
    def in_features(self) -> int:
        """d_in of the pooled layer."""
        return self.shrink.in_features

    @property
    def out_features(self) -> int:
        """d_out of the pooled layer."""
        return self.expand.out_features

    @property
    def A(self) -> Tensor:
        """[K, r, d_in] view of A_cat, the shrink tiles' target weights."""
        return self.shrink.weight.view(self.num_adapters, self.rank, self.in_features)

    @property
    def B(self) -> Tensor:
        """[K, d_out, r] view of B_cat, the expand tiles' target weights (not contiguous)."""
        return self.expand.weight.view(self.out_features, self.num_adapters, self.rank).permute(1, 0, 2)

    def forward(self, x: Tensor, coeffs: Tensor, scale: float, mode: str) -> Tensor:
        """Δy [..., d_out] of `x` [..., d_in]; `coeffs` [K] or per token [..., K] (broadcast
        against x's leading dims); s = `scale`."""
        u = self.shrink(x)
        v = mix_coefficients(u, coeffs, mode, self.num_adapters)
        return self.expand(v) * scale

    def extra_repr(self) -> str:
        return f"K={self.num_adapters}, r={self.rank}, d_in={self.in_features}, d_out={self.out_features}"
