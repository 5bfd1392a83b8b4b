"""One analog layer's programming, drift and programmed state (docs/numerics.md, programming
and drift).

Below `AnalogLinear` in the layering (docs/architecture.md): `AnalogLinear.program`, `.drift`,
`.unprogram` and its state_dict loading call `program_layer`, `drift_layer`, `unprogram_layer`
and `load_programmed_state` here; this module never imports the layer class, so a layer is
typed here by its base class, `nn.Linear`, and is always an `AnalogLinear`. The model walkers
(`program(model)`...) are in `lorafusion_ext.nn.deploy`.

What programming does, per layer and per tile (``layer.layout``; tiles in AIHWKIT's order: input
tile major, output tile minor):

1. the device model (``get_device_model(hw.device.name, **hw.device.options)``) programs the tile's
   *normalised* target weights (``layer.tile_weights()``, what an AIHWKIT tile holds) and returns a
   :class:`~lorafusion_ext.devices.ProgrammedState`;
2. with global drift compensation on (``hw.device.drift_compensation``), the tile is read out with
   identity inputs through the full noisy crossbar MVM without periphery:
   ``β0 = max(1e-4, mean |F(W_prog)|)``.

``drift(t)`` restarts every tile from its programmed state (AIHWKIT semantics: drifts do not
accumulate), draws drift and read noise at ``t`` seconds after programming, and sets
``α(t) = β0 / max(1e-4, mean |F(W_t)|)`` per tile (applied to the tile's outputs in eval only).

The target weights (``layer.weight``) are never modified; ``unprogram`` returns to them. What
programming leaves on the layer is explicit module state, saved and restored by ``state_dict``:

* ``<prefix>programmed_weight`` [out, in]: the normalised tile weights now on the crossbar
  (programmed, or drifted to the last ``drift`` time);
* ``<prefix>drift_alpha`` [n_in_tiles, n_out_tiles]: α of the last read-out (ones after
  ``program``); absent when drift compensation is off;
* ``<prefix>programmed_state.<it>_<ot>.<field>``: the tile's ProgrammedState (``weights``,
  ``scale``, ``nu`` for PCM, ``g_target`` for ReRAM), what every ``drift`` restarts from;
* ``<prefix>programmed_state.readout_baseline`` [n_in_tiles, n_out_tiles]: β0 per tile (divided
  by the α that ``fold_compensation_layer`` folded into ``programmed_scales``, so that a later
  ``drift`` sets α relative to the scales the layer now holds);
* ``<prefix>programmed_state.t_seconds`` (0-d, float64): the time (s) the crossbar was last read at
  (0 after ``program``).

Randomness: device noise (programming, drift, read noise) is keyed by the ``generator`` argument
(default: torch's global RNG of the weights' device, so ``torch.manual_seed`` controls it). With
``draws="philox"`` (the default) each call draws one 62-bit call seed from it; tile ``i`` of the
layer then draws from the extension's Philox streams keyed by (call seed, layer seed
``rng_state[0]``, tile index, purpose), counter = element index (:func:`device_noise`): the same
bits at any thread count and on CPU and CUDA. With ``draws="aihwkit"`` the normals are
``torch.normal_`` from the generator, consumed in AIHWKIT's order, so that a layer programmed with
a generator seeded like AIHWKIT's global RNG gets the same conductances bit for bit. The
read-out noise of the compensation MVM comes from the layer's own counter RNG (``rng_state``): a
stream derived from the layer seed and the tile index, at the layer's current call counter, which
each ``program``/``drift`` advances by one. A seeded layer plus a seeded generator therefore give a
reproducible ``program()``/``drift()``.

Drift before program: a ``RuntimeError`` that says to call ``program()`` first. Auto-programming
(what AIHWKIT's ``drift_weights`` does) would draw a programming sample from an RNG the caller did
not choose, the kind of hidden state this package avoids.
"""

from __future__ import annotations

import inspect
import json
import math

import torch
from torch import Tensor, nn

from lorafusion_ext.devices import (
    DRAWS,
    DeviceModel,
    GlobalDriftCompensation,
    ProgrammedState,
    compensation_alpha,
    get_device_model,
)
from lorafusion_ext.devices.base import GeneratorLike, check_time
from lorafusion_ext.hardware import HardwareConfig
from lorafusion_ext.nn.mapping import TileLayout, tile_blocks
from lorafusion_ext.ops.crossbar import crossbar_mvm_inference
from lorafusion_ext.ops.device import DRIFT_PURPOSE, PhiloxNoise, fused_drift, fused_program
from lorafusion_ext.ops.kwargs import op_kwargs
from lorafusion_ext.ops.seeds import MASK62, splitmix64

__all__ = [
    "ProgrammedTiles",
    "check_draws",
    "check_foldable",
    "check_programmable",
    "compensation_rows",
    "device_noise",
    "device_model_of",
    "drift_layer",
    "fold_compensation_layer",
    "is_programmed",
    "load_programmed_state",
    "program_layer",
    "programmed_state",
    "readout",
    "tile_blocks",
    "unprogram_layer",
]

_STATE = "programmed_state"
# Tag mixed into the layer seed so that the read-out stream never coincides with the forward stream.
_READOUT_TAG = 0x5EAD07
# Tag mixed into the call seed of the device-noise streams (draws="philox").
_DEVICE_TAG = 0xDE71CE
_COMPENSATION = GlobalDriftCompensation()


# ------------------------------------------------------------------------------------------------
# State container
# ------------------------------------------------------------------------------------------------


class _TileState(nn.Module):
    """Buffers of one tile's ProgrammedState (one buffer per field that is not None)."""

    def __init__(self, state: ProgrammedState) -> None:
        super().__init__()
        for name, value in state.to_dict().items():
            self.register_buffer(name, value)

    def state(self) -> ProgrammedState:
        return ProgrammedState.from_dict(dict(self.named_buffers(recurse=False)))


class ProgrammedTiles(nn.Module):
    """The programmed state of one AnalogLinear: one ProgrammedState per tile, the compensation
    baselines and the last read time.

    Children are named ``"<it>_<ot>"`` (input tile, output tile), so the state_dict keys are
    ``programmed_state.<it>_<ot>.<field>``.

    Args:
        states: ``{(it, ot): ProgrammedState}`` for every tile of the layer.
        readout_baseline: β0 per tile [n_in_tiles, n_out_tiles] (read-out units), or None when
            drift compensation is off.
        t_seconds: s, the time the crossbar was last read at (0 right after programming).
    """

    def __init__(
        self,
        states: dict[tuple[int, int], ProgrammedState],
        readout_baseline: Tensor | None,
        t_seconds: float = 0.0,
    ) -> None:
        super().__init__()
        for (it, ot), state in states.items():
            self.add_module(f"{it}_{ot}", _TileState(state))
        self.register_buffer("readout_baseline", readout_baseline)
        device = next(iter(states.values())).weights.device
        self.register_buffer("t_seconds", torch.tensor(float(t_seconds), dtype=torch.float64, device=device))

    def tile(self, it: int, ot: int) -> ProgrammedState:
        """ProgrammedState of input tile `it`, output tile `ot` (a view of the buffers)."""
        return getattr(self, f"{it}_{ot}").state()

    def __repr__(self) -> str:
        # One line: a programmed model's print-out should not grow by a line per tile.
        return f"{type(self).__name__}({len(self._modules)} tiles, t={float(self.t_seconds):g} s)"


def programmed_state(layer: nn.Linear) -> ProgrammedTiles | None:
    """The layer's :class:`ProgrammedTiles`, or None when it is not programmed."""
    return layer._modules.get(_STATE)  # type: ignore[return-value]


def is_programmed(layer: nn.Linear) -> bool:
    """True when `layer` holds a programmed state (``program`` was called or it was loaded)."""
    return programmed_state(layer) is not None


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def device_model_of(hardware: HardwareConfig) -> DeviceModel:
    """The device model of `hardware` (``hardware.device.name`` and its options).

    Raises:
        ValueError: unknown device model name or option (the message lists the known ones).
    """
    return get_device_model(hardware.device.name, **dict(hardware.device.options))


def _readout_rng(layer: nn.Linear, tile_index: int, counter: int) -> Tensor:
    """int64 [2] (seed, offset) of tile `tile_index`'s read-out noise at layer call `counter`."""
    seed = int(layer.rng_state[0])
    derived = splitmix64(splitmix64(seed ^ _READOUT_TAG) + tile_index) & MASK62
    return torch.tensor([derived, counter], dtype=torch.int64, device=layer.rng_state.device)


def _advance_counter(layer: nn.Linear) -> int:
    """The layer's call counter before advancing it by one."""
    counter = int(layer.rng_state[1])
    layer.rng_state[1] += 1
    return counter


def readout(tile_weights: Tensor, hardware: HardwareConfig, rng: Tensor) -> Tensor:
    """Global drift compensation read-out of one tile: ``max(1e-4, mean |F(I)|)``, 0-d.

    ``F(I)`` [kt, nt] is the crossbar MVM (DAC, output noise, ADC, bound management of
    `hardware`; no mapping scales, no α, no bias) of the identity inputs ``eye(kt)`` through the
    tile's normalised weights `tile_weights` [nt, kt], with the noise of `rng` (int64 [2]).
    """
    nt, kt = tile_weights.shape
    # One physical tile, cut from the layer by the same rule as the op's, so within
    # (max_in, max_out): the op does not split it again. The tile size stays in the config, as
    # the IR drop pads the rows to the physical tile (AIHWKIT reads out through tile.forward).
    max_in, max_out = hardware.tiles.max_in, hardware.tiles.max_out
    if (max_in is not None and kt > max_in) or (max_out is not None and nt > max_out):
        raise ValueError(f"readout: tile_weights has shape {tuple(tile_weights.shape)}; expected one tile of at most "
                         f"[{max_out}, {max_in}] (hardware.tiles)")
    hw = hardware.for_call(1, False)  # an inference read of one tile (AIHWKIT-Lightning: no output noise in eval)
    eye = _COMPENSATION.readout_inputs(kt, dtype=tile_weights.dtype, device=tile_weights.device)
    out_scales = tile_weights.new_empty((0, 1, nt))
    # The raw op below autograd: a read-out never needs a gradient.
    y = crossbar_mvm_inference(eye, tile_weights.contiguous(), out_scales, None, rng,
                               op_kwargs(hw)["params"], training=False)
    return _COMPENSATION.readout(y)


def check_draws(draws: object, where: str) -> str:
    """`draws` if it is one of ``DRAWS`` ("philox", "aihwkit"), else a ValueError naming `where`."""
    if draws not in DRAWS:
        raise ValueError(f"{where}: draws = {draws!r}; expected one of {list(DRAWS)}")
    return str(draws)


def _call_seed(generator: torch.Generator | None, device: torch.device) -> int:
    """One 62-bit seed per program/drift call, drawn from `generator` (None: torch's global RNG
    of `device`, so ``torch.manual_seed`` controls it)."""
    gen_device = device if generator is None else generator.device
    return int(torch.randint(0, 1 << 62, (1,), generator=generator, device=gen_device).item())


def device_noise(layer: nn.Linear, call_seed: int, tile_index: int, first_purpose: int) -> PhiloxNoise:
    """The Philox noise source of tile `tile_index` of `layer` for one call: seed =
    SplitMix64 chain of (call seed ^ tag, layer seed ``rng_state[0]``, tile index), 62 bits."""
    seed = splitmix64(splitmix64(splitmix64(call_seed ^ _DEVICE_TAG) + int(layer.rng_state[0])) + tile_index)
    return PhiloxNoise(seed & MASK62, first_purpose)


def _tile_sources(layer: nn.Linear, generator: torch.Generator | None, draws: str,
                  first_purpose: int) -> dict[tuple[int, int], GeneratorLike]:
    """The noise source of every tile for one call: the generator itself (draws="aihwkit"), or
    one Philox source per tile from one call seed."""
    blocks = list(tile_blocks(layer))
    if draws == "aihwkit":
        return {(it, ot): generator for it, ot, _, _ in blocks}
    seed = _call_seed(generator, layer.weight.device)
    return {(it, ot): device_noise(layer, seed, it * layer.layout.n_out + ot, first_purpose) for it, ot, _, _ in blocks}


def _program_tile(model: DeviceModel, weights: Tensor, generator: GeneratorLike) -> ProgrammedState:
    fused = fused_program(model, weights, generator)
    if fused is not None:
        return fused
    # The programmed conductances are informative only (drift restarts from the programmed weights)
    # and would double the state: do not keep them when the model lets us.
    if "keep_conductances" in inspect.signature(model.program).parameters:
        return model.program(weights, generator=generator, keep_conductances=False)  # type: ignore[call-arg]
    return model.program(weights, generator=generator)


def _check_layer(layer: object, where: str) -> nn.Linear:
    # This module sits below AnalogLinear (which calls it), so it checks the layer's shape of
    # state rather than its class.
    if not all(hasattr(layer, a) for a in ("layout", "tile_weights", "rng_state", "hardware")):
        raise ValueError(f"{where}: layer is a {type(layer).__name__}; expected an AnalogLinear")
    return layer  # type: ignore[return-value]


def _uses_compensation(layer: nn.Linear) -> bool:
    return bool(layer.hardware.device.drift_compensation)


def check_programmable(layer: object, generator: object, draws: object = "philox") -> DeviceModel:
    """Everything `program_layer` can reject, checked before anything is drawn or changed."""
    layer = _check_layer(layer, "program")
    model = device_model_of(layer.hardware)
    # One vectorised pass, no temporaries: min and max are NaN or infinite exactly when some
    # weight is (NaN propagates), and both 0 exactly when every weight is.
    low, high = (float(v) for v in torch.aminmax(layer.weight.detach()))
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("program: the layer's target weights contain NaN or inf; expected finite weights")
    if low == 0.0 and high == 0.0:
        raise ValueError(
            f"program: the layer's target weights [{layer.out_features}, {layer.in_features}] are all "
            "zero; expected trained weights (load them before programming)"
        )
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"program: generator is a {type(generator).__name__}; expected a torch.Generator or None")
    check_draws(draws, "program")
    return model


# ------------------------------------------------------------------------------------------------
# One layer
# ------------------------------------------------------------------------------------------------


@torch.no_grad()
def program_layer(layer: nn.Linear, generator: torch.Generator | None = None, draws: str = "philox") -> nn.Linear:
    """Program `layer`'s current target weights onto its tiles (see the module docstring).

    Replaces any earlier programming. Sets ``programmed_weight`` (programmed normalised weights
    [out, in]), ``drift_alpha`` (ones [n_in_tiles, n_out_tiles], or None without compensation) and
    the ``programmed_state`` child; ``weight`` is unchanged.

    Args:
        layer: the AnalogLinear.
        generator: source of the device noise (on the weights' device type); None: torch's global RNG.
        draws: "philox" (default: Philox streams keyed by a call seed drawn from `generator`) or
            "aihwkit" (``torch.normal_`` from `generator` in AIHWKIT's order, bit-equal with AIHWKIT).

    Returns:
        `layer`.

    Raises:
        ValueError: `layer` is not an AnalogLinear; its target weights are all zero (nothing to
            program: load the weights first) or not finite; unknown device model; a generator on
            another device type; unknown `draws`.
    """
    model = check_programmable(layer, generator, draws)
    w_norm, scales = (t.detach() for t in layer.tile_weights())
    single = layer.layout.n_in == 1 and layer.layout.n_out == 1
    states: dict[tuple[int, int], ProgrammedState] = {}
    sources = _tile_sources(layer, generator, draws, 0)
    for it, ot, rows, cols in tile_blocks(layer):
        # AIHWKIT's tile holds its weights contiguous; the device model's draws follow memory order.
        tile_w = w_norm if single else w_norm[rows, cols].contiguous()
        states[(it, ot)] = _program_tile(model, tile_w, sources[(it, ot)])
    programmed = _assemble(layer, {k: s.weights for k, s in states.items()}, w_norm)
    baseline = None
    if _uses_compensation(layer):
        counter = _advance_counter(layer)
        baseline = _readouts(layer, {k: s.weights for k, s in states.items()}, counter)
    layer.programmed_weight = programmed
    layer.programmed_scales = scales.clone()
    layer.drift_alpha = None if baseline is None else torch.ones_like(baseline)
    layer.add_module(_STATE, ProgrammedTiles(states, baseline, 0.0))
    return layer


@torch.no_grad()
def drift_layer(layer: nn.Linear, t_seconds: float, generator: torch.Generator | None = None,
                draws: str = "philox") -> nn.Linear:
    """Read `layer`'s crossbar `t_seconds` s after programming: drift + read noise from the
    programmed state, then (compensation on) α(t) per tile.

    Sets ``programmed_weight`` to the drifted normalised weights [out, in] and ``drift_alpha`` to
    α(t) [n_in_tiles, n_out_tiles]. Every call restarts from the programmed state, so
    ``drift(3600); drift(60)`` is the crossbar at 60 s, not 3660 s.

    Args:
        layer: a programmed AnalogLinear.
        t_seconds: s after programming finished; finite and >= 0.
        generator: source of the device noise; None: torch's global RNG.
        draws: "philox" (default) or "aihwkit", as in :func:`program_layer`.

    Returns:
        `layer`.

    Raises:
        ValueError: `t_seconds` negative, NaN, infinite or not a number; not an AnalogLinear;
            unknown `draws`.
        RuntimeError: the layer is not programmed (call ``program()`` first).
    """
    layer = _check_layer(layer, "drift")
    t = check_time(t_seconds)
    container = programmed_state(layer)
    if container is None:
        raise RuntimeError(
            "drift: the layer is not programmed; call program() first (drift(t) reads the crossbar "
            "t seconds after programming)"
        )
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"drift: generator is a {type(generator).__name__}; expected a torch.Generator or None")
    check_draws(draws, "drift")
    model = device_model_of(layer.hardware)
    drifted: dict[tuple[int, int], Tensor] = {}
    sources = _tile_sources(layer, generator, draws, DRIFT_PURPOSE)
    for it, ot, _, _ in tile_blocks(layer):
        state = container.tile(it, ot)
        fused = fused_drift(model, state, t, sources[(it, ot)])
        drifted[(it, ot)] = fused if fused is not None else model.drift(state, t, generator=sources[(it, ot)])
    w_t = _assemble(layer, drifted, layer.weight)
    alpha = None
    if _uses_compensation(layer) and container.readout_baseline is not None:
        counter = _advance_counter(layer)
        current = _readouts(layer, drifted, counter)
        alpha = compensation_alpha(container.readout_baseline, current)
    layer.programmed_weight = w_t
    layer.drift_alpha = alpha
    container.t_seconds.fill_(t)
    return layer


def compensation_rows(layer: nn.Linear, device: torch.device | None = None) -> Tensor | None:
    """The layer's α as a periphery scale row: ``drift_alpha`` [n_in_tiles, n_out_tiles] with each
    output tile's α repeated over its output features, [n_in_tiles, out_features] (on `device`;
    None: ``drift_alpha``'s), or None when the layer holds no α. The eval-mode forward multiplies
    the tile outputs by this row after the mapping scales."""
    alpha = layer.drift_alpha
    if alpha is None:
        return None
    return alpha[:, layer.layout.row_tiles(alpha.device if device is None else device)]


def check_foldable(layer: object) -> bool:
    """Everything `fold_compensation_layer` can reject, checked before anything changes: True
    when the layer holds an α to fold, False when it has none (drift compensation off).

    Raises:
        ValueError: not an AnalogLinear; ``mapping.weight_scaling = "none"`` with α.
        RuntimeError: the layer is not programmed.
    """
    layer = _check_layer(layer, "fold_drift_compensation")
    if programmed_state(layer) is None:
        raise RuntimeError("fold_drift_compensation: the layer is not programmed; call program() and drift() first")
    if layer.drift_alpha is None:
        return False
    if layer.hardware.mapping.weight_scaling == "none":
        raise ValueError(
            "fold_drift_compensation: mapping.weight_scaling = 'none': train mode reads no mapping scale row "
            "to fold α into; expected 'row' or 'layer'"
        )
    return True


@torch.no_grad()
def fold_compensation_layer(layer: nn.Linear) -> nn.Linear:
    """Fold `layer`'s drift compensation into its programmed scales, so that train mode (which
    skips α) reads the compensated crossbar that eval mode reads.

    ``programmed_scales`` becomes ``programmed_scales * compensation_rows(layer)``, ``drift_alpha``
    ones, and the read-out baseline β0 is divided by α, so that a later ``drift(t)`` sets α(t)
    relative to the folded scales (the product of scales and α stays the mapping scales times
    β0 / mean |F(W_t)|). New tensors replace the three: a snapshot holding the old ones keeps them.
    A layer without α (drift compensation off) is left as it is: both modes already read alike.
    Folding twice is folding once (the second α is ones).

    Args:
        layer: a programmed AnalogLinear.

    Returns:
        `layer`.

    Raises:
        ValueError: not an AnalogLinear; ``mapping.weight_scaling = "none"`` with α (train mode
            then reads no scale row for α to ride on).
        RuntimeError: the layer is not programmed (call ``program()`` and ``drift()`` first).
    """
    if not check_foldable(layer):
        return layer
    container = programmed_state(layer)
    assert container is not None
    rows = compensation_rows(layer)
    alpha = layer.drift_alpha
    layer.programmed_scales = layer.programmed_scales * rows.to(layer.programmed_scales.dtype)
    if container.readout_baseline is not None:
        container.readout_baseline = container.readout_baseline / alpha.to(container.readout_baseline.dtype)
    layer.drift_alpha = torch.ones_like(alpha)
    return layer


def unprogram_layer(layer: nn.Linear) -> nn.Linear:
    """Forget the programming: the layer computes with its target weights again (no drift, no α)."""
    layer = _check_layer(layer, "unprogram")
    layer.programmed_weight = None
    layer.programmed_scales = None
    layer.drift_alpha = None
    if _STATE in layer._modules:
        del layer._modules[_STATE]
    return layer


def _assemble(layer: nn.Linear, tiles: dict[tuple[int, int], Tensor], like: Tensor) -> Tensor:
    """[out, in] matrix from the per-tile [nt, kt] matrices."""
    dtype = layer.compute_dtype  # float32 for a half layer: programmed conductances are not rounded
    if len(tiles) == 1:
        return next(iter(tiles.values())).to(dtype=dtype).contiguous()
    out = torch.empty((layer.out_features, layer.in_features), dtype=dtype, device=like.device)
    for it, ot, rows, cols in tile_blocks(layer):
        out[rows, cols] = tiles[(it, ot)]
    return out


def _readouts(layer: nn.Linear, tiles: dict[tuple[int, int], Tensor], counter: int) -> Tensor:
    """Read-out per tile [n_in_tiles, n_out_tiles] at layer call `counter`."""
    out = torch.empty((layer.layout.n_in, layer.layout.n_out), dtype=layer.compute_dtype, device=layer.weight.device)
    for it, ot, _, _ in tile_blocks(layer):
        index = it * layer.layout.n_out + ot
        out[it, ot] = readout(tiles[(it, ot)], layer.hardware, _readout_rng(layer, index, counter))
    return out


# ------------------------------------------------------------------------------------------------
# state_dict
# ------------------------------------------------------------------------------------------------


def load_programmed_state(layer: nn.Linear, state_dict: dict[str, Tensor], prefix: str) -> None:
    """Create (or remove) `layer`'s ``programmed_state`` child from the keys of `state_dict`
    under ``prefix + "programmed_state."``, so that ``load_state_dict`` restores a programmed layer
    into a fresh one (and clears it when the state_dict holds no programmed state).

    Called by ``AnalogLinear._load_from_state_dict`` before the children are loaded.

    Raises:
        ValueError: a tile key that does not fit the layer's tile layout, a missing tile, or a
            ProgrammedState with missing entries or wrong shapes.
    """
    head = prefix + _STATE + "."
    entries = {k[len(head):]: v for k, v in state_dict.items() if k.startswith(head)}
    if _STATE in layer._modules:
        del layer._modules[_STATE]
    if not entries:
        return
    device = layer.weight.device
    layout = _layout_after_load(layer, state_dict, prefix)
    per_tile: dict[str, dict[str, Tensor]] = {}
    own: dict[str, Tensor] = {}
    for key, value in entries.items():
        if "." in key:
            tile, field = key.split(".", 1)
            per_tile.setdefault(tile, {})[field] = value.detach().clone().to(device)
        else:
            own[key] = value.detach().clone().to(device)
    expected = {f"{it}_{ot}": (rows.stop - rows.start, cols.stop - cols.start) for it, ot, rows, cols in tile_blocks(layout)}
    if set(per_tile) != set(expected):
        raise ValueError(
            f"{head}*: the state_dict has tiles {sorted(per_tile)}; expected {sorted(expected)} "
            f"(the layer's tile layout {layout})"
        )
    states: dict[tuple[int, int], ProgrammedState] = {}
    for name, fields in per_tile.items():
        try:
            state = ProgrammedState.from_dict(fields)
        except ValueError as err:
            raise ValueError(f"{head}{name}: {err}") from None
        if tuple(state.weights.shape) != expected[name]:
            raise ValueError(
                f"{head}{name}.weights has shape {tuple(state.weights.shape)}; expected {expected[name]}"
            )
        it, ot = (int(s) for s in name.split("_"))
        states[(it, ot)] = state
    unknown = sorted(set(own) - {"readout_baseline", "t_seconds"})
    if unknown:
        raise ValueError(f"{head}: unknown entries {unknown}; expected readout_baseline, t_seconds")
    baseline = own.get("readout_baseline")
    shape = (layout.n_in, layout.n_out)
    if baseline is not None and tuple(baseline.shape) != shape:
        raise ValueError(f"{head}readout_baseline has shape {tuple(baseline.shape)}; expected {shape}")
    t = float(own["t_seconds"]) if "t_seconds" in own else 0.0
    layer.add_module(_STATE, ProgrammedTiles(states, baseline, t))


def _layout_after_load(layer: nn.Linear, state_dict: dict[str, Tensor], prefix: str) -> TileLayout:
    # The state_dict's hardware (extra state, applied after this hook) decides the tile layout
    # the layer will have once loaded.
    extra = state_dict.get(prefix + "_extra_state")
    if isinstance(extra, dict) and "hardware" in extra:
        hw = HardwareConfig.from_dict(json.loads(extra["hardware"]))
        return TileLayout.of(layer.in_features, layer.out_features, hw)
    return layer.layout
