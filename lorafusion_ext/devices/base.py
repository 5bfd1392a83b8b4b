"""Shared pieces of the conductance models: the programmed state, the model protocol, the
single-pair conductance converter, argument checks and the model registry.

Units used throughout ``lorafusion_ext.devices``:

* conductances in microsiemens (µS),
* times in seconds (s),
* weights in whatever units the caller passes (normally the per-tile normalised weights); the
  converter maps ``max |W|`` of the matrix to ``g_max`` µS.

This module imports only torch / numpy / the standard library, so that importing
``lorafusion_ext.devices`` never pulls in the compiled extension.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import (
    Any,
    ClassVar,
    Dict,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    Union,
    runtime_checkable,
)

import torch
from torch import Tensor

__all__ = [
    "ZERO_CLIP",
    "ProgrammedState",
    "DeviceModel",
    "IdealDeviceModel",
    "single_pair_to_conductances",
    "single_pair_to_weights",
    "single_pair_scale",
    "get_device_model",
    "device_model_names",
]

#: Lower clamp of ``max |W|`` in the single-pair converter (AIHWKIT ``_ZERO_CLIP``). It is what makes an
#: all-zero matrix map to a finite (huge) scale instead of dividing by zero.
ZERO_CLIP: float = 1e-7


# --------------------------------------------------------------------------------------------------
# Programmed state
# --------------------------------------------------------------------------------------------------

_STATE_TENSOR_FIELDS: Tuple[str, ...] = ("weights", "scale", "conductances", "nu", "g_target")


@dataclass
class ProgrammedState:
    """What programming a tile leaves behind; the input of every ``drift`` call.

    Attributes:
        weights: ``[out, in]``, the programmed weights converted back to weight units
            (``(G+ - G-) / scale``). This is what AIHWKIT stores as ``programmed_weights`` and what
            its drift step starts from.
        scale: 0-d tensor, the converter scale in µS per weight unit used at programming time
            (``g_max / max(max|W|, 1e-7)``).
        conductances: ``[2, out, in]`` µS, the programmed conductances of the pair (index 0: G+,
            index 1: G-), or ``None`` when the caller asked not to keep them. Informative only: drift
            restarts from ``weights``, as AIHWKIT does.
        nu: ``[2, out, in]``, the drift exponents per device (dimensionless) of the PCM-like
            models (``pcm``, ``pcm_custom_drift``, ``state_independent``, ``hermes``), or ``None``
            for models without drift exponents.
        g_target: ``[2, out, in]`` µS, the target conductances, or ``None``. The ``reram`` model
            draws its time-dependent deviations around them, so it needs them at drift time.

    The single-device ``reram_cmo`` model keeps only ``weights`` and ``scale``: its drift starts
    from the programmed weights alone.

    All tensors share the device and (floating) dtype of the programmed weights. Use
    :meth:`to_dict` / :meth:`from_dict` to put the state into a ``torch`` ``state_dict``.
    """

    weights: Tensor
    scale: Tensor
    conductances: Optional[Tensor] = None
    nu: Optional[Tensor] = None
    g_target: Optional[Tensor] = None

    def to_dict(self) -> Dict[str, Tensor]:
        """Plain ``{name: tensor}`` mapping (``None`` fields are left out), for a ``state_dict``."""
        out: Dict[str, Tensor] = {}
        for name in _STATE_TENSOR_FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Tensor]) -> "ProgrammedState":
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: a required entry (``weights``, ``scale``) is missing, an entry is unknown or
                not a tensor, or the shapes do not fit together.
        """
        unknown = sorted(set(data) - set(_STATE_TENSOR_FIELDS))
        if unknown:
            raise ValueError(
                f"ProgrammedState.from_dict: unknown entries {unknown}; "
                f"expected a subset of {list(_STATE_TENSOR_FIELDS)}"
            )
        missing = [name for name in ("weights", "scale") if name not in data]
        if missing:
            raise ValueError(f"ProgrammedState.from_dict: missing required entries {missing}")
        for name, value in data.items():
            if not isinstance(value, Tensor):
                raise ValueError(
                    f"ProgrammedState.from_dict: entry {name!r} must be a torch.Tensor, "
                    f"got {type(value).__name__}"
                )
        state = cls(**{name: data.get(name) for name in _STATE_TENSOR_FIELDS})
        state.validate()
        return state

    def validate(self) -> None:
        """Check shapes: ``weights`` 2-D, ``scale`` one element, per-device fields ``[2, *weights.shape]``."""
        if self.weights.dim() != 2:
            raise ValueError(
                f"ProgrammedState.weights must be 2-D [out, in], got shape {tuple(self.weights.shape)}"
            )
        if self.scale.numel() != 1:
            raise ValueError(
                f"ProgrammedState.scale must hold one element, got shape {tuple(self.scale.shape)}"
            )
        expected = (2,) + tuple(self.weights.shape)
        for name in ("conductances", "nu", "g_target"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != expected:
                raise ValueError(
                    f"ProgrammedState.{name} must have shape {expected} (pair, out, in), "
                    f"got {tuple(value.shape)}"
                )

    def to(self, *args: Any, **kwargs: Any) -> "ProgrammedState":
        """Same as ``Tensor.to`` applied to every tensor field (device and/or dtype)."""
        return ProgrammedState(
            **{
                name: (None if getattr(self, name) is None else getattr(self, name).to(*args, **kwargs))
                for name in _STATE_TENSOR_FIELDS
            }
        )

    def clone(self) -> "ProgrammedState":
        """Deep copy of the tensors."""
        return ProgrammedState(
            **{
                name: (None if getattr(self, name) is None else getattr(self, name).clone())
                for name in _STATE_TENSOR_FIELDS
            }
        )


# --------------------------------------------------------------------------------------------------
# Protocol
# --------------------------------------------------------------------------------------------------


@runtime_checkable
class DeviceModel(Protocol):
    """What every conductance model provides.

    ``program`` is called once per programming of a tile, ``drift`` once per inference time; neither
    is a hot path, but both are vectorised (no Python loop over devices) and run on the device of
    the weights. Every random number comes from ``generator`` (default: torch's global RNG for the
    weights' device).
    """

    name: ClassVar[str]

    def program(
        self, weights: Tensor, generator: Optional[torch.Generator] = None
    ) -> ProgrammedState:
        """Program a 2-D ``[out, in]`` weight matrix; returns the programmed state."""
        ...

    def drift(
        self, state: ProgrammedState, t_seconds: float, generator: Optional[torch.Generator] = None
    ) -> Tensor:
        """Weights ``[out, in]`` read at ``t_seconds`` (s) after programming finished."""
        ...


# --------------------------------------------------------------------------------------------------
# Checks and random numbers
# --------------------------------------------------------------------------------------------------


def check_weights(weights: Any, where: str) -> Tensor:
    """Validate a weight matrix; returns it detached (models never track gradients)."""
    if not isinstance(weights, Tensor):
        raise ValueError(f"{where}: weights must be a torch.Tensor, got {type(weights).__name__}")
    if weights.dim() != 2:
        raise ValueError(
            f"{where}: weights must be a 2-D [out, in] tile matrix, got shape {tuple(weights.shape)}"
        )
    if weights.numel() == 0:
        raise ValueError(f"{where}: weights must be non-empty, got shape {tuple(weights.shape)}")
    if not weights.is_floating_point():
        raise ValueError(f"{where}: weights must be floating point, got dtype {weights.dtype}")
    # One host sync per programming is acceptable (not a hot path); NaN would otherwise silently
    # poison the whole tile through max|W|.
    if not bool(torch.isfinite(weights).all()):
        raise ValueError(f"{where}: weights contain NaN or inf")
    return weights.detach()


def check_time(t_seconds: Any) -> float:
    """Validate an inference time (s after programming finished): finite and ``>= 0``."""
    try:
        t = float(t_seconds)
    except (TypeError, ValueError):
        raise ValueError(
            f"t_seconds must be a real number of seconds, got {t_seconds!r}"
        ) from None
    if math.isnan(t) or math.isinf(t) or t < 0.0:
        raise ValueError(f"t_seconds must be a finite time >= 0 s, got {t_seconds!r}")
    return t


def check_generator(generator: Optional[torch.Generator], like: Tensor) -> None:
    """A generator must live on the same device type as the tensors it fills."""
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if generator.device.type != like.device.type:
        raise ValueError(
            f"generator is on device {generator.device} but the weights are on {like.device}; "
            "create the generator with torch.Generator(device=weights.device)"
        )


def check_real(
    owner: str,
    field: str,
    value: Any,
    *,
    minimum: Optional[float] = None,
    strictly_greater: bool = False,
    expected: str,
) -> float:
    """Validate a finite real config value; the error names ``owner.field`` and the expected range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{owner}.{field} must be a real number ({expected}), got {value!r}")
    v = float(value)
    ok = math.isfinite(v)
    if ok and minimum is not None:
        ok = v > minimum if strictly_greater else v >= minimum
    if not ok:
        raise ValueError(f"{owner}.{field} must be {expected}, got {value!r}")
    return v


def check_conductance(owner: str, field: str, value: Any) -> float:
    """A finite conductance > 0 µS (``g_max`` and its references)."""
    return check_real(owner, field, value, minimum=0.0, strictly_greater=True, expected="a finite conductance > 0 µS")


def check_coefficients(owner: str, field: str, value: Any, *, allow_none: bool = False) -> Tuple[float, ...]:
    """A non-empty sequence of finite µS polynomial coefficients (a string is not one)."""
    try:
        raw = tuple(value)
    except TypeError:
        raw = ()
    if not raw or isinstance(value, str):
        none = "None or " if allow_none else ""
        raise ValueError(f"{owner}.{field} must be {none}a non-empty sequence of finite µS coefficients, got {value!r}")
    return tuple(check_real(owner, f"{field}[{i}]", c, expected="a finite coefficient in µS") for i, c in enumerate(raw))


def check_read_time(owner: str, t_read: Any, t_0: float) -> float:
    """The 1/f read-noise fit's ``t_read`` in (0, t_0] s: beyond ``t_0``, ln((t_0 + t_read) /
    (2 t_read)) < 0 would make the read-noise std NaN at t = 0."""
    t = check_real(owner, "t_read", t_read, minimum=0.0, strictly_greater=True, expected="a finite time in (0, t_0] s")
    if t > t_0:
        raise ValueError(f"{owner}.t_read must be a finite time in (0, t_0] s, got {t_read!r} with t_0={t_0!r}")
    return t


def normalise_scales(model: Any, owner: str, fields: Sequence[str] = ("prog_noise_scale", "read_noise_scale",
                                                                      "drift_scale")) -> None:
    """Check and store, on the frozen dataclass `model`, each noise scale as a finite float >= 0."""
    for field in fields:
        object.__setattr__(model, field, check_real(owner, field, getattr(model, field), minimum=0.0,
                                                    expected="a finite scale >= 0"))


def randn_like(like: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """``torch.randn_like(like)`` drawing from ``generator``.

    ``empty_like(...).normal_()`` is literally what ``randn_like`` does (same memory format, same
    consumption of the RNG stream), so with the same seed it reproduces AIHWKIT's draws bit for bit,
    also for non-contiguous inputs.
    """
    return torch.empty_like(like).normal_(0.0, 1.0, generator=generator)


def like_layout(src: Tensor, ref: Tensor) -> Tensor:
    """``src`` with the memory layout (strides) of ``ref``; ``src`` itself when it already has it.

    Per-device tensors are stored stacked (contiguous) in the state, while AIHWKIT keeps them in the
    layout of the weights. Layout matters for bit-exactness: ``randn_like`` fills in memory order, and
    CPU kernels pick vectorised or scalar loops (whose ``pow`` differ in the last ulp) from it.
    """
    if src.stride() == ref.stride():
        return src
    return torch.empty_like(ref).copy_(src)


# --------------------------------------------------------------------------------------------------
# Single-pair conductance converter (AIHWKIT SinglePairConductanceConverter, g_min = 0)
# --------------------------------------------------------------------------------------------------


def single_pair_scale(weights: Tensor, g_max: float, g_min: float = 0.0) -> Tensor:
    """Converter scale in µS per weight unit: ``(g_max - g_min) / max(max|W|, 1e-7)``, 0-d tensor."""
    abs_max = torch.abs(weights).max()
    return (g_max - g_min) / abs_max.clamp(min=ZERO_CLIP)


def single_pair_to_conductances(
    weights: Tensor, g_max: float, g_min: float = 0.0
) -> Tuple[Tensor, Tensor, Tensor]:
    """Map weights to a (G+, G-) pair, AIHWKIT ``SinglePairConductanceConverter`` op for op.

    Returns:
        ``(g_plus, g_minus, scale)``: two ``weights``-shaped tensors in µS (one of each pair is
        ``g_min``) and the 0-d scale (µS per weight unit).
    """
    scale = single_pair_scale(weights, g_max, g_min)
    scaled = weights * scale
    g_plus = scaled.clamp(min=0.0, max=g_max) + g_min
    g_minus = (-scaled).clamp(min=0.0, max=g_max) + g_min
    return g_plus, g_minus, scale


def single_pair_to_weights(
    g_plus: Tensor, g_minus: Tensor, scale: Tensor, g_min: float = 0.0
) -> Tensor:
    """Inverse of :func:`single_pair_to_conductances`: ``((G+ - g_min) - (G- - g_min)) / scale``."""
    return ((g_plus - g_min) - (g_minus - g_min)) / scale


def poly_noise_std(
    g_target: Tensor, coeffs: Sequence[float], g_max: float, g_max_reference: float
) -> Union[Tensor, float]:
    """``(Σ_i c_i (g/g_max)^i) · g_max / g_max_reference`` in µS, AIHWKIT's op order.

    The Horner-free power accumulation and the final rescale are kept exactly as AIHWKIT writes them
    (``PCMLikeNoiseModel.apply_programming_noise_to_conductance`` and
    ``ReRamWan2022NoiseModel._apply_poly``) because a different order rounds differently. A
    constant polynomial stays a Python float, as there.
    """
    mat: Any = 1
    sig: Any = coeffs[0]
    for coeff in coeffs[1:]:
        mat = mat * (g_target / g_max)
        sig = sig + mat * coeff
    return sig * (g_max / g_max_reference)


# --------------------------------------------------------------------------------------------------
# Ideal model
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IdealDeviceModel:
    """No device non-idealities: ``program`` keeps the weights, ``drift`` returns them unchanged.

    Useful as the control in drift sweeps and in tests. Inputs are validated exactly like the
    physical models (so a bad time or matrix fails the same way), and no random number is drawn.
    """

    name: ClassVar[str] = "none"

    @torch.no_grad()
    def program(
        self, weights: Tensor, generator: Optional[torch.Generator] = None
    ) -> ProgrammedState:
        """Return a state whose ``weights`` is a copy of ``weights`` and ``scale`` is 1."""
        w = check_weights(weights, "IdealDeviceModel.program")
        check_generator(generator, w)
        return ProgrammedState(weights=w.clone(), scale=torch.ones((), dtype=w.dtype, device=w.device))

    @torch.no_grad()
    def drift(
        self, state: ProgrammedState, t_seconds: float, generator: Optional[torch.Generator] = None
    ) -> Tensor:
        """Return a copy of ``state.weights`` whatever ``t_seconds`` (validated, in s)."""
        check_time(t_seconds)
        state.validate()
        return state.weights.clone()
