"""Test-only helpers to run AIHWKIT's torch tile beside ours on the same weights and noise."""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator

import torch
from torch import Tensor, nn

from lorafusion_ext.ops.reference import split_sizes


def set_field(path: str, value):
    """A function that sets the dotted field `path` (e.g. "forward.out_noise") of an AIHWKIT or
    AIHWKIT-Lightning rpu_config to `value` and returns the config: edits that compose."""
    def edit(rpu):
        obj = rpu
        *parents, last = path.split(".")
        for name in parents:
            obj = getattr(obj, name)
        setattr(obj, last, value)
        return rpu
    return edit


def noiseless_rpu(tiles: int, learn: bool, columnwise: bool = False):
    """A `TorchInferenceRPUConfig` without output noise, mapped per column at omega 1, on
    `tiles`×`tiles` tiles (0: one tile), with or without learned out-scaling."""
    from aihwkit.simulator.configs import TorchInferenceRPUConfig

    rpu = TorchInferenceRPUConfig()
    rpu.forward.out_noise = 0.0
    rpu.mapping.weight_scaling_omega = 1.0
    rpu.mapping.weight_scaling_columnwise = True
    rpu.mapping.max_input_size = tiles
    rpu.mapping.max_output_size = tiles
    rpu.mapping.learn_out_scaling = learn
    rpu.mapping.out_scaling_columnwise = columnwise
    return rpu


def aihwkit_layer(linear: nn.Linear, rpu_config) -> nn.Module:
    """AIHWKIT 1.1 AnalogLinear with `linear`'s weights (a tile array when the config splits)."""
    from aihwkit.nn import AnalogLinear as AihwkitLinear

    return AihwkitLinear.from_digital(linear, rpu_config)


def _tiles(layer: nn.Module) -> list[list[nn.Module]]:
    """AIHWKIT tiles as [in_tile][out_tile] (a single tile is [[tile]])."""
    mod = layer.analog_module
    if hasattr(mod, "array"):
        return [list(row) for row in mod.array]
    return [[mod]]


@contextlib.contextmanager
def injected_noise(layer: nn.Module, noise_out: Tensor | None, noise_weight: Tensor | None) -> Iterator[None]:
    """Feed AIHWKIT's torch tile the given standard normals instead of its own draws.

    noise_out: [passes, n_in_tiles, tokens, out_features]; noise_weight: [out, in] (or
    [batch, out, in] with modifier.per_batch_sample). Each
    AIHWKIT tile (it, ot) takes its slice, pass after pass, in the order it draws.
    """
    import aihwkit.simulator.tiles.analog_mvm as mvm
    import aihwkit.simulator.tiles.torch_tile as torch_tile

    tiles = _tiles(layer)
    in_sizes = [row[0].in_size for row in tiles]
    out_sizes = [t.out_size for t in tiles[0]]
    current = {"it": 0, "ot": 0, "pass": 0}
    originals = {}

    def slices() -> tuple[slice, slice]:
        k0 = sum(in_sizes[: current["it"]])
        o0 = sum(out_sizes[: current["ot"]])
        return (slice(k0, k0 + in_sizes[current["it"]]), slice(o0, o0 + out_sizes[current["ot"]]))

    def fake_randn_like(t: Tensor) -> Tensor:
        assert noise_out is not None, "AIHWKIT drew output noise that the test did not provide"
        _, osl = slices()
        n = noise_out[current["pass"], current["it"], :, osl]
        current["pass"] += 1
        return n.reshape(t.shape).to(t.dtype).clone()

    def fake_randn(*shape, **kwargs) -> Tensor:
        assert noise_weight is not None, "AIHWKIT drew weight noise that the test did not provide"
        ksl, osl = slices()
        return noise_weight[..., osl, ksl].clone().to(kwargs.get("dtype") or noise_weight.dtype)

    for it, row in enumerate(tiles):
        for ot, tile in enumerate(row):
            sim = tile.tile
            originals[id(sim)] = sim.forward

            def wrapped(*args, _it=it, _ot=ot, _orig=sim.forward, **kwargs):
                current.update(it=_it, ot=_ot, **{"pass": 0})
                return _orig(*args, **kwargs)

            sim.forward = wrapped
    saved = (mvm.randn_like, torch_tile.randn)
    mvm.randn_like, torch_tile.randn = fake_randn_like, fake_randn
    try:
        yield
    finally:
        mvm.randn_like, torch_tile.randn = saved
        for row in tiles:
            for tile in row:
                tile.tile.forward = originals[id(tile.tile)]


def split_count(size: int, max_size: int | None) -> int:
    return len(split_sizes(size, max_size))


def tile_grid(layer: nn.Module) -> list[list[nn.Module]]:
    """AIHWKIT tiles of an AnalogLinear as [in_tile][out_tile]."""
    return _tiles(layer)


def set_alphas(layer: nn.Module, alpha: Tensor, columnwise: bool) -> None:
    """Write our learned out-scaling layout ([n_in, n_out], or [n_in, out] when columnwise)
    into AIHWKIT's per-tile alphas."""
    for i, row in enumerate(_tiles(layer)):
        o0 = 0
        for o, tile in enumerate(row):
            a = tile.out_scaling_alpha
            value = alpha[i, o0 : o0 + tile.out_size] if columnwise else alpha[i, o : o + 1]
            with torch.no_grad():
                a.copy_(value.reshape(a.shape))
            o0 += tile.out_size


def alpha_grads(layer: nn.Module, columnwise: bool) -> Tensor:
    """AIHWKIT's learned out-scaling gradients in our layout."""
    rows = []
    for row in _tiles(layer):
        parts = [tile.out_scaling_alpha.grad.reshape(-1) for tile in row]
        rows.append(torch.cat(parts))
    return torch.stack(rows)


def freeze_analog_weights(layer: nn.Module) -> None:
    """Freeze AIHWKIT's tile weights (train only the digital parameters)."""
    for row in _tiles(layer):
        for tile in row:
            tile.tile.weight.requires_grad_(False)


# ------------------------------------------------------------------------------ clamp at the bound
# AIHWKIT 1.1's torch tile has no gradient mask of its own at its converters: it calls
# `torch.clamp` on the quantised input (DAC) and output (ADC) and lets autograd differentiate
# it. Its gradient at exactly ±bound is therefore torch's: 1 up to torch 2.13 (closed range),
# 0 from torch 2.14 (docs/numerics.md, "The straight-through estimator at exactly the bound").


def torch_clamp_passes_gradient_at_bound() -> bool:
    """Whether the installed torch's `clamp` has gradient 1 at exactly min and max."""
    v = torch.tensor([-1.0, 1.0], requires_grad=True)
    torch.clamp(v, min=-1.0, max=1.0).sum().backward()
    return bool((v.grad == 1).all())


class _ClosedRangeClamp(torch.autograd.Function):
    """torch.clamp with gradient 1 on the closed range [min, max], 0 outside and at NaN."""

    @staticmethod
    def forward(ctx, v: Tensor, lo: float | None, hi: float | None) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(v)
        ctx.lo, ctx.hi = lo, hi
        return torch.clamp(v, min=lo, max=hi)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (v,) = ctx.saved_tensors
        inside = v == v  # False at NaN
        if ctx.lo is not None:
            inside &= v >= ctx.lo
        if ctx.hi is not None:
            inside &= v <= ctx.hi
        return grad * inside, None, None


class ClampProbe:
    """What AIHWKIT's converters saw in the accepted (last) pass of each tile: the elements whose
    clamp input sat exactly on ±bound, where its gradient is torch's version-dependent one."""

    def __init__(self, layer: nn.Module) -> None:
        tiles = _tiles(layer)
        self.in_sizes = [row[0].in_size for row in tiles]
        self.current: tuple[int, int] = (0, 0)
        self.dac: dict[tuple[int, int], Tensor] = {}  # tile -> [rows, in_size] bool, last pass
        self.adc: dict[tuple[int, int], Tensor] = {}  # tile -> [rows, out_size] bool, last pass

    def dac_on_bound(self, shape: torch.Size) -> Tensor:
        """Bool mask of x's elements (x of `shape`, [..., in_features]) that sat exactly on the
        DAC bound in the accepted pass of any tile that read them."""
        k = sum(self.in_sizes)
        mask = torch.zeros(int(torch.Size(shape).numel()) // k, k, dtype=torch.bool)
        k0 = 0
        for it, kt in enumerate(self.in_sizes):
            for (i, _), hit in self.dac.items():
                if i == it:
                    mask[:, k0 : k0 + kt] |= hit.reshape(-1, kt).cpu()
            k0 += kt
        return mask.reshape(shape)

    def adc_on_bound(self) -> int:
        """Outputs that sat exactly on the ADC bound in an accepted pass (all tiles)."""
        return int(sum(int(h.sum()) for h in self.adc.values()))

    def on_bound(self, shape: torch.Size) -> Tensor:
        """Bool mask of x's elements whose AIHWKIT input gradient depends on clamp's gradient at
        the bound: on the DAC bound themselves, or in a row whose output (of a tile reading them)
        sat on the ADC bound."""
        mask = self.dac_on_bound(shape)
        flat = mask.reshape(-1, mask.shape[-1])
        k0 = 0
        for it, kt in enumerate(self.in_sizes):
            for (i, _), hit in self.adc.items():
                if i == it:
                    flat[:, k0 : k0 + kt] |= hit.reshape(flat.shape[0], -1).any(dim=1, keepdim=True).cpu()
            k0 += kt
        return flat.reshape(shape)


@contextlib.contextmanager
def aihwkit_clamp(layer: nn.Module, closed_range: bool = False) -> Iterator[ClampProbe]:
    """Run AIHWKIT's torch tile with its `clamp` observed (and, with closed_range, given the
    gradient 1 on [min, max] on any torch: the straight-through rule this package documents).

    Yields a ClampProbe filled during the forward passes run inside the block.
    """
    import aihwkit.simulator.tiles.analog_mvm as mvm

    probe = ClampProbe(layer)
    original = mvm.clamp
    grid = _tiles(layer)
    saved = {}

    def clamp(v: Tensor, min=None, max=None) -> Tensor:  # noqa: A002  (torch.clamp's keywords)
        caller = sys._getframe(1).f_code.co_name
        on = torch.zeros_like(v, dtype=torch.bool)
        if min is not None:
            on |= v == min
        if max is not None:
            on |= v == max
        if caller == "_prepare_input":
            probe.dac[probe.current] = on.detach()
        elif caller == "_finalize_output":
            probe.adc[probe.current] = on.detach()
        if closed_range:
            return _ClosedRangeClamp.apply(v, min, max)
        return original(v, min=min, max=max)

    for it, row in enumerate(grid):
        for ot, tile in enumerate(row):
            sim = tile.tile
            saved[id(sim)] = sim.forward

            def wrapped(*args, _key=(it, ot), _orig=sim.forward, **kwargs):
                probe.current = _key
                return _orig(*args, **kwargs)

            sim.forward = wrapped
    mvm.clamp = clamp
    try:
        yield probe
    finally:
        mvm.clamp = original
        for row in grid:
            for tile in row:
                tile.tile.forward = saved[id(tile.tile)]


def assert_input_gradient(ours: Tensor, theirs: Tensor, ste: Tensor, on_bound: Tensor, keep: Tensor | None = None,
                          exact: bool = False, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Our input gradient against AIHWKIT's, on the elements `keep` (default: all).

    theirs: AIHWKIT's gradient under the installed torch; ste: AIHWKIT's with clamp's gradient 1
    on the closed range (`aihwkit_clamp(closed_range=True)`), our documented straight-through
    rule; on_bound: the elements where the two rules can differ (`ClampProbe.on_bound`).
    Off the bound ours equals AIHWKIT's; on it, AIHWKIT's gradient is torch's version-dependent
    one, and ours equals the straight-through value instead (and AIHWKIT's too where torch's
    clamp passes at the bound, torch <= 2.13).
    """
    keep = torch.ones_like(ours, dtype=torch.bool) if keep is None else keep

    def same(a: Tensor, b: Tensor, what: str) -> None:
        if exact:
            assert torch.equal(a, b), f"{what}: max |diff| {(a - b).abs().max().item() if a.numel() else 0}"
        else:
            torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")

    off = keep & ~on_bound
    # The closed-range clamp changes AIHWKIT only where a clamp input sat on a bound.
    same(theirs[off], ste[off], "AIHWKIT with and without the closed-range clamp, off the bound")
    same(ours[off], theirs[off], "ours vs AIHWKIT off the bound")
    same(ours[keep & on_bound], ste[keep & on_bound], "ours vs the straight-through value on the bound")
    if torch_clamp_passes_gradient_at_bound():
        same(ours[keep], theirs[keep], "ours vs AIHWKIT (this torch's clamp passes at the bound)")


def aihwkit_input_gradients(layer: nn.Module, x: Tensor, grad_out: Tensor,
                            noise: contextlib.AbstractContextManager | None = None):
    """AIHWKIT's forward on x and its input gradient for `grad_out`, twice: under the installed
    torch, and with the closed-range clamp (the straight-through value). `noise`: a re-enterable
    context (e.g. `injected_noise(...)` made by a lambda) entered around each forward.

    Returns (y, grad under this torch, straight-through grad, on-bound mask of x's elements).
    """
    outs = []
    for closed in (False, True):
        xa = x.detach().clone().requires_grad_(True)
        with (noise() if noise is not None else contextlib.nullcontext()), aihwkit_clamp(layer, closed) as probe:
            y = layer(xa)
        y.backward(grad_out)
        outs.append((y, xa.grad, probe))
    (y, grad, probe), (_, ste, _) = outs
    return y, grad, ste, probe.on_bound(x.shape)
