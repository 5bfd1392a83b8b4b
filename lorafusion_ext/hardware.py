"""Hardware configuration of an analog crossbar layer (docs/numerics.md).

`HardwareConfig` is a validated, immutable dataclass made of parts: the DAC, the ADC, the
output noise, noise and bound management, the weight mapping, the tile size, the training
modifier and the conductance device model. All values are in AIHWKIT's normalised units:
inputs in units of the DAC range, weights in units of the largest conductance, outputs in
units of the ADC range.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Sequence

BoundManagementMode = Literal["none", "iterative_global", "iterative_per_row"]
NoiseManagementMode = Literal["none", "abs_max", "max", "constant"]
WeightScaling = Literal["none", "layer", "row"]
ModifierKind = Literal["none", "add_normal", "mult_normal", "discretize"]
ClipWhen = Literal["conversion", "update"]
ClipScope = Literal["tile", "layer", "channel"]

_BM_CODES = {"none": 0, "iterative_global": 1, "iterative_per_row": 2}
_NM_CODES = {"none": 0, "abs_max": 1, "max": 2, "constant": 3}


def _check_bits(owner: str, bits: int | None) -> None:
    if bits is None:
        return
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"{owner}.bits = {bits!r}; expected an integer in 2..16, or None (no quantisation)")


def _check_nonneg(owner: str, name: str, value: float, positive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{owner}.{name} = {value!r}; expected a finite number")
    if positive and value <= 0:
        raise ValueError(f"{owner}.{name} = {value!r}; expected a value > 0")
    if value < 0:
        raise ValueError(f"{owner}.{name} = {value!r}; expected a value >= 0")


def _check_finite(owner: str, name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{owner}.{name} = {value!r}; expected a finite number")


def _check_converter(owner: str, bits: int | None, bound: float | None) -> None:
    _check_bits(owner, bits)
    if bound is None:
        if bits is not None:
            raise ValueError(f"{owner}.bound = None with bits = {bits}; a quantising converter needs a bound > 0")
        return
    _check_nonneg(owner, "bound", bound, positive=True)


def _max_passes(bm: "BoundManagement", dac: "DAC") -> int:
    """Bound-management passes at most: reductions 1, 2, 4, ... up to the first one that
    exceeds min(max_factor, max_res / Δin), as AIHWKIT's loop (at most 32)."""
    if bm.mode == "none":
        return 1
    limit = bm.max_factor
    step = 2.0 * (dac.bound or 0.0) * dac.resolution
    if step > 0:
        limit = min(limit, bm.max_res / step)
    passes, reduction = 1, 1.0
    while reduction <= limit:
        reduction *= 2.0
        passes += 1
    return min(passes, 32)


def _freeze(value: Any) -> Any:
    """JSON lists back to tuples, at any depth (the config must stay hashable)."""
    return tuple(_freeze(v) for v in value) if isinstance(value, (list, tuple)) else value


def _bits_to_res(bits: int | None) -> float:
    # AIHWKIT's convention: 2^bits - 2 steps over the symmetric range (8 bit: 1/254).
    return 0.0 if bits is None else 1.0 / (2**bits - 2)


@dataclass(frozen=True)
class DAC:
    """Input digital-to-analog converter: `bits` (None: not quantised), clamp at ±`bound`
    (None: no clamp; needs bits None); `noise`: std of a Gaussian added to every DAC output
    after the clamp, in units of the DAC range, fresh per element, pass and tile (AIHWKIT's
    `inp_noise`; CPU kernel); `asymmetry`: negative inputs (noise included) leave the DAC
    scaled by 1 - asymmetry (AIHWKIT's `inp_asymmetry`); `sto_round`: round stochastically,
    rint(v/step + U(-1/2, 1/2)) (AIHWKIT's `inp_sto_round`; CPU kernel)."""

    bits: int | None = 8
    bound: float | None = 1.0
    asymmetry: float = 0.0
    noise: float = 0.0
    sto_round: bool = False

    def __post_init__(self) -> None:
        _check_converter("dac", self.bits, self.bound)
        if not isinstance(self.sto_round, bool):
            raise ValueError(f"dac.sto_round = {self.sto_round!r}; expected a bool")
        _check_finite("dac", "asymmetry", self.asymmetry)
        _check_nonneg("dac", "noise", self.noise)

    @property
    def resolution(self) -> float:
        """Step as a fraction of the full range 2·bound (0: no quantisation)."""
        return _bits_to_res(self.bits)


@dataclass(frozen=True)
class ADC:
    """Output analog-to-digital converter: `bits` (None: not quantised), clamp at ±`bound`
    (None: no clamp; needs bits None); `asymmetry`: negative analog outputs are scaled by
    1 - asymmetry before the noise and the ADC (AIHWKIT's `out_asymmetry`; inference only: it
    has no gradient here); `sto_round`: round stochastically, rint(v/step + U(-1/2, 1/2))
    (AIHWKIT's `out_sto_round`; CPU kernel)."""

    bits: int | None = 8
    bound: float | None = 12.0
    asymmetry: float = 0.0
    sto_round: bool = False

    def __post_init__(self) -> None:
        _check_converter("adc", self.bits, self.bound)
        if not isinstance(self.sto_round, bool):
            raise ValueError(f"adc.sto_round = {self.sto_round!r}; expected a bool")
        _check_finite("adc", "asymmetry", self.asymmetry)

    @property
    def resolution(self) -> float:
        """Step as a fraction of the full range 2·bound (0: no quantisation)."""
        return _bits_to_res(self.bits)


@dataclass(frozen=True)
class BoundManagement:
    """What happens when the ADC saturates: re-run with the input scaled down by 2 each pass.

    `iterative_global` is AIHWKIT's torch tile (one saturating token re-runs the whole call),
    `iterative_per_row` re-runs only the saturating tokens (AIHWKIT's C++ tile; batch
    independent). Passes stop once the reduction exceeds `max_factor` or `max_res / Δin`.
    """

    mode: BoundManagementMode = "iterative_global"
    max_factor: float = 1000.0
    max_res: float = 0.25

    def __post_init__(self) -> None:
        if self.mode not in _BM_CODES:
            raise ValueError(f"bound_management.mode = {self.mode!r}; expected one of {sorted(_BM_CODES)}")
        _check_nonneg("bound_management", "max_factor", self.max_factor, positive=True)
        _check_nonneg("bound_management", "max_res", self.max_res, positive=True)


@dataclass(frozen=True)
class NoiseManagement:
    """Input scaling before the DAC: `abs_max` scales each token by 1/max|x|, `max` by
    1/max x (signed: AIHWKIT's MAX), clamped at `threshold` when > 0; a scale <= 0 is 1.
    `constant` scales every token by 1/`threshold` (by 1 when `threshold` is 0), as AIHWKIT's
    CONSTANT; the output is scaled back."""

    mode: NoiseManagementMode = "abs_max"
    threshold: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in _NM_CODES:
            raise ValueError(f"noise_management.mode = {self.mode!r}; expected one of {sorted(_NM_CODES)}")
        _check_nonneg("noise_management", "threshold", self.threshold)


@dataclass(frozen=True)
class Mapping_:
    """How weights become conductances.

    `weight_scaling`: "row" maps each output row so that max|W_row| = omega (ms_o in docs/numerics.md),
    "layer" one scale per tile, "none" programs the weights as they are.

    Clipping of each tile's normalised weights at min(clip_sigma·std, clip_fixed) (a term
    that is 0 is off; clip_sigma 0 with clip_fixed > 0 is AIHWKIT's FIXED_VALUE clip) and
    `remap` (re-normalise to max |W| 1 each tile row with weight_scaling "row": AIHWKIT's
    CHANNELWISE_SYMMETRIC; each tile with "layer": LAYERWISE_SYMMETRIC), applied when
    `clip_when` says:

    - "conversion": once, at `from_linear`, iterated to the fixed point (this package's
      `pcm_paper` recipe);
    - "update": never at conversion; once per `AnalogLinear.post_update_step()`, i.e. after
      each optimizer step, as AIHWKIT's `post_update_step` (configs from `from_aihwkit`).

    `learn_out_scaling`: a trainable digital output scale per tile, [n_in_tiles, n_out_tiles]
    (per tile row if `out_scaling_columnwise`: [n_in_tiles, out_features]).

    `clip_scope`: over what the clip level clip_sigma · std is taken: "tile" (AIHWKIT: each
    tile's normalised weights), "layer" (AIHWKIT-Lightning's LAYER_GAUSSIAN: all of the layer's
    target weights) or "channel" (Lightning's LAYER_GAUSSIAN_PER_CHANNEL: each output row of the
    target weights, across its tiles). The last two clip the target weights in their own units
    and need clip_when "update", a remap and no clip_fixed.
    """

    weight_scaling: WeightScaling = "row"
    omega: float = 1.0
    clip_sigma: float = 0.0
    remap: bool = False
    learn_out_scaling: bool = False
    out_scaling_columnwise: bool = False
    clip_fixed: float = 0.0
    clip_when: ClipWhen = "conversion"
    clip_scope: ClipScope = "tile"

    def __post_init__(self) -> None:
        if self.clip_scope not in ("tile", "layer", "channel"):
            raise ValueError(f"mapping.clip_scope = {self.clip_scope!r}; expected 'tile', 'layer' or 'channel'")
        if self.clip_scope != "tile" and not (self.clip_when == "update" and self.remap and self.clip_fixed == 0
                                              and self.clip_sigma > 0 and not self.learn_out_scaling):
            raise ValueError(
                f"mapping.clip_scope = {self.clip_scope!r} needs clip_sigma > 0, clip_when 'update', remap = True, "
                "clip_fixed 0 and no learned out-scaling (AIHWKIT-Lightning's Gaussian clips); got "
                f"clip_sigma={self.clip_sigma}, clip_when={self.clip_when!r}, remap={self.remap}, "
                f"clip_fixed={self.clip_fixed}, learn_out_scaling={self.learn_out_scaling}")
        if self.weight_scaling not in ("none", "layer", "row"):
            raise ValueError(f"mapping.weight_scaling = {self.weight_scaling!r}; expected 'none', 'layer' or 'row'")
        _check_nonneg("mapping", "omega", self.omega, positive=True)
        _check_nonneg("mapping", "clip_sigma", self.clip_sigma)
        _check_nonneg("mapping", "clip_fixed", self.clip_fixed)
        if self.clip_when not in ("conversion", "update"):
            raise ValueError(f"mapping.clip_when = {self.clip_when!r}; expected 'conversion' or 'update'")
        if self.remap and self.clip_when == "update" and (self.weight_scaling == "none" or self.omega != 1.0):
            raise ValueError(
                "mapping.remap with clip_when='update' needs weight_scaling='row' (channelwise) or 'layer' "
                "(layerwise) and omega=1 (a remapped row or tile has max |W| = 1); got "
                f"weight_scaling={self.weight_scaling!r}, omega={self.omega}"
            )

    @property
    def clips(self) -> bool:
        """Whether any clipping is configured."""
        return self.clip_sigma > 0 or self.clip_fixed > 0


@dataclass(frozen=True)
class Tiles:
    """Physical tile size: at most `max_in` inputs (rows) and `max_out` outputs (columns) per
    tile; None: one tile per layer. Each tile has its own periphery."""

    max_in: int | None = None
    max_out: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_in", "max_out"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"tiles.{name} = {v!r}; expected a positive integer or None")


@dataclass(frozen=True)
class Modifier:
    """Training-time weight modifier (AIHWKIT's, applied in `.train()` only): `add_normal`
    adds std·max|W_tile|·N(0,1), redrawn each forward and shared by the batch; `mult_normal`
    adds W·std·N(0,1) (relative to each weight, no max|W|), redrawn likewise; `discretize`
    rounds each tile's weights to steps of res·2·max|W_tile| (`res`: a resolution < 1 or a
    number of states > 1), straight-through in the backward.

    `per_batch_sample` (add_normal, mult_normal; AIHWKIT's `modifier.per_batch_sample`): a fresh
    weight-noise draw for every sample of the batch, the input's first dimension (an input
    [B, L, in] gets B draws, each shared by its L tokens; [B, in] gets one per row). It costs a
    noise draw and a GEMM per sample. `sto_round` (discretize; AIHWKIT's `modifier.sto_round`):
    round W / step + U(-1/2, 1/2) instead of W / step."""

    kind: ModifierKind = "none"
    std: float = 0.0
    res: float = 0.0
    per_batch_sample: bool = False
    sto_round: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("none", "add_normal", "mult_normal", "discretize"):
            raise ValueError(
                f"modifier.kind = {self.kind!r}; expected 'none', 'add_normal', 'mult_normal' or 'discretize'")
        _check_nonneg("modifier", "std", self.std)
        _check_nonneg("modifier", "res", self.res)
        if self.kind == "discretize" and self.res <= 0:
            raise ValueError(f"modifier.res = {self.res!r} with kind 'discretize'; expected a value > 0")
        for name in ("per_batch_sample", "sto_round"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"modifier.{name} = {getattr(self, name)!r}; expected a bool")
        if self.per_batch_sample and self.kind not in ("add_normal", "mult_normal"):
            raise ValueError(
                f"modifier.per_batch_sample = True with kind {self.kind!r}; expected kind 'add_normal' or "
                "'mult_normal' (per-sample draws of weight noise)")
        if self.sto_round and self.kind != "discretize":
            raise ValueError(f"modifier.sto_round = True with kind {self.kind!r}; expected kind 'discretize'")


@dataclass(frozen=True)
class IRDrop:
    """Time-dependent IR drop of the crossbar's wires in inference (AIHWKIT 1.1's
    `TorchInferenceRPUConfigIRDropT`, one-pass PWM input; docs/numerics.md, "IR drop"). Each
    input drives its row as a pulse of width |x| over `time_steps` steps; the rows of a column,
    cut into `segments` Thevenin sources joined by the wire resistance `scale`·`rs` Ω per cell,
    feed the column's ADC (even columns at one end, odd at the other) at `v_read` V; the
    integrated current replaces the tile's GEMM. The tile's physical rows are
    `tiles.max_in` (the input zero-padded symmetrically to it) or the layer's inputs.

    `scale` 0 turns it off (the default; AIHWKIT's `forward.ir_drop`). Off in training, as
    AIHWKIT. `time_step_scale` scales the (2^bits_DAC)/2 steps; `integration` "trapz" or
    "sum"; `adc_frequency` > 0 quantises the integrated current (AIHWKIT's `adc_quantization`
    with `adc_frequency`); `g_max`, `g_min` (µS) the conductance pair's converter."""

    scale: float = 0.0
    rs: float = 0.15
    segments: int = 8
    time_step_scale: float = 1.0
    v_read: float = 0.4005
    integration: Literal["trapz", "sum"] = "trapz"
    adc_frequency: float = 0.0
    g_max: float = 25.0
    g_min: float = 0.0

    def __post_init__(self) -> None:
        for name in ("scale", "rs", "adc_frequency", "g_min"):
            _check_nonneg("ir_drop", name, getattr(self, name))
        _check_nonneg("ir_drop", "time_step_scale", self.time_step_scale, positive=True)
        _check_nonneg("ir_drop", "g_max", self.g_max, positive=True)
        _check_finite("ir_drop", "v_read", self.v_read)
        if isinstance(self.segments, bool) or not isinstance(self.segments, int) or self.segments < 1:
            raise ValueError(f"ir_drop.segments = {self.segments!r}; expected an integer >= 1")
        if self.integration not in ("trapz", "sum"):
            raise ValueError(f"ir_drop.integration = {self.integration!r}; expected 'trapz' or 'sum'")
        if not self.g_min < self.g_max:
            raise ValueError(f"ir_drop.g_min = {self.g_min!r}, g_max = {self.g_max!r}; expected g_min < g_max")

    def time_steps(self, dac: "DAC") -> int:
        """Steps of the input pulse: int((inp_bound / inp_res + 2) / 2 · time_step_scale), as AIHWKIT."""
        if dac.bits is None or dac.bound is None:
            return 2
        return int((dac.bound / dac.resolution + 2) / 2.0 * self.time_step_scale)


@dataclass(frozen=True)
class InputRange:
    """Learned input ranges (AIHWKIT 1.1's `pre_post.input_range`, `InputRangeParameter`;
    docs/numerics.md, "Learned input ranges"). Every tile (input tile i, output tile o) holds a
    range r > 0: its input is clamped to [-r, r] and divided by r before the DAC, and its output
    is multiplied by r again after the ADC (with the mapping scales, as fl(r * scale)).

    `learn_input_range`: r is a trainable parameter (else a buffer, still initialised from
    data). `init_value`: r before any data. `init_from_data`: the first this many training
    forwards (with a non-zero input std) set r to the running mean of `init_std_alpha` * std(x).
    The gradient of r is AIHWKIT's `InputRangeForward`: from the clipped inputs, times r and
    `gradient_scale` when `gradient_relative`, plus `decay` * r when more than
    `input_min_percentage` of the inputs are inside the range; with `manage_output_clipping`
    minus (1 - p) * r when the fraction p of unclipped outputs is below
    `output_min_percentage` (needs noise and bound management "none", as AIHWKIT)."""

    learn_input_range: bool = True
    init_value: float = 3.0
    init_from_data: int = 100
    init_std_alpha: float = 3.0
    decay: float = 0.001
    input_min_percentage: float = 0.95
    manage_output_clipping: bool = False
    output_min_percentage: float = 0.95
    gradient_scale: float = 1.0
    gradient_relative: bool = True
    #: True (AIHWKIT): r also gets the gradient of the division x / r and of the output factor
    #: fl(r * scale). False (AIHWKIT-Lightning's `InputRangeForward`): r is a constant there and
    #: its gradient is the clipped-input term (and the decay) alone.
    scaling_gradient: bool = True
    #: AIHWKIT-Lightning's fast mode: the first `init_from_data` training forwards set r to
    #: max(|x_min|, |x_max|) of running statistics of each tile input's extremes (x_min, x_max
    #: start at -/+1e-5 and take the first batch's extremes, then move with momentum
    #: `act_range_momentum`, or keep the running extremes with -1), and r's gradient is that of
    #: `torch.clamp(x, -r, r)` alone (`init_std_alpha`, `decay`, `input_min_percentage` and the
    #: `gradient_*` fields are not used). Needs `scaling_gradient` False.
    fast_mode: bool = False
    act_range_momentum: float = 0.95

    def __post_init__(self) -> None:
        for name in ("learn_input_range", "manage_output_clipping", "gradient_relative", "scaling_gradient",
                     "fast_mode"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"input_range.{name} = {getattr(self, name)!r}; expected a bool")
        _check_finite("input_range", "act_range_momentum", self.act_range_momentum)
        if not (self.act_range_momentum == -1 or 0.0 <= self.act_range_momentum <= 1.0):
            raise ValueError(f"input_range.act_range_momentum = {self.act_range_momentum!r}; expected a value in "
                             "[0, 1] or -1 (the running extremes)")
        if self.fast_mode and (self.scaling_gradient or self.manage_output_clipping):
            raise ValueError("input_range.fast_mode = True needs scaling_gradient = False and manage_output_clipping "
                             "= False (AIHWKIT-Lightning's fast mode: the clamp's gradient alone)")
        _check_nonneg("input_range", "init_value", self.init_value, positive=True)
        if isinstance(self.init_from_data, bool) or not isinstance(self.init_from_data, int) or self.init_from_data < 0:
            raise ValueError(f"input_range.init_from_data = {self.init_from_data!r}; expected an integer >= 0")
        _check_nonneg("input_range", "init_std_alpha", self.init_std_alpha, positive=True)
        _check_nonneg("input_range", "decay", self.decay)
        _check_finite("input_range", "gradient_scale", self.gradient_scale)
        for name in ("input_min_percentage", "output_min_percentage"):
            v = getattr(self, name)
            _check_finite("input_range", name, v)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"input_range.{name} = {v!r}; expected a fraction in [0, 1]")


@dataclass(frozen=True)
class Device:
    """Conductance model used by `program()` / `drift()`: a name of
    `lorafusion_ext.devices.get_device_model` ("pcm", "pcm_custom_drift", "state_independent",
    "hermes", "reram", "reram_cmo", "none") and its overrides (floats, ints, strings and tuples)."""

    name: str = "pcm"
    options: tuple[tuple[str, Any], ...] = ()
    drift_compensation: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"device.name = {self.name!r}; expected a device model name")


@dataclass(frozen=True)
class Periphery:
    """What one analog read of a tile needs besides its weights: the converters, the output
    noise and the two managements (docs/numerics.md, "The backward read").

    `HardwareConfig.backward` holds one for the on-chip backward pass: the input gradient
    dx = W^T dy read through the same conductances, its dy scaled per token by
    `noise_management`, quantised by `dac` (bits, bound), multiplied by the tile's weights
    transposed, given `out_noise` (std, in units of the ADC range), quantised and clamped by `adc`
    with `bound_management` repeating the read where it saturates, then scaled back (AIHWKIT's
    `rpu_config.backward` IOParameters of its C++ tiles). The converters' `asymmetry`, `noise`
    and `sto_round` are not modelled for this read and must keep their defaults.
    """

    dac: DAC = field(default_factory=DAC)
    adc: ADC = field(default_factory=ADC)
    out_noise: float = 0.04
    noise_management: NoiseManagement = field(default_factory=NoiseManagement)
    bound_management: BoundManagement = field(default_factory=BoundManagement)

    def __post_init__(self) -> None:
        for name, cls in (("dac", DAC), ("adc", ADC), ("noise_management", NoiseManagement),
                          ("bound_management", BoundManagement)):
            if not isinstance(getattr(self, name), cls):
                raise ValueError(f"backward.{name} = {getattr(self, name)!r}; expected a {cls.__name__}")
        _check_nonneg("backward", "out_noise", self.out_noise)
        for part, names in (("dac", ("asymmetry", "noise", "sto_round")), ("adc", ("asymmetry", "sto_round"))):
            conv = getattr(self, part)
            for name in names:
                if getattr(conv, name):
                    raise ValueError(f"backward.{part}.{name} = {getattr(conv, name)!r} is not modelled for the "
                                     "backward read; expected its default (0 / False)")

    @classmethod
    def with_bits(cls, bits: int | None, base: "Periphery | None" = None) -> "Periphery":
        """`base` (default: `Periphery()`) with both converters at `bits` (None: unquantised).

        Raises:
            ValueError: `bits` out of range, naming ``backward.dac.bits``.
        """
        base = base if base is not None else cls()
        try:
            dac = dataclasses.replace(base.dac, bits=bits)
            adc = dataclasses.replace(base.adc, bits=bits)
        except ValueError as err:
            raise ValueError(f"backward.{err}") from None
        return dataclasses.replace(base, dac=dac, adc=adc)

    @property
    def max_passes(self) -> int:
        """Bound-management passes of the read at most (as `HardwareConfig.max_passes`)."""
        return _max_passes(self.bound_management, self.dac)

    def op_params(self) -> dict[str, float | int | bool]:
        """The backward read's crossbar parameters by name (`bwd_*` in `lorafusion/params.h`)."""
        return {
            "bwd_read": True,
            "bwd_inp_res": self.dac.resolution,
            "bwd_inp_bound": float(self.dac.bound or 0.0),
            "bwd_out_res": self.adc.resolution,
            "bwd_out_bound": float(self.adc.bound or 0.0),
            "bwd_out_noise": float(self.out_noise),
            "bwd_nm_thres": float(self.noise_management.threshold),
            "bwd_noise_management": _NM_CODES[self.noise_management.mode],
            "bwd_bound_management": _BM_CODES[self.bound_management.mode],
            "bwd_max_passes": self.max_passes,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Periphery":
        """Inverse of `dataclasses.asdict` (validated; an unknown field raises naming it)."""
        parts = {"dac": DAC, "adc": ADC, "noise_management": NoiseManagement, "bound_management": BoundManagement}
        kwargs: dict[str, Any] = {}
        for key, value in d.items():
            if key in parts:
                kwargs[key] = parts[key](**value)
            elif key == "out_noise":
                kwargs[key] = value
            else:
                raise ValueError(f"HardwareConfig.from_dict: unknown field 'backward.{key}'")
        return cls(**kwargs)


#: The op's backward-read parameters when `HardwareConfig.backward` is None: today's ideal
#: straight-through backward (the kernel never reads the others).
_NO_BACKWARD_READ: dict[str, float | int | bool] = {
    "bwd_read": False, "bwd_inp_res": 0.0, "bwd_inp_bound": 1.0, "bwd_out_res": 0.0, "bwd_out_bound": 12.0,
    "bwd_out_noise": 0.0, "bwd_nm_thres": 0.0, "bwd_noise_management": _NM_CODES["abs_max"],
    "bwd_bound_management": _BM_CODES["iterative_global"], "bwd_max_passes": 1,
}


@dataclass(frozen=True)
class HardwareConfig:
    """Everything that defines an analog layer's non-idealities. Immutable; use `replace`."""

    dac: DAC = field(default_factory=DAC)
    adc: ADC = field(default_factory=ADC)
    out_noise: float = 0.04
    noise_management: NoiseManagement = field(default_factory=NoiseManagement)
    bound_management: BoundManagement = field(default_factory=BoundManagement)
    mapping: Mapping_ = field(default_factory=Mapping_)
    tiles: Tiles = field(default_factory=Tiles)
    modifier: Modifier = field(default_factory=Modifier)
    device: Device = field(default_factory=Device)
    ir_drop: IRDrop = field(default_factory=IRDrop)
    #: A fixed digital factor on every output after the ADC (AIHWKIT ``forward.out_scale``):
    #: the output is v · fl(out_scale / s) instead of v · fl(1 / s). Not a learned scale.
    out_scale: float = 1.0
    #: The backward pass's read of the input gradient: None (the default) is the ideal
    #: straight-through backward (dx = W̃ᵀ·dy in digital); a `Periphery` reads dx through the
    #: tile's conductances, transposed, with its own converters, noise and managements.
    backward: Periphery | None = None
    #: Learned input ranges per tile (AIHWKIT ``pre_post.input_range``); None: off.
    input_range: InputRange | None = None
    #: AIHWKIT-Lightning's weight quantization (`modifier.quantization_type`): > 0 rounds the
    #: normalised tile weights to steps of 2·res (res a resolution < 1, or a number of states
    #: > 1, as 1/res), i.e. of 2·res·(the row's or tile's abs-max) with the "row" or "layer"
    #: mapping at omega 1, in training and eval and in what `program()` stores, straight-through
    #: in the backward, before the training modifier. 0: off.
    weight_res: float = 0.0
    #: False: the output noise is drawn in training only (AIHWKIT-Lightning); True: in eval too.
    out_noise_in_eval: bool = True
    #: True: each of a layer's n input tiles draws output noise of std out_noise / sqrt(n)
    #: (AIHWKIT-Lightning); False: out_noise per tile (AIHWKIT).
    out_noise_split: bool = False

    def __post_init__(self) -> None:
        _check_nonneg("hardware", "out_noise", self.out_noise)
        for name in ("out_noise_in_eval", "out_noise_split"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"hardware.{name} = {getattr(self, name)!r}; expected a bool")
        _check_nonneg("hardware", "weight_res", self.weight_res)
        if self.weight_res > 0 and (self.mapping.weight_scaling == "none" or self.mapping.omega != 1.0):
            raise ValueError(
                f"hardware.weight_res = {self.weight_res} needs mapping.weight_scaling 'row' or 'layer' and omega 1 "
                f"(its steps are relative to each row's or tile's abs-max); got {self.mapping.weight_scaling!r}, "
                f"omega {self.mapping.omega}")
        if self.backward is not None and not isinstance(self.backward, Periphery):
            raise ValueError(f"hardware.backward = {self.backward!r}; expected a Periphery or None")
        _check_finite("hardware", "out_scale", self.out_scale)
        for name, cls in (
            ("dac", DAC),
            ("adc", ADC),
            ("noise_management", NoiseManagement),
            ("bound_management", BoundManagement),
            ("mapping", Mapping_),
            ("tiles", Tiles),
            ("modifier", Modifier),
            ("device", Device),
            ("ir_drop", IRDrop),
        ):
            if not isinstance(getattr(self, name), cls):
                raise ValueError(f"hardware.{name} = {getattr(self, name)!r}; expected a {cls.__name__}")
        if self.input_range is not None:
            if not isinstance(self.input_range, InputRange):
                raise ValueError(f"hardware.input_range = {self.input_range!r}; expected an InputRange or None")
            if self.input_range.manage_output_clipping and (
                self.noise_management.mode != "none" or self.bound_management.mode != "none"
                or self.adc.bound is None
            ):
                raise ValueError(
                    "hardware.input_range.manage_output_clipping = True needs noise_management.mode 'none', "
                    "bound_management.mode 'none' and an ADC bound (AIHWKIT's supports_manage_output_clipping)")
            if self.ir_drop.scale > 0:
                raise ValueError("hardware.input_range with ir_drop.scale > 0 is not modelled (AIHWKIT's IR-drop "
                                 "tile has no learned input range)")
        if self.ir_drop.scale > 0:
            if self.dac.bits is None or self.dac.bound is None:
                raise ValueError("hardware.ir_drop.scale > 0 needs a DAC (dac.bits and dac.bound): the input is a "
                                 "pulse of its levels")
            steps = self.ir_drop.time_steps(self.dac)
            if steps < 2:
                raise ValueError(f"hardware.ir_drop.time_step_scale = {self.ir_drop.time_step_scale!r} gives {steps} "
                                 f"time step(s) of the input pulse with this DAC; expected at least 2 "
                                 "(int((dac.bound / step + 2) / 2 * time_step_scale) >= 2)")
            rows = self.tiles.max_in
            if rows is not None and rows % self.ir_drop.segments:
                raise ValueError(f"hardware.ir_drop.segments = {self.ir_drop.segments} does not divide the tile's "
                                 f"{rows} physical rows (tiles.max_in)")

    # ------------------------------------------------------------------ presets
    @classmethod
    def preset(cls, name: str) -> "HardwareConfig":
        """A named configuration.

        - ``"pcm_paper"``: the HWA-LoRA paper recipe: 8-bit DAC and ADC (ADC bound 12),
          output noise 0.04, abs-max noise management, `iterative_global` bound management,
          per-row weight mapping, 3σ clip + row remap at conversion, one tile per layer,
          ADD_NORMAL training noise 0.067, PCM device with global drift compensation.
        - ``"pcm_tiled"``: `pcm_paper` on 512×512 tiles with `iterative_per_row`.
        - ``"ideal"``: no quantisation, no noise, no scaling: equals nn.Linear.
        """
        builder = _PRESETS.get(name)
        if builder is None:
            raise ValueError(f"HardwareConfig.preset: unknown name {name!r}; expected one of {PRESETS}")
        return builder()

    def replace(self, **changes: Any) -> "HardwareConfig":
        """A copy with some parts replaced (validated again)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ derived
    @property
    def is_ideal(self) -> bool:
        """True when nothing is quantised or noisy (no DAC/ADC bits, no output noise, no modifier)."""
        return (
            self.dac.bits is None
            and self.adc.bits is None
            and self.out_noise == 0
            and self.dac.noise == 0
            and not self.dac.sto_round
            and not self.adc.sto_round
            and self.modifier.kind == "none"
            and self.dac.asymmetry == 0
            and self.adc.asymmetry == 0
            and self.ir_drop.scale == 0
            and self.out_scale == 1
            and self.input_range is None
            and self.weight_res == 0
        )

    @property
    def max_passes(self) -> int:
        """Bound-management passes at most: reductions 1, 2, 4, ... up to the first one
        that exceeds min(max_factor, max_res / Δin), as AIHWKIT's loop."""
        return _max_passes(self.bound_management, self.dac)

    @property
    def forward_periphery(self) -> "Periphery":
        """The forward read's periphery as a `Periphery`: ``replace(backward=hw.forward_periphery)``
        reads the gradient through the same converters, noise and managements as the forward.

        Raises:
            ValueError: a forward DAC/ADC feature the backward read does not model (asymmetry,
                input noise, stochastic rounding), naming it.
        """
        return Periphery(dac=self.dac, adc=self.adc, out_noise=self.out_noise,
                         noise_management=self.noise_management, bound_management=self.bound_management)

    def op_params(self) -> dict[str, float | int | bool]:
        """The crossbar's parameters by name, as `lorafusion/params.h` defines them (the one
        C++ definition shared by the CPU and CUDA kernels); values in normalised units."""
        return {
            "inp_res": self.dac.resolution,
            "inp_bound": float(self.dac.bound or 0.0),
            "out_res": self.adc.resolution,
            "out_bound": float(self.adc.bound or 0.0),
            "out_noise": float(self.out_noise),
            "nm_thres": float(self.noise_management.threshold),
            "modifier_std": float(self.modifier.std) if self.modifier.kind == "add_normal" else 0.0,
            "noise_management": _NM_CODES[self.noise_management.mode],
            "bound_management": _BM_CODES[self.bound_management.mode],
            "max_passes": self.max_passes,
            "max_in": self.tiles.max_in or 0,
            "max_out": self.tiles.max_out or 0,
            "per_input_tile": False,
            "modifier_res": float(self.modifier.res) if self.modifier.kind == "discretize" else 0.0,
            "modifier_mult_std": float(self.modifier.std) if self.modifier.kind == "mult_normal" else 0.0,
            "inp_asymmetry": float(self.dac.asymmetry),
            "inp_noise": float(self.dac.noise),
            "inp_sto_round": bool(self.dac.sto_round),
            "out_sto_round": bool(self.adc.sto_round),
            "out_asymmetry": float(self.adc.asymmetry),
            "modifier_sample_rows": 0,
            "modifier_sto_round": bool(self.modifier.sto_round),
            "ir_drop": float(self.ir_drop.scale),
            "ir_drop_rs": float(self.ir_drop.rs),
            "ir_drop_segments": int(self.ir_drop.segments),
            "ir_drop_time_steps": self.ir_drop.time_steps(self.dac),
            "ir_drop_rows": self.tiles.max_in or 0,
            "ir_drop_v_read": float(self.ir_drop.v_read),
            "ir_drop_sum": self.ir_drop.integration == "sum",
            "ir_drop_adc_frequency": float(self.ir_drop.adc_frequency),
            "ir_drop_g_max": float(self.ir_drop.g_max),
            "ir_drop_g_min": float(self.ir_drop.g_min),
            "out_scale": float(self.out_scale),
            **(_NO_BACKWARD_READ if self.backward is None else self.backward.op_params()),
        }

    def for_call(self, n_in_tiles: int, training: bool) -> "HardwareConfig":
        """The configuration an op call over `n_in_tiles` input tiles (the caller's tile split,
        `lorafusion_ext.ops.tiling`) runs with: itself, or, with AIHWKIT-Lightning's output noise
        (`out_noise_in_eval` False, `out_noise_split`), a copy whose `out_noise` is the std each
        tile draws in this mode (0 in eval; out_noise / sqrt(n_in_tiles) when split) and whose two
        flags are the defaults."""
        if self.out_noise == 0 or (self.out_noise_in_eval and not self.out_noise_split):
            return self
        noise = self.out_noise if (training or self.out_noise_in_eval) else 0.0
        if self.out_noise_split:
            noise = noise / math.sqrt(n_in_tiles)
        return self.replace(out_noise=noise, out_noise_in_eval=True, out_noise_split=False)

    def sample_rows(self, shape: Sequence[int], training: bool) -> int:
        """`modifier_sample_rows` of a crossbar call on an input of `shape` [..., in_features]:
        with `modifier.per_batch_sample` in training, the token rows of one batch sample (the
        product of the dimensions between the first and the last; 1 for [B, in] or [in]), else
        0 (one weight-noise draw for the whole call)."""
        if not (training and self.modifier.per_batch_sample):
            return 0
        return math.prod(shape[1:-1]) if len(shape) > 2 else 1

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON-able)."""
        d = dataclasses.asdict(self)
        d["device"]["options"] = dict(self.device.options)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "HardwareConfig":
        """Inverse of `to_dict` (validated; an unknown field raises ValueError naming it)."""
        parts = {
            "dac": DAC,
            "adc": ADC,
            "noise_management": NoiseManagement,
            "bound_management": BoundManagement,
            "mapping": Mapping_,
            "tiles": Tiles,
            "modifier": Modifier,
            "ir_drop": IRDrop,
        }
        kwargs: dict[str, Any] = {}
        for key, value in d.items():
            if key in parts:
                kwargs[key] = parts[key](**value)
            elif key == "device":
                dev = dict(value)
                # JSON turns tuples into lists; the config must stay hashable.
                dev["options"] = tuple(sorted((k, _freeze(v)) for k, v in dict(dev.get("options", {})).items()))
                kwargs[key] = Device(**dev)
            elif key in ("out_noise", "out_scale", "out_noise_in_eval", "out_noise_split", "weight_res"):
                kwargs[key] = value
            elif key == "backward":
                kwargs[key] = None if value is None else Periphery.from_dict(value)
            elif key == "input_range":
                kwargs[key] = None if value is None else InputRange(**value)
            else:
                raise ValueError(f"HardwareConfig.from_dict: unknown field {key!r}")
        return cls(**kwargs)

    # ------------------------------------------------------------------ AIHWKIT
    @classmethod
    def from_aihwkit(cls, rpu_config: Any) -> "HardwareConfig":
        """Convert an AIHWKIT 1.1 or an AIHWKIT-Lightning 2.1 `TorchInferenceRPUConfig` (the
        subset modelled here; docs/aihwkit.md).

        Raises:
            ValueError: naming the first field set to a value that is not modelled.
        """
        # The config's one door into interop/, opened on call (the package's one documented
        # import circle: docs/architecture.md, "The Python layers").
        from lorafusion_ext.interop.aihwkit_config import hardware_from_rpu_config

        return hardware_from_rpu_config(cls, rpu_config)

    def to_aihwkit(self, flavour: Literal["aihwkit", "lightning"] = "aihwkit") -> Any:
        """The equivalent `TorchInferenceRPUConfig` of AIHWKIT 1.1 (`flavour="aihwkit"`) or of
        AIHWKIT-Lightning 2.1 (`flavour="lightning"`); needs that package installed.

        Raises:
            ValueError: a field with no equivalent there (named), or an unknown flavour.
        """
        from lorafusion_ext.interop.aihwkit_config import rpu_config_from_hardware

        return rpu_config_from_hardware(self, flavour)


def _pcm_paper() -> HardwareConfig:
    return HardwareConfig(
        dac=DAC(8, 1.0),
        adc=ADC(8, 12.0),
        out_noise=0.04,
        noise_management=NoiseManagement("abs_max"),
        bound_management=BoundManagement("iterative_global"),
        mapping=Mapping_("row", 1.0, clip_sigma=3.0, remap=True),
        tiles=Tiles(None, None),
        modifier=Modifier("add_normal", 0.067),
        device=Device("pcm"),
    )


def _ideal() -> HardwareConfig:
    return HardwareConfig(
        dac=DAC(None, None),
        adc=ADC(None, None),
        out_noise=0.0,
        noise_management=NoiseManagement("none"),
        bound_management=BoundManagement("none"),
        mapping=Mapping_("none"),
        modifier=Modifier("none"),
        device=Device("none", drift_compensation=False),
    )


#: The named configurations (`HardwareConfig.preset`): name -> a builder of a fresh config.
#: The one list of presets; `PRESETS` is its names, in this order.
_PRESETS: dict[str, Callable[[], HardwareConfig]] = {
    "pcm_paper": _pcm_paper,
    "pcm_tiled": lambda: _pcm_paper().replace(tiles=Tiles(512, 512),
                                              bound_management=BoundManagement("iterative_per_row")),
    "ideal": _ideal,
}
PRESETS: tuple[str, ...] = tuple(_PRESETS)


def as_hardware(config: Any, where: str) -> HardwareConfig:
    """`config` as a HardwareConfig: a HardwareConfig as it is, an AIHWKIT
    `TorchInferenceRPUConfig` through `HardwareConfig.from_aihwkit` (which names any field
    that is not modelled)."""
    if isinstance(config, HardwareConfig):
        return config
    if type(config).__module__.startswith("aihwkit.") or is_lightning(config):
        return HardwareConfig.from_aihwkit(config)
    raise ValueError(
        f"{where}: hardware is a {type(config).__name__}; expected a HardwareConfig, an AIHWKIT or an "
        "AIHWKIT-Lightning TorchInferenceRPUConfig"
    )


def is_lightning(config: Any) -> bool:
    """Whether `config` is an AIHWKIT-Lightning object (a class of module `aihwkit_lightning`, or
    derived from one: a subclass is then refused by name, not taken for AIHWKIT's)."""
    return any(c.__module__.startswith("aihwkit_lightning.") for c in type(config).__mro__)


# Public name of the mapping part (the trailing underscore avoids shadowing typing.Mapping).
WeightMapping = Mapping_
