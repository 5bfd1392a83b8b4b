"""Plain-PyTorch versions of the ops: the readable specification and the tests' oracle.

Written for clarity, not speed: loops over tiles and passes are explicit. Every fp operation
is in the order of docs/numerics.md (the crossbar MVM), so the deterministic path equals the compiled op
bit for bit on the CPU.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lorafusion_ext.hardware import HardwareConfig, Periphery
from lorafusion_ext.ops.tiling import split_sizes


def _quantize(v: Tensor, res: float, bound: float | None) -> Tensor:
    if bound is None:
        return v
    if res > 0:
        step = 2.0 * bound * res
        v = torch.round(v / step) * step
    return torch.clamp(v, -bound, bound)


def crossbar_tile(
    x: Tensor,
    w: Tensor,
    hw: HardwareConfig,
    noise: list[Tensor] | None = None,
) -> tuple[Tensor, Tensor, int]:
    """One tile: x [M, Kt] through normalised weights w [Nt, Kt] (or [B, Nt, Kt]: batch sample b,
    rows b·M/B .. (b+1)·M/B - 1, through w[b]), before the periphery.

    `noise[p]` [M, Nt] is the standard-normal output noise of pass p (None: no noise).
    Returns (yq * 1/s [M, Nt], s [M], passes).
    """
    m = x.shape[0]
    zero = torch.zeros(m, w.shape[-2], dtype=x.dtype)
    if hw.noise_management.mode in ("abs_max", "max"):
        a = x.abs().amax(dim=1) if hw.noise_management.mode == "abs_max" else x.amax(dim=1)
        if hw.noise_management.threshold > 0:
            a = torch.clamp(a, max=hw.noise_management.threshold)
        if bool((a == 0).all()):
            return zero, torch.ones(m, dtype=x.dtype), 1
        a = torch.where(a <= 0, torch.ones_like(a), a)
        inv_a = 1.0 / a
    elif hw.noise_management.mode == "constant" and hw.noise_management.threshold > 0:
        # AIHWKIT keeps this scale in a Python float: rounded to x's dtype where it multiplies
        # x, and the output is scaled back by 2^pass / (1 / threshold) computed in double.
        inv_a = torch.full((m,), 1.0 / hw.noise_management.threshold, dtype=x.dtype)
    else:
        inv_a = torch.ones(m, dtype=x.dtype)
    constant = hw.noise_management.mode == "constant" and hw.noise_management.threshold > 0
    bound = hw.adc.bound if hw.adc.bound is not None else float("inf")
    passes = hw.max_passes
    per_row = hw.bound_management.mode == "iterative_per_row"
    out = torch.empty(m, w.shape[-2], dtype=x.dtype)
    s_final = torch.empty(m, dtype=x.dtype)
    pending = torch.ones(m, dtype=torch.bool)
    used = 1
    for p in range(passes):
        s = inv_a / (2.0**p)
        xq = _quantize(x * s[:, None], hw.dac.resolution, hw.dac.bound)
        if hw.dac.asymmetry != 0:
            xq = torch.where(xq < 0, xq * (1.0 - hw.dac.asymmetry), xq)
        if w.dim() == 3:
            rows = m // w.shape[0]
            y = torch.cat([xq[b * rows : (b + 1) * rows] @ w[b].T for b in range(w.shape[0])])
        else:
            y = xq @ w.T
        if hw.adc.asymmetry != 0:
            y = torch.where(y < 0, y * (1.0 - hw.adc.asymmetry), y)
        if hw.out_noise > 0 and noise is not None:
            y = y + hw.out_noise * noise[p]
        if hw.adc.resolution > 0:
            step = 2.0 * bound * hw.adc.resolution
            y = torch.round(y / step) * step
        ok_rows = ((y <= bound) & (y >= -bound)).all(dim=1)
        y = torch.clamp(y, -bound, bound)
        last = p + 1 == passes
        if per_row:
            take = pending & (ok_rows | last)
        elif bool(ok_rows.all()) or last:
            take = pending.clone()
        else:
            take = torch.zeros_like(pending)
        # AIHWKIT's `output *= out_scale / scale`: fl(fl(1/s) * out_scale) for a tensor scale.
        back = (torch.full_like(s, (hw.out_scale / (1.0 / hw.noise_management.threshold)) * 2.0**p) if constant
                else 1.0 / s if hw.out_scale == 1.0 else (1.0 / s) * hw.out_scale)
        out[take] = (y * back[:, None])[take]
        s_final[take] = s[take]
        pending &= ~take
        used = p + 1
        if not bool(pending.any()):
            break
    return out, s_final, used


def _tile_weight(w_norm: Tensor, hw: HardwareConfig, training: bool, noise_weight: Tensor | None,
                 o0: int, nt: int, k0: int, kt: int) -> Tensor:
    """The tile's weights [Nt, Kt] as the crossbar reads them (with the training modifier;
    [B, Nt, Kt] with a per-sample `noise_weight` [B, N, K])."""
    w = w_norm[o0 : o0 + nt, k0 : k0 + kt]
    if training and hw.modifier.kind == "add_normal" and noise_weight is not None:
        amp = hw.modifier.std * w.abs().max()
        w = w + amp * noise_weight[..., o0 : o0 + nt, k0 : k0 + kt]
    if training and hw.modifier.kind == "mult_normal" and noise_weight is not None:
        w = w + (w * hw.modifier.std) * noise_weight[..., o0 : o0 + nt, k0 : k0 + kt]
    if training and hw.modifier.kind == "discretize":
        res = 1.0 / hw.modifier.res if hw.modifier.res > 1.0 else hw.modifier.res
        step = res * (2.0 * w.abs().max())
        w = torch.round(w / step) * step
    return w


def crossbar_mvm(
    x: Tensor,
    w_norm: Tensor,
    out_scales: Tensor,
    bias: Tensor | None,
    hw: HardwareConfig,
    noise_out: Tensor | None = None,
    noise_weight: Tensor | None = None,
    training: bool = False,
) -> Tensor:
    """Reference of `lorafusion_ext.ops.crossbar_mvm` with explicit noise (or none).

    Shapes as the op: x [M, K], w_norm [N, K], out_scales [S, Tin, N], noise_out
    [max_passes, Tin, M, N] standard normals, noise_weight [N, K] standard normals (or
    [B, N, K] with `hw.modifier.per_batch_sample`: batch sample b's draw, for rows b·M/B ..).

    Raises:
        ValueError: `hw.dac.noise` > 0 (input noise has no explicit-noise argument here).
    """
    if hw.dac.sto_round or hw.adc.sto_round or (training and hw.modifier.sto_round):
        raise ValueError("reference.crossbar_mvm: stochastic rounding (dac/adc/modifier.sto_round) is not modelled by the "
                         "reference; compare the op against AIHWKIT statistically instead")
    if hw.dac.noise > 0:
        raise ValueError(f"reference.crossbar_mvm: hw.dac.noise = {hw.dac.noise} (input noise) is not modelled by "
                         "the reference; compare the op against AIHWKIT statistically instead")
    k_sizes = split_sizes(w_norm.shape[1], hw.tiles.max_in)
    n_sizes = split_sizes(w_norm.shape[0], hw.tiles.max_out)
    y = None
    k0 = 0
    for it, kt in enumerate(k_sizes):
        parts = []
        o0 = 0
        for nt in n_sizes:
            w = _tile_weight(w_norm, hw, training, noise_weight, o0, nt, k0, kt)
            noise = None
            if noise_out is not None:
                noise = [noise_out[p, it, :, o0 : o0 + nt] for p in range(noise_out.shape[0])]
            t, _, _ = crossbar_tile(x[:, k0 : k0 + kt], w, hw, noise)
            for j in range(out_scales.shape[0]):
                t = t * out_scales[j, it, o0 : o0 + nt]
            parts.append(t)
            o0 += nt
        row = torch.cat(parts, dim=1)
        y = row if y is None else y + row
        k0 += kt
    assert y is not None
    return y if bias is None else y + bias


def backward_read(g: Tensor, w: Tensor, periphery: Periphery, noise: list[Tensor] | None = None) -> Tensor:
    """The input gradient of one tile read through the crossbar (docs/numerics.md, "The backward
    read"): the tile's output gradient g [M, Nt] (after the digital periphery) read through the
    tile transposed, w [Nt, Kt] the tile's weights as the forward read them ([B, Nt, Kt]: batch
    sample b's rows through w[b]), with `periphery`'s noise management, DAC, output noise
    (`noise[p]` [M, Kt] standard normals of pass p; None: none), ADC and bound management.

    It is the forward read of g through wᵀ: `crossbar_tile` with the periphery's parts.
    Returns dx [M, Kt].
    """
    hw = HardwareConfig(dac=periphery.dac, adc=periphery.adc, out_noise=periphery.out_noise,
                        noise_management=periphery.noise_management, bound_management=periphery.bound_management)
    dx, _, _ = crossbar_tile(g, w.transpose(-1, -2), hw, noise)
    return dx


def crossbar_mvm_grad_x(
    grad_y: Tensor,
    x: Tensor,
    w_norm: Tensor,
    out_scales: Tensor,
    hw: HardwareConfig,
    scales: Tensor,
    mask: Tensor,
    noise_weight: Tensor | None = None,
    training: bool = False,
    noise_backward: Tensor | None = None,
) -> Tensor:
    """Reference of the op's input gradient (`crossbar_mvm_backward`'s grad_x), the ideal
    straight-through backward (`hw.backward` None) or the backward read (`backward_read`).

    grad_y [M, N]; x, w_norm, out_scales, noise_weight as `crossbar_mvm`; `scales` [tiles, M]
    and `mask` bool [Tin, M, N]: the forward op's outputs; `noise_backward` [max_passes, tiles,
    M, K] standard normals of the backward read's output noise (tile index it·Tout + ot; None:
    none). The DAC's straight-through mask is taken as in the plain case (no input noise,
    asymmetry or stochastic rounding). Returns grad_x [M, K].
    """
    k_sizes = split_sizes(w_norm.shape[1], hw.tiles.max_in)
    n_sizes = split_sizes(w_norm.shape[0], hw.tiles.max_out)
    tiles = len(k_sizes) * len(n_sizes)
    m = x.shape[0]
    dac_step = 2.0 * (hw.dac.bound or 0.0) * hw.dac.resolution
    gx = None if tiles == 1 else torch.zeros_like(x)
    k0 = 0
    index = 0
    for it, kt in enumerate(k_sizes):
        o0 = 0
        for nt in n_sizes:
            w = _tile_weight(w_norm, hw, training, noise_weight, o0, nt, k0, kt)
            g = torch.where(mask[it, :, o0 : o0 + nt], grad_y[:, o0 : o0 + nt], torch.zeros((), dtype=x.dtype))
            for j in range(out_scales.shape[0]):
                g = g * out_scales[j, it, o0 : o0 + nt]
            if hw.out_scale != 1.0:
                g = g * hw.out_scale
            if hw.backward is not None:
                noise = None
                if noise_backward is not None:
                    noise = [noise_backward[p, index, :, k0 : k0 + kt] for p in range(noise_backward.shape[0])]
                part = backward_read(g, w, hw.backward, noise)
            elif w.dim() == 3:
                rows = m // w.shape[0]
                part = torch.cat([g[b * rows : (b + 1) * rows] @ w[b] for b in range(w.shape[0])])
            else:
                part = g @ w
            v = x[:, k0 : k0 + kt] * scales[index][:, None]
            if dac_step > 0:
                v = torch.round(v / dac_step) * dac_step
            if hw.dac.bound is not None:
                part = part * ((v >= -hw.dac.bound) & (v <= hw.dac.bound)).to(x.dtype)
            if gx is None:
                gx = part
            else:
                gx[:, k0 : k0 + kt] += part
            o0 += nt
            index += 1
        k0 += kt
    assert gx is not None
    return gx
