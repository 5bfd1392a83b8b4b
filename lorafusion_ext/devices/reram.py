"""ReRAM conductance model after Wan et al., Nature 608, 504 (2022).

A re-implementation of AIHWKIT 1.1 ``aihwkit.inference.noise.reram.ReRamWan2022NoiseModel`` with its
default ``SinglePairConductanceConverter`` (g_max = 25 µS, g_min = 0), extended to inference times
that are not among the three measured ones.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import ClassVar, Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .base import (
    GeneratorLike,
    ProgrammedState,
    check_coefficients,
    check_conductance,
    check_generator,
    check_real,
    check_time,
    check_weights,
    like_layout,
    normalise_scales,
    poly_noise_std,
    randn_like,
    single_pair_scale,
    single_pair_to_conductances,
    single_pair_to_weights,
)

__all__ = ["ReRAMModel", "WAN2022_COEFFS", "RERAM_TIME_POLICIES"]

#: σ(g, t) polynomial coefficients in µS, ascending powers of ``g/g_max``, keyed by the time after
#: programming (s) at which they were measured: 1 s, 1 day, 2 days. Fitted by AIHWKIT (4th order) to
#: the figures of Wan et al., Nature (2022), https://www.nature.com/articles/s41586-022-04992-8; copied
#: from ``aihwkit/inference/noise/reram.py`` (``ReRamWan2022NoiseModel.__init__``, where they are
#: written highest power first and reversed).
WAN2022_COEFFS: Dict[float, Tuple[float, ...]] = {
    1.0: (0.348, 16.030, -43.853, 45.393, -16.815),
    86400.0: (0.701, 22.086, -50.773, 47.095, -16.458),
    172800.0: (0.782, 20.274, -43.507, 37.062, -11.934),
}

#: How :class:`ReRAMModel` treats an inference time that is not a key of ``coeff_dic``.
RERAM_TIME_POLICIES: Tuple[str, ...] = ("interp", "hold", "strict")


def _default_coeffs() -> Dict[float, Tuple[float, ...]]:
    return dict(WAN2022_COEFFS)


@dataclass(frozen=True)
class ReRAMModel:
    """ReRAM device model (AIHWKIT ``ReRamWan2022NoiseModel`` + single-pair converter).

    Where the constants come from: the deviation-vs-target-conductance polynomials ``WAN2022_COEFFS``
    were fitted by AIHWKIT (``aihwkit/inference/noise/reram.py``, ``ReRamWan2022NoiseModel``) to the
    published measurements of Wan et al., "A compute-in-memory chip based on resistive random-access
    memory", Nature 608, 504-512 (2022), at 1 s, 1 day and 2 days after programming. The data has
    no separate 1/f read noise and no drift in the PCM sense: the spread around the target simply
    grows with time.

    Model (per device of each pair, target ``g`` µS, coefficients ``c(t)`` of time ``t``):
    ``σ(g, t) = (Σ_i c_i(t) (g/g_max)^i) · g_max / coeff_g_max_reference`` µS and
    ``g(t) = max(0, g + noise_scale σ(g, t) N)``, drawn afresh at every ``t`` around the *target* (the
    programmed value is not a starting point, as in AIHWKIT). Programming uses the earliest fit
    (1 s). At read-out AIHWKIT divides by the scale of the programmed matrix,
    ``g_max / max|W_prog|``, not by the programming scale; that is kept.

    AIHWKIT quirk reproduced: its ``__init__`` says the default fit refers to 40 µS but assigns that
    to an attribute it never reads, so ``σ`` is used unscaled (``coeff_g_max_reference = g_max``).
    Pass ``coeff_g_max_reference=40.0`` for the commented intent.

    Times AIHWKIT does not have (it raises unless ``t`` is a key of ``coeff_dic``):

    * ``t = 0``: the programmed weights are returned unchanged (programming ends at t = 0).
    * otherwise by ``time_policy``: ``"interp"`` (default) interpolates the coefficients linearly in
      ``ln t`` between neighbouring keys and holds the first / last fit outside the measured range
      (an assumption: no data beyond 2 days); ``"hold"`` uses the latest fit not after ``t`` (the
      first fit for ``t`` below it); ``"strict"`` raises ``ValueError`` like AIHWKIT.

    At a key of ``coeff_dic`` every policy is bit-identical to AIHWKIT with the same seed.

    Args:
        g_max: µS, the conductance ``max |W|`` is mapped to. ``> 0``.
        coeff_dic: ``{t_seconds: (c_0, c_1, ...)}`` µS coefficients, ascending powers; times ``> 0``.
        noise_scale: ``>= 0`` multiplier of σ.
        coeff_g_max_reference: µS, g_max of the fit; ``None`` means ``g_max`` (AIHWKIT's behaviour).
        time_policy: one of ``"interp"``, ``"hold"``, ``"strict"``.
    """

    g_max: float = 25.0
    coeff_dic: Mapping[float, Sequence[float]] = field(default_factory=_default_coeffs)
    noise_scale: float = 1.0
    coeff_g_max_reference: Optional[float] = None
    time_policy: str = "interp"

    name: ClassVar[str] = "reram"

    def __post_init__(self) -> None:
        owner = type(self).__name__
        set_ = object.__setattr__  # frozen dataclass: normalise in place once
        set_(self, "g_max", check_conductance(owner, "g_max", self.g_max))
        if not isinstance(self.coeff_dic, Mapping) or len(self.coeff_dic) == 0:
            raise ValueError(
                f"{owner}.coeff_dic must be a non-empty mapping {{t_seconds > 0: coefficients in µS}}, "
                f"got {self.coeff_dic!r}"
            )
        table: Dict[float, Tuple[float, ...]] = {}
        for key, coeffs in self.coeff_dic.items():
            t = check_real(owner, "coeff_dic key", key, minimum=0.0, strictly_greater=True,
                           expected="a finite time > 0 s")
            table[t] = check_coefficients(owner, f"coeff_dic[{key!r}]", coeffs)
        set_(self, "coeff_dic", dict(sorted(table.items())))
        normalise_scales(self, owner, ("noise_scale",))
        if self.coeff_g_max_reference is not None:
            set_(self, "coeff_g_max_reference", check_real(
                owner, "coeff_g_max_reference", self.coeff_g_max_reference, minimum=0.0,
                strictly_greater=True, expected="None or a finite conductance > 0 µS"))
        if self.time_policy not in RERAM_TIME_POLICIES:
            raise ValueError(
                f"{owner}.time_policy must be one of {list(RERAM_TIME_POLICIES)}, got {self.time_policy!r}"
            )

    def __hash__(self) -> int:
        # Explicit because the coefficient table is a dict; dataclass keeps a user-defined __hash__.
        return hash((self.g_max, tuple(self.coeff_dic.items()), self.noise_scale,
                     self.coeff_g_max_reference, self.time_policy))

    # ------------------------------------------------------------------------------------------
    # Formulas
    # ------------------------------------------------------------------------------------------

    @property
    def effective_coeff_g_max_reference(self) -> float:
        """µS; ``coeff_g_max_reference`` or, when ``None``, ``g_max`` (AIHWKIT's effective value)."""
        return self.g_max if self.coeff_g_max_reference is None else self.coeff_g_max_reference

    @property
    def programming_time(self) -> float:
        """s; the key whose fit programming uses (the earliest, as AIHWKIT)."""
        return next(iter(self.coeff_dic))

    def coefficients_at(self, t_seconds: float) -> Tuple[float, ...]:
        """The µS polynomial coefficients used at ``t_seconds`` (> 0) under ``time_policy``.

        Raises:
            ValueError: bad ``t_seconds``, ``t_seconds == 0`` (no noise is drawn there), or a time
                that is not a key with ``time_policy="strict"``.
        """
        t = check_time(t_seconds)
        if t == 0.0:
            raise ValueError("t_seconds = 0 has no coefficients: drift returns the programmed weights")
        table = self.coeff_dic
        if t in table:
            return tuple(table[t])
        keys = list(table)
        if self.time_policy == "strict":
            raise ValueError(
                f"t_seconds={t_seconds!r} is not a measured time of {type(self).__name__} "
                f"(time_policy='strict'); use one of {keys} s or time_policy='interp'/'hold'"
            )
        pos = bisect.bisect_right(keys, t)  # keys[pos-1] < t < keys[pos]
        if pos == 0:
            return tuple(table[keys[0]])
        if pos == len(keys) or self.time_policy == "hold":
            return tuple(table[keys[pos - 1]])
        lo, hi = keys[pos - 1], keys[pos]
        frac = (math.log(t) - math.log(lo)) / (math.log(hi) - math.log(lo))
        c_lo, c_hi = table[lo], table[hi]
        n = max(len(c_lo), len(c_hi))
        c_lo = c_lo + (0.0,) * (n - len(c_lo))
        c_hi = c_hi + (0.0,) * (n - len(c_hi))
        return tuple((1.0 - frac) * a + frac * b for a, b in zip(c_lo, c_hi))

    def noise_std(self, g_target: Tensor, t_seconds: float) -> Tensor:
        """σ(g, t) in µS (before ``noise_scale``) for targets ``g_target`` (µS) at ``t_seconds`` > 0."""
        sig = poly_noise_std(
            g_target, self.coefficients_at(t_seconds), self.g_max, self.effective_coeff_g_max_reference
        )
        return sig if isinstance(sig, Tensor) else torch.full_like(g_target, sig)

    def _apply_poly(
        self, g_target: Tensor, coeffs: Sequence[float], generator: GeneratorLike
    ) -> Tensor:
        sig = poly_noise_std(g_target, coeffs, self.g_max, self.effective_coeff_g_max_reference)
        g = g_target + self.noise_scale * sig * randn_like(g_target, generator)
        return g.clamp_(min=0.0)  # no negative conductances

    # ------------------------------------------------------------------------------------------
    # Public API
    # ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def program(
        self,
        weights: Tensor,
        generator: GeneratorLike = None,
        keep_conductances: bool = True,
    ) -> ProgrammedState:
        """Program a tile.

        Args:
            weights: ``[out, in]`` floating tensor (any units; normally normalised tile weights).
            generator: source of the ``2 * out * in`` normals (G+ then G-, AIHWKIT's order);
                default: the global RNG of the weights' device.
            keep_conductances: keep the programmed ``[2, out, in]`` conductances (µS) in the state.

        Returns:
            :class:`ProgrammedState` with ``weights`` (programmed), ``scale`` (µS per weight unit),
            ``g_target`` ``[2, out, in]`` µS (needed by ``drift``) and optionally ``conductances``.
        """
        w = check_weights(weights, f"{type(self).__name__}.program")
        check_generator(generator, w)
        g_plus, g_minus, scale = single_pair_to_conductances(w, self.g_max)
        coeffs = self.coeff_dic[self.programming_time]
        gp_plus = self._apply_poly(g_plus, coeffs, generator)
        gp_minus = self._apply_poly(g_minus, coeffs, generator)
        return ProgrammedState(
            weights=single_pair_to_weights(gp_plus, gp_minus, scale),
            scale=scale,
            conductances=torch.stack((gp_plus, gp_minus)) if keep_conductances else None,
            g_target=torch.stack((g_plus, g_minus)),
        )

    @torch.no_grad()
    def drift(
        self, state: ProgrammedState, t_seconds: float, generator: GeneratorLike = None
    ) -> Tensor:
        """Weights ``[out, in]`` read ``t_seconds`` s after programming finished.

        ``t_seconds == 0`` returns a copy of the programmed weights and draws nothing; otherwise
        ``2 * out * in`` normals are drawn (G+ then G-) around the target conductances.

        Raises:
            ValueError: ``t_seconds`` negative / NaN / infinite, or not a measured time under
                ``time_policy="strict"``; a state without ``g_target``; generator on another device.
        """
        t = check_time(t_seconds)
        state.validate()
        if state.g_target is None:
            raise ValueError(
                f"{type(self).__name__}.drift needs a state with target conductances 'g_target' "
                "(a state programmed by ReRAMModel)"
            )
        if t == 0.0:
            return state.weights.clone()
        coeffs = self.coefficients_at(t)
        check_generator(generator, state.weights)
        scale = single_pair_scale(state.weights, self.g_max)
        g_plus, g_minus = (like_layout(g, state.weights) for g in state.g_target)
        g_plus_t = self._apply_poly(g_plus, coeffs, generator)
        g_minus_t = self._apply_poly(g_minus, coeffs, generator)
        return single_pair_to_weights(g_plus_t, g_minus_t, scale)
