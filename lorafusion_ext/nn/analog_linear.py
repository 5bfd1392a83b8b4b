"""`AnalogLinear`: a drop-in for `nn.Linear` whose MVM runs on simulated crossbar tiles."""

from __future__ import annotations

import json
import math
from typing import Any

import torch
from torch import Tensor, nn

from lorafusion_ext.hardware import HardwareConfig, Tiles, as_hardware
from lorafusion_ext.nn import input_range as ir_ops
from lorafusion_ext.nn.conditioning import post_update_step
from lorafusion_ext.nn.mapping import TileLayout, clip_and_remap, mapping_scales, normalise, quantize_weights
from lorafusion_ext.nn.out_scaling import apply_out_scaling, expand_out_scaling, out_shape_of
from lorafusion_ext.nn.tile_state import (
    compensation_rows,
    drift_layer,
    load_programmed_state,
    program_layer,
    unprogram_layer,
)
from lorafusion_ext.ops import precision
from lorafusion_ext.ops.crossbar import crossbar_mvm, crossbar_mvm_inference
from lorafusion_ext.ops.kwargs import op_kwargs

_SEED_BOUND = 2**62
_PROGRAMMED_BUFFERS = ("programmed_weight", "programmed_scales", "drift_alpha")
# Tile state left by post_update_step when the mapping is held (clip without remap).
_HELD_BUFFERS = ("held_weight", "held_scales")


def _draw_seed(generator: torch.Generator | None) -> int:
    return int(torch.randint(_SEED_BOUND, (1,), generator=generator).item())


class AnalogLinear(nn.Linear):
    """y = crossbar(x) W^T + b, with the non-idealities of `hardware` (docs/numerics.md).

    `weight` [out_features, in_features] holds the *target* weights, in the units of
    nn.Linear, and stays the source of truth; they are mapped onto tiles (per-row scales,
    normalised conductances) at every forward, so editing or training them takes effect.
    `.train()` applies the training modifier (weight noise); `.eval()` does not and applies
    drift compensation when the layer is programmed.

    Noise is drawn from a counter-based RNG whose state is the buffer `rng_state` =
    (seed, calls): the same seed gives the same noise sequence. Seed it with `seed=` or
    `generator=` at construction, or `manual_seed()`.

    Half precision: a bfloat16 / float16 layer maps its weights and computes the whole layer
    (crossbar, periphery, output scaling, bias) in float32, and rounds the output once to the
    input's dtype (`lorafusion_ext.ops.precision`). It takes inputs of its own dtype, or float32
    (then the output stays float32: how the adapter layers keep their sum in float32). The
    mapped tile weights it caches, and what `program()` stores, are float32.

    Args:
        in_features: size of each input sample (as nn.Linear).
        out_features: size of each output sample (as nn.Linear).
        bias: learn an additive digital bias (as nn.Linear).
        hardware: the crossbar configuration (default: `HardwareConfig.preset("pcm_paper")`),
            or an AIHWKIT `TorchInferenceRPUConfig` (converted by `HardwareConfig.from_aihwkit`).
        device: as nn.Linear.
        dtype: float32 or float64.
        seed: RNG seed of the layer's noise; default drawn from `generator` (or torch's RNG).
        generator: draws the default seed.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        hardware: HardwareConfig | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        self._build(in_features, out_features, bias, hardware, device, dtype, seed, generator, init=True)

    def _build(self, in_features: int, out_features: int, bias: bool, hardware: Any, device: Any, dtype: Any,
               seed: int | None, generator: torch.Generator | None, *, init: bool) -> None:
        """The constructor's body; `init=False` leaves the weight and bias uninitialised (and
        the global RNG untouched) for a caller that copies them in."""
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"AnalogLinear: {name} = {v!r}; expected a positive integer")
        if hardware is None:
            hardware = HardwareConfig.preset("pcm_paper")
        hardware = as_hardware(hardware, "AnalogLinear")
        resolved = torch.get_default_dtype() if dtype is None else dtype
        if resolved not in precision.FLOAT_DTYPES:
            raise ValueError(
                f"AnalogLinear: dtype {resolved} is not supported; expected float32, float64, bfloat16 or float16"
            )
        # nn.Linear's constructor runs reset_parameters (a Kaiming draw from the global RNG);
        # from_linear overwrites the weights, and must not shift the caller's RNG stream: the
        # same seed has to give the same LoRA init on a digital and on an analog model.
        object.__setattr__(self, "_skip_reset", not init)
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        object.__setattr__(self, "_skip_reset", False)
        self.hardware = hardware
        self.layout = TileLayout.of(in_features, out_features, hardware)
        if seed is None:
            seed = _draw_seed(generator)
        self.register_buffer("rng_state", torch.tensor([int(seed), 0], dtype=torch.int64))
        if hardware.mapping.learn_out_scaling:
            # AIHWKIT: every tile (input tile i, output tile o) learns its own digital output
            # scale, one value ([n_in, n_out]) or one per output row ([n_in, out_features]).
            shape = out_shape_of(self.layout, hardware)
            self.out_scaling = nn.Parameter(torch.ones(shape, device=self.weight.device, dtype=self.weight.dtype))
        else:
            self.register_parameter("out_scaling", None)
        self._init_input_range()
        # Drift compensation scales [n_in_tiles, n_out_tiles] of the programmed crossbar,
        # applied in eval only; None until programmed (see lorafusion_ext.devices).
        self.register_buffer("drift_alpha", None)
        self.register_buffer("programmed_weight", None)
        # The mapping scales [n_in_tiles, out] the programmed weights were normalised with.
        self.register_buffer("programmed_scales", None)
        # AIHWKIT keeps a tile's mapping scales when its weights are clipped without a remap:
        # post_update_step then holds the clipped normalised weights [out, in] and their
        # scales [n_in_tiles, out] (see tile_weights); None otherwise.
        self.register_buffer("held_weight", None)
        self.register_buffer("held_scales", None)

    def _init_input_range(self) -> None:
        """The learned input ranges of `hardware.input_range` (AIHWKIT: one per tile):
        `input_range` [n_in_tiles, n_out_tiles] at `init_value`, a parameter when learned (else a
        buffer), and `input_range_update_idx` [n_in_tiles, n_out_tiles], the data batches each
        range was initialised from; both None without input ranges."""
        ir = self.hardware.input_range
        for name in ("input_range", "input_range_update_idx", "input_range_x_min", "input_range_x_max"):
            self._parameters.pop(name, None)
            self._buffers.pop(name, None)
            self.__dict__.pop(name, None)
        # AIHWKIT-Lightning's fast mode: the running input extremes [n_in_tiles, n_out_tiles] its
        # ranges come from (start -/+1e-5, as Lightning's `init_ir`); None otherwise.
        self.register_buffer("input_range_x_min", None)
        self.register_buffer("input_range_x_max", None)
        if ir is None:
            self.register_parameter("input_range", None)
            self.register_buffer("input_range_update_idx", None)
            return
        shape = (self.layout.n_in, self.layout.n_out)
        dtype = precision.compute_dtype(self.weight.dtype)
        value = torch.full(shape, float(ir.init_value), device=self.weight.device, dtype=dtype)
        if ir.learn_input_range:
            self.input_range = nn.Parameter(value)
        else:
            self.register_buffer("input_range", value)
        self.register_buffer("input_range_update_idx", torch.zeros(shape, device=self.weight.device, dtype=dtype))
        if ir.fast_mode:
            x_min = torch.zeros(shape, device=self.weight.device, dtype=dtype)
            x_min -= 1e-5
            x_max = torch.zeros(shape, device=self.weight.device, dtype=dtype)
            x_max += 1e-5
            self.register_buffer("input_range_x_min", x_min)
            self.register_buffer("input_range_x_max", x_max)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        hardware: HardwareConfig | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> "AnalogLinear":
        """An AnalogLinear with `linear`'s weights (copied; conditioned by the hardware's
        clip/remap recipe when it has one), on its device and dtype."""
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"AnalogLinear.from_linear: linear is a {type(linear).__name__}; expected nn.Linear")
        layer = cls.__new__(cls)
        layer._build(linear.in_features, linear.out_features, linear.bias is not None, hardware,
                     linear.weight.device, linear.weight.dtype, seed, generator, init=False)
        with torch.no_grad():
            # Conditioned in the compute dtype; a half layer stores the result rounded once.
            w = precision.upcast(linear.weight.detach())
            layer.weight.copy_(clip_and_remap(w, layer.layout, layer.hardware))
            if linear.bias is not None:
                layer.bias.copy_(linear.bias.detach())
        layer.weight.requires_grad_(linear.weight.requires_grad)
        if linear.bias is not None:
            layer.bias.requires_grad_(linear.bias.requires_grad)
        layer.train(linear.training)
        return layer

    def manual_seed(self, seed: int) -> "AnalogLinear":
        """Restart the layer's noise sequence from `seed`."""
        with torch.no_grad():
            self.rng_state.copy_(torch.tensor([int(seed), 0], dtype=torch.int64))
        return self

    # ------------------------------------------------------------------ forward
    def _next_rng(self) -> Tensor:
        rng = self.rng_state.clone()
        with torch.no_grad():
            self.rng_state[1] += 1
        return rng

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the layer computes in: float32 for a bfloat16 / float16 layer, else its own."""
        return precision.compute_dtype(self.weight.dtype)

    def tile_weights(self) -> tuple[Tensor, Tensor]:
        """(normalised tile weights [out, in], mapping scales [n_in_tiles, out]) of the
        current target weights, in `compute_dtype` (differentiable in `weight`)."""
        frozen = not (self.weight.requires_grad and torch.is_grad_enabled())
        if frozen and not torch.compiler.is_compiling():
            # Frozen weights (HWA-LoRA, evaluation): map once per weight version, not per call.
            key = (self.weight.data_ptr(), self.weight._version, self.weight.dtype, self.hardware,
                   None if self.held_scales is None else (self.held_scales.data_ptr(), self.held_scales._version,
                                                          self.held_weight.data_ptr(), self.held_weight._version))
            cached = self.__dict__.get("_tile_cache")
            if cached is not None and cached[0] == key:
                return cached[1], cached[2]
        weight = precision.upcast(self.weight)
        if self.held_scales is not None:
            scales = precision.upcast(self.held_scales)
            held = precision.upcast(self.held_weight)
            w_norm = normalise(weight, scales, self.layout)
            # The held normalised weights are the tile's exact state as long as `weight` is
            # still their product with the scales (a division cannot always give them back);
            # adding the zero (weight - weight) keeps the gradient of `weight`.
            cols = self.layout.column_tiles(weight.device)
            if torch.equal(weight.detach(), held * scales.t()[:, cols]):
                w_norm = held + (w_norm - w_norm.detach())
            w_norm = w_norm.contiguous()
        else:
            scales = mapping_scales(weight, self.layout, self.hardware)
            w_norm = normalise(weight, scales, self.layout).contiguous()
        if self.hardware.weight_res > 0:
            w_norm = quantize_weights(w_norm, self.hardware.weight_res)
        if frozen and not torch.compiler.is_compiling():
            self.__dict__["_tile_cache"] = (key, w_norm.detach(), scales.detach())
        return w_norm, scales

    def _operands(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor | None]:
        """(normalised tile weights [out, in], digital scale rows [S, n_in_tiles, out], learned
        out-scaling still to apply outside the op or None), in `compute_dtype`. A constant
        learned scale (no gradient wanted) is folded into the scale rows."""
        if self.programmed_weight is not None:
            # The crossbar holds what was programmed; editing `weight` needs a new program().
            w_norm, scales = precision.upcast(self.programmed_weight), precision.upcast(self.programmed_scales)
        else:
            w_norm, scales = self.tile_weights()
        rows = [scales]
        if not self.training and self.drift_alpha is not None:
            rows.append(precision.upcast(compensation_rows(self, device)))
        if self.hardware.mapping.weight_scaling == "none" and len(rows) == 1:
            rows = []
        if not rows:
            out_scales = scales.new_empty((0, self.layout.n_in, self.out_features))
        elif len(rows) == 1:
            out_scales = rows[0].unsqueeze(0)
        else:
            out_scales = torch.stack(rows)
        alpha = self.out_scaling
        if alpha is not None and not (alpha.requires_grad and torch.is_grad_enabled()):
            # A constant learned scale is one more periphery scale row: the fused kernel applies
            # it after the mapping (and drift) scales, before the input tiles are summed.
            out_scales = torch.cat([out_scales, precision.upcast(expand_out_scaling(alpha, self.layout))[None]])
            alpha = None
        return w_norm, out_scales, alpha

    def _inference_key(self) -> tuple:
        """What the operands of a no-gradient call depend on: every tensor they are computed
        from (storage and in-place version), the mode and the hardware object."""
        def ver(t: Tensor | None) -> tuple | None:
            return None if t is None else (t.data_ptr(), t._version, t.dtype, t.device)
        buffers, params = self._buffers, self._parameters
        return (self.training, id(self.hardware), ver(params["weight"]), ver(params["bias"]),
                ver(params["out_scaling"]), ver(buffers["programmed_weight"]), ver(buffers["programmed_scales"]),
                ver(buffers["drift_alpha"]), ver(buffers["held_weight"]), ver(buffers["held_scales"]))

    def _forward_no_grad(self, x: Tensor) -> Tensor:
        """The forward when no gradient is wanted (generation, evaluation): the same op call with
        the same operands as `forward`'s general path, bit for bit, with the per-call Python
        work cut down for one-token decode steps (M = 1), where it would cost more than the
        MVM. The operands (tile weights, scale rows, bias, the op's parameters) are built once
        per state of the layer (`_inference_key`) and the op is called below autograd."""
        key = self._inference_key()
        plan = self.__dict__.get("_inference_plan")
        if plan is None or plan[0] != key or plan[1] is not self.hardware:
            with torch.no_grad():
                w_norm, out_scales, _ = self._operands(x.device)
                bias = precision.upcast(self.bias)
                plan = (key, self.hardware, w_norm.detach().contiguous(), out_scales.detach().contiguous(),
                        None if bias is None else bias.detach().contiguous(), op_kwargs(self._op_hardware())["params"],
                        torch.tensor([0, 1], dtype=torch.int64, device=self.rng_state.device))
            self.__dict__["_inference_plan"] = plan
        _, _, w_norm, out_scales, bias, params, step = plan
        sample_rows = self.hardware.sample_rows(x.shape, self.training)
        if sample_rows:  # per-sample weight noise: the rows per sample depend on the input's shape
            params = op_kwargs(self._op_hardware(), modifier_sample_rows=sample_rows)["params"]
        if w_norm.device != x.device:
            raise ValueError(f"AnalogLinear: input is on {x.device}; expected the layer's device ({w_norm.device})")
        out_dtype = x.dtype
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).to(w_norm.dtype).contiguous()
        if x2.shape[0] == 0:
            raise ValueError(f"AnalogLinear: input has shape {tuple(x.shape)}: an empty batch; expected at least one token")
        # The op reads (seed, calls) before it returns; the counter moves on after the call.
        y = crossbar_mvm_inference(x2, w_norm, out_scales, bias, self.rng_state, params, training=self.training)
        self.rng_state.add_(step)
        return y.reshape(*lead, self.out_features).to(out_dtype)

    def forward(self, x: Tensor) -> Tensor:
        """y [..., out_features] for x [..., in_features] (same dtype as the layer): the crossbar
        MVM of the programmed weights when programmed, else of the current target weights."""
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"AnalogLinear: input has shape {tuple(x.shape)}; expected [..., {self.in_features}]"
            )
        cdt = self.compute_dtype
        allowed = precision.allowed_with(self.weight.dtype)
        if x.dtype not in allowed:
            names = " or ".join(str(d) for d in allowed)
            raise ValueError(
                f"AnalogLinear: input dtype {x.dtype} differs from the layer's {self.weight.dtype}; expected {names}"
            )
        if self.hardware.input_range is not None:
            return self._forward_input_range(x)
        if not torch.compiler.is_compiling() and not (torch.is_grad_enabled() and self._wants_grad(x)):
            return self._forward_no_grad(x)
        out_dtype = x.dtype
        x = x.to(cdt)
        w_norm, out_scales, alpha = self._operands(x.device)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if x2.shape[0] == 0:
            raise ValueError(f"AnalogLinear: input has shape {tuple(x.shape)}: an empty batch; expected at least one token")
        if alpha is None:
            y = crossbar_mvm(
                x2.contiguous(), w_norm.contiguous(), out_scales.contiguous(), precision.upcast(self.bias),
                self._next_rng(), self._op_hardware(), training=self.training,
                sample_rows=self.hardware.sample_rows(x.shape, self.training),
            )
            return y.reshape(*lead, self.out_features).to(out_dtype)
        # Trainable scales: each input tile's output comes back separately and is scaled per
        # tile here, in AIHWKIT's order (tile output * alpha, summed over input tiles, + bias),
        # so that the alphas' gradients are AIHWKIT's too.
        parts = crossbar_mvm(
            x2.contiguous(), w_norm.contiguous(), out_scales.contiguous(), None, self._next_rng(),
            self._op_hardware(), training=self.training, per_input_tile=True,
            sample_rows=self.hardware.sample_rows(x.shape, self.training),
        )
        y = apply_out_scaling(parts, precision.upcast(alpha), self.layout, self.hardware)
        if self.bias is not None:
            y = y + precision.upcast(self.bias)
        return y.reshape(*lead, self.out_features).to(out_dtype)

    def _forward_input_range(self, x: Tensor) -> Tensor:
        """The forward with learned input ranges (`nn.input_range`), in AIHWKIT's order per tile:
        in training the ranges first take their data initialisation; each output tile column o
        gets the DAC input concat_i(clamp(x_i, r[i, o]) / r[i, o]); each tile's output is
        multiplied by fl(r * ms), then (eval, programmed) by the drift compensation, then by the
        learned out-scaling, before the input tiles are summed and the bias added. When no
        gradient is needed, these factors are one more periphery row of the op, and the clamp and
        scale run in the kernel's DAC loop (CPU and CUDA; one call for the whole layer)."""
        ir = self.hardware.input_range
        assert ir is not None and self.input_range is not None
        out_dtype = x.dtype
        x = x.to(self.compute_dtype)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if x2.shape[0] == 0:
            raise ValueError(f"AnalogLinear: input has shape {tuple(x.shape)}: an empty batch; expected at least one token")
        if x2.device != self.weight.device:
            raise ValueError(f"AnalogLinear: input is on {x2.device}; expected the layer's device ({self.weight.device})")
        if self.training and ir.fast_mode:
            ir_ops.init_fast(self.input_range.data, self.input_range_update_idx, self.input_range_x_min,
                             self.input_range_x_max, x2, self.layout, ir)
        elif self.training:
            ir_ops.init_from_data(self.input_range.data, self.input_range_update_idx, x2, self.layout, ir)
        ranges = precision.upcast(self.input_range)
        if self.programmed_weight is not None:
            w_norm, scales = precision.upcast(self.programmed_weight), precision.upcast(self.programmed_scales)
        else:
            w_norm, scales = self.tile_weights()
        drift = precision.upcast(self.drift_alpha) if (not self.training and self.drift_alpha is not None) else None
        alpha = self.out_scaling
        alpha = None if alpha is None else precision.upcast(alpha)
        bias = precision.upcast(self.bias)
        layout, hw = self.layout, self.hardware
        # Any parameter (the bias too) or x: the fused call below runs without autograd.
        grad = torch.is_grad_enabled() and (self._wants_grad(x2) or w_norm.requires_grad)
        sample_rows = hw.sample_rows(x.shape, self.training)
        if not grad:
            # One call of the op for every tile: the kernel clamps and scales each tile's input in
            # its DAC loop, and r comes back in through the first periphery row, fl(r * ms).
            with torch.no_grad():
                rows = [ir_ops.range_rows(ranges, scales, hw, layout)]
                if drift is not None:
                    rows.append(precision.upcast(compensation_rows(self, x2.device)))
                if alpha is not None:
                    rows.append(expand_out_scaling(alpha, layout))
                params = op_kwargs(self._op_hardware(),
                                   **({"modifier_sample_rows": sample_rows} if sample_rows else {}))["params"]
                y = crossbar_mvm_inference(
                    x2.contiguous(), w_norm.detach().contiguous(), torch.stack(rows).contiguous(),
                    None if bias is None else bias.detach().contiguous(), self.rng_state, params,
                    training=self.training, input_range=ranges.detach().contiguous(),
                )
                self.rng_state[1] += 1
            return y.reshape(*lead, self.out_features).to(out_dtype)
        sub_hw = self._column_hardware()
        views = ir_ops.tile_ranges(ranges, layout)
        n_rows = w_norm.shape[0]
        outs = []
        o0 = 0
        clips_all = ([[ir_ops.ClipCount() for _ in range(layout.n_in)] for _ in range(layout.n_out)]
                     if ir.manage_output_clipping and ranges.requires_grad else None)
        inputs = ir_ops.scaled_inputs(x2, views, layout, ir, clips_all)
        for o, size in enumerate(layout.out_sizes):
            w_o = w_norm if layout.n_out == 1 else w_norm[o0 : o0 + size]
            clips = None if clips_all is None else clips_all[o]
            xs = inputs[o]
            parts = crossbar_mvm(
                xs.contiguous(), w_o.contiguous(), w_o.new_empty((0, layout.n_in, size)), None, self._next_rng(),
                sub_hw, training=self.training, per_input_tile=True, sample_rows=sample_rows,
            )
            col = []
            # unbind: one stacked gradient for the tiles' outputs, not a zero-filled copy per tile.
            for i, y_t in enumerate(parts.unbind(0)):
                if clips is not None and hw.adc.bound is not None:
                    b = hw.adc.bound
                    clips[i].clipped = int(((y_t >= b) | (y_t <= -b)).count_nonzero())
                piece = y_t * ir_ops.tile_scale(views, scales, hw, i, o, o0, size)
                if drift is not None:
                    piece = piece * drift[i, o : o + 1]
                if alpha is not None:
                    piece = piece * self._alpha_columns(alpha, o, o0, size)[i]
                col.append(piece)
            outs.append(col)
            o0 += size
        assert o0 == n_rows
        # AIHWKIT's TileModuleArray: concat over output tiles, summed over input tiles, + bias.
        y = None
        for i in range(layout.n_in):
            row = outs[0][i] if len(outs) == 1 else torch.cat([c[i] for c in outs], dim=-1)
            y = row if y is None else y + row
        assert y is not None
        if bias is not None:
            y = y + bias
        return y.reshape(*lead, self.out_features).to(out_dtype)

    def _alpha_columns(self, alpha: Tensor, o: int, o0: int, size: int) -> Tensor:
        """Output tile o's learned out-scaling per input tile: [n_in_tiles, size] (columnwise) or
        [n_in_tiles, 1] (one per tile), as AIHWKIT views a tile's alpha against its output."""
        if self.hardware.mapping.out_scaling_columnwise:
            return alpha[:, o0 : o0 + size]
        return alpha[:, o : o + 1]

    def _op_hardware(self) -> HardwareConfig:
        """The configuration the op runs with in the current mode: `hardware`, with
        AIHWKIT-Lightning's output noise resolved for this layer (`out_noise_in_eval` False: none
        in eval; `out_noise_split`: out_noise / sqrt(n_in_tiles) per input tile)."""
        hw = self.hardware
        cached = self.__dict__.get("_op_hw")
        if cached is None or cached[0] is not hw or cached[1] != self.training:
            cached = (hw, self.training, hw.for_call(self.layout.n_in, self.training))
            self.__dict__["_op_hw"] = cached
        return cached[2]

    def _column_hardware(self) -> HardwareConfig:
        """The configuration of one output tile column's op call (input tiles only)."""
        hw = self._op_hardware()
        if self.layout.n_out == 1:
            return hw
        cached = self.__dict__.get("_column_hw")
        if cached is None or cached[0] is not hw:
            cached = (hw, hw.replace(tiles=Tiles(hw.tiles.max_in, None)))
            self.__dict__["_column_hw"] = cached
        return cached[1]

    def _wants_grad(self, x: Tensor) -> bool:
        """Whether a gradient may flow through this call (x or a parameter requires one)."""
        return x.requires_grad or any(p is not None and p.requires_grad for p in self._parameters.values())

    # ------------------------------------------------------------------ state
    def get_extra_state(self) -> dict[str, Any]:
        return {"hardware": json.dumps(self.hardware.to_dict())}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        hw = HardwareConfig.from_dict(json.loads(state["hardware"]))
        if hw != self.hardware:
            if (hw.input_range is None) != (self.hardware.input_range is None):
                raise ValueError(
                    f"AnalogLinear.load_state_dict: the saved hardware.input_range is {hw.input_range!r}, this "
                    f"layer's is {self.hardware.input_range!r}; build the layer with the saved hardware "
                    "(HardwareConfig.from_dict) to load learned input ranges")
            self.hardware = hw
            self.layout = TileLayout.of(self.in_features, self.out_features, hw)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        # Programmed state is optional: it is restored when saved and cleared when not.
        for name in _PROGRAMMED_BUFFERS + _HELD_BUFFERS:
            key = prefix + name
            if key in state_dict:
                value = state_dict[key]
                setattr(self, name, value.detach().clone().to(self.weight.device))
            else:
                setattr(self, name, None)
        # Learned out-scaling saved before it was per tile ([1] or [out_features] for a layer
        # of one input tile) loads as the per-tile shape.
        key = prefix + "out_scaling"
        if self.out_scaling is not None and key in state_dict:
            old = state_dict[key]
            shape = tuple(self.out_scaling.shape)
            if tuple(old.shape) != shape and self.layout.n_in == 1 and old.dim() == 1:
                if old.numel() == 1 or (old.numel() == shape[1] and self.hardware.mapping.out_scaling_columnwise):
                    state_dict[key] = old.reshape(1, -1).expand(shape).clone()
        # The per-tile programmed state lives in a `programmed_state` child that exists only once
        # programmed: create (or drop) it from the keys before the children are loaded.
        load_programmed_state(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        for name in _PROGRAMMED_BUFFERS + _HELD_BUFFERS:
            if prefix + name in unexpected_keys:
                unexpected_keys.remove(prefix + name)

    def extra_repr(self) -> str:
        tiles = f"{self.layout.n_in}x{self.layout.n_out} tiles"
        ranges = "" if self.input_range is None else ", learned input ranges" if isinstance(
            self.input_range, nn.Parameter) else ", input ranges"
        return f"{super().extra_repr()}, {tiles}{ranges}, programmed={self.programmed_weight is not None}"

    def reset_parameters(self) -> None:
        # nn.Linear's init, so a fresh AnalogLinear is initialised like a fresh nn.Linear.
        if self.__dict__.get("_skip_reset", False):
            return
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_features
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    # ------------------------------------------------------------------ training
    def post_update_step(self) -> "AnalogLinear":
        """AIHWKIT's per-step weight conditioning (`hardware.mapping.clip_when == "update"`):
        call after each optimizer step (or use `lorafusion_ext.nn.clip_after_steps`). See
        `lorafusion_ext.nn.conditioning.post_update_step`. A no-op for other configurations."""
        post_update_step(self)
        return self

    # ------------------------------------------------------------------ deployment
    def program(self, generator: torch.Generator | None = None, draws: str = "philox") -> "AnalogLinear":
        """Program the current target weights onto the tiles (device noise keyed by `generator`,
        default torch's global RNG; `draws` "philox" or "aihwkit"); see
        `lorafusion_ext.nn.tile_state.program_layer`."""
        return program_layer(self, generator, draws)

    def drift(self, t_seconds: float, generator: torch.Generator | None = None,
              draws: str = "philox") -> "AnalogLinear":
        """Read the programmed crossbar `t_seconds` (s, >= 0) after programming; raises
        RuntimeError when not programmed. See `lorafusion_ext.nn.tile_state.drift_layer`."""
        return drift_layer(self, t_seconds, generator, draws)

    def unprogram(self) -> "AnalogLinear":
        """Forget the programming: compute with the target weights again."""
        return unprogram_layer(self)
