"""PCM-like conductance model: programming noise, conductance drift and accumulated 1/f read noise.

A re-implementation of AIHWKIT 1.1 ``aihwkit.inference.noise.pcm.PCMLikeNoiseModel`` with its default
``SinglePairConductanceConverter`` (g_min = 0), as used by ``InferenceTile.program_weights`` /
``drift_weights``. The statistics were fitted on measured PCM devices by Nandakumar et al., ICECS 2019
(https://ieeexplore.ieee.org/abstract/document/8964852); the constants below are AIHWKIT's.

Every floating-point operation is written in AIHWKIT's order and every Gaussian draw is taken in
AIHWKIT's order with AIHWKIT's shapes, so that with the same seed the results are bit-identical to
AIHWKIT (see ``tests/test_devices.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from .base import (
    ZERO_CLIP,
    ProgrammedState,
    check_generator,
    check_real,
    check_time,
    check_weights,
    like_layout,
    poly_noise_std,
    randn_like,
    single_pair_scale,
    single_pair_to_conductances,
    single_pair_to_weights,
)

__all__ = [
    "PCMLikeModel",
    "PCM_DEFAULT_PROG_COEFF",
    "PCM_DEFAULT_PROG_COEFF_G_MAX_REFERENCE",
]

#: σ_prog(g) = c0 + c1 (g/g_max) + c2 (g/g_max)^2 in µS, fitted at g_max = 25 µS (Nandakumar 2019).
PCM_DEFAULT_PROG_COEFF: Tuple[float, ...] = (0.26348, 1.965, -1.1731)
#: The g_max (µS) the default programming-noise fit refers to.
PCM_DEFAULT_PROG_COEFF_G_MAX_REFERENCE: float = 25.0

# Drift exponent statistics vs g_rel = g_target / g_max (AIHWKIT generate_drift_coefficients).
_NU_MU_SLOPE, _NU_MU_OFFSET, _NU_MU_MIN, _NU_MU_MAX = -0.0155, 0.0244, 0.049, 0.1
_NU_SIG_SLOPE, _NU_SIG_OFFSET, _NU_SIG_MIN, _NU_SIG_MAX = -0.0125, -0.0059, 0.008, 0.045
# 1/f read noise: Q_s = min(0.2, 0.0088 / max(1e-3, (g/g_max)^0.65)).
_QS_NUM, _QS_EXP, _QS_DEN_MIN, _QS_MAX = 0.0088, 0.65, 1e-3, 0.2


@dataclass(frozen=True)
class PCMLikeModel:
    """PCM-like device model (AIHWKIT ``PCMLikeNoiseModel`` + single-pair converter).

    Conversion: ``scale = g_max / max(max|W|, 1e-7)`` µS per weight unit,
    ``G+ = clamp(scale W, 0, g_max)``, ``G- = clamp(-scale W, 0, g_max)``.

    Programming (per device of each pair, target ``g`` in µS):
    ``σ_prog(g) = (Σ_i c_i (g/g_max)^i) · g_max / prog_coeff_g_max_reference`` µS,
    ``g_prog = max(0, g + prog_noise_scale σ_prog N)``; drift exponent
    ``ν = drift_scale |μ_ν(g) + σ_ν(g) N|`` with ``g_rel = max(1e-7, g/g_max)``,
    ``μ_ν = clamp(-0.0155 ln g_rel + 0.0244, 0.049, 0.1)``,
    ``σ_ν = clamp(-0.0125 ln g_rel - 0.0059, 0.008, 0.045)``.

    Inference at ``t`` s after programming (``t' = t + t_0``): the programmed weights are converted
    to conductances again (AIHWKIT re-derives the pair from ``(G+ - G-)/scale`` with a new scale from
    the programmed matrix, so the noise of the "off" device is folded into the "on" one);
    ``g_drift = g (t'/t_0)^(-ν)`` (only for ``t > 0``);
    ``Q_s = min(0.2, 0.0088 / max(1e-3, (|g|/g_max)^0.65))``,
    ``σ_rd = Q_s sqrt(ln((t' + t_read) / (2 t_read)))``,
    ``g(t) = max(0, g_drift + |g_drift| read_noise_scale σ_rd N)``. The read noise is drawn at every
    ``t`` including ``t = 0`` (``t' = t_0 > 0``), as in AIHWKIT.

    Args:
        g_max: µS, the conductance ``max |W|`` is mapped to. ``> 0``.
        prog_coeff: programming-noise polynomial coefficients (µS), ascending powers of ``g/g_max``.
        prog_coeff_g_max_reference: µS, the g_max the coefficients were fitted at. ``None`` follows
            AIHWKIT: 25 µS for the default coefficients, ``g_max`` for user coefficients.
        t_0: s, the first-read time of the drift fit; ``t_seconds`` counts from programming's end.
        t_read: s, parameter of the 1/f fit; ``0 < t_read <= t_0`` (so ``σ_rd`` is real at ``t=0``).
        prog_noise_scale: ``>= 0`` multiplier of the programming noise (0 switches it off).
        read_noise_scale: ``>= 0`` multiplier of the read noise (0 switches it off).
        drift_scale: ``>= 0`` multiplier of the drift exponents (0 switches drift off).

    All-zero matrix: as in AIHWKIT, ``max|W|`` is clamped to 1e-7, so the targets are all 0 µS and the
    programming noise of the zero-conductance devices (σ = c0 µS) gives programmed weights of order
    ``c0 · 1e-7 / g_max`` (about 1e-9): tiny, finite, never NaN. ``drift`` then rescales that tiny
    matrix to ``g_max`` again (new scale), so the result stays of that tiny order.
    """

    g_max: float = 25.0
    prog_coeff: Sequence[float] = PCM_DEFAULT_PROG_COEFF
    prog_coeff_g_max_reference: Optional[float] = None
    t_0: float = 20.0
    t_read: float = 250.0e-9
    prog_noise_scale: float = 1.0
    read_noise_scale: float = 1.0
    drift_scale: float = 1.0

    name: ClassVar[str] = "pcm"

    def __post_init__(self) -> None:
        owner = type(self).__name__
        set_ = object.__setattr__  # frozen dataclass: normalise in place once
        set_(self, "g_max", check_real(owner, "g_max", self.g_max, minimum=0.0,
                                       strictly_greater=True, expected="a finite conductance > 0 µS"))
        try:
            coeffs = tuple(self.prog_coeff)
        except TypeError:
            raise ValueError(
                f"{owner}.prog_coeff must be a non-empty sequence of finite µS coefficients, "
                f"got {self.prog_coeff!r}"
            ) from None
        if not coeffs:
            raise ValueError(
                f"{owner}.prog_coeff must be a non-empty sequence of finite µS coefficients, got ()"
            )
        set_(self, "prog_coeff", tuple(
            check_real(owner, f"prog_coeff[{i}]", c, expected="a finite coefficient in µS")
            for i, c in enumerate(coeffs)
        ))
        if self.prog_coeff_g_max_reference is not None:
            set_(self, "prog_coeff_g_max_reference", check_real(
                owner, "prog_coeff_g_max_reference", self.prog_coeff_g_max_reference,
                minimum=0.0, strictly_greater=True, expected="None or a finite conductance > 0 µS"))
        set_(self, "t_0", check_real(owner, "t_0", self.t_0, minimum=0.0, strictly_greater=True,
                                     expected="a finite time > 0 s"))
        set_(self, "t_read", check_real(owner, "t_read", self.t_read, minimum=0.0,
                                        strictly_greater=True, expected="a finite time in (0, t_0] s"))
        if self.t_read > self.t_0:
            # ln((t_0 + t_read) / (2 t_read)) < 0 would make the read-noise std NaN at t = 0.
            raise ValueError(
                f"{owner}.t_read must be a finite time in (0, t_0] s, "
                f"got {self.t_read!r} with t_0={self.t_0!r}"
            )
        for field in ("prog_noise_scale", "read_noise_scale", "drift_scale"):
            set_(self, field, check_real(owner, field, getattr(self, field), minimum=0.0,
                                         expected="a finite scale >= 0"))

    # ------------------------------------------------------------------------------------------
    # Formulas (public so tests and reports can use the exact same expressions)
    # ------------------------------------------------------------------------------------------

    @property
    def effective_prog_coeff_g_max_reference(self) -> float:
        """µS; the reference AIHWKIT would use for these coefficients (see the class docstring)."""
        if self.prog_coeff_g_max_reference is not None:
            return self.prog_coeff_g_max_reference
        if self.prog_coeff == PCM_DEFAULT_PROG_COEFF:
            return PCM_DEFAULT_PROG_COEFF_G_MAX_REFERENCE
        return self.g_max

    def programming_noise_std(self, g_target: Tensor) -> Tensor:
        """σ_prog in µS for target conductances ``g_target`` (µS), before ``prog_noise_scale``."""
        sig = poly_noise_std(
            g_target, self.prog_coeff, self.g_max, self.effective_prog_coeff_g_max_reference
        )
        return sig if isinstance(sig, Tensor) else torch.full_like(g_target, sig)

    def drift_exponent_params(self, g_target: Tensor) -> Tuple[Tensor, Tensor]:
        """``(μ_ν, σ_ν)`` of the drift exponent for target conductances ``g_target`` (µS)."""
        g_relative = torch.clamp(torch.abs(g_target / self.g_max), min=ZERO_CLIP)
        log_g = torch.log(g_relative)
        mu = (_NU_MU_SLOPE * log_g + _NU_MU_OFFSET).clamp(min=_NU_MU_MIN, max=_NU_MU_MAX)
        sig = (_NU_SIG_SLOPE * log_g + _NU_SIG_OFFSET).clamp(min=_NU_SIG_MIN, max=_NU_SIG_MAX)
        return mu, sig

    def read_noise_rel_std(self, g: Tensor, t_seconds: float) -> Tensor:
        """Relative 1/f read-noise std ``σ_rd`` (before ``read_noise_scale``) of conductances ``g``
        (µS) at ``t_seconds`` s after programming."""
        t = check_time(t_seconds) + self.t_0
        q_s = (_QS_NUM / ((torch.abs(g) / self.g_max) ** _QS_EXP).clamp(min=_QS_DEN_MIN)).clamp(
            max=_QS_MAX
        )
        # numpy for the scalar, as AIHWKIT: its log/sqrt may differ from math's in the last ulp.
        return q_s * np.sqrt(np.log((t + self.t_read) / (2 * self.t_read)))

    # ------------------------------------------------------------------------------------------
    # Per-conductance steps (AIHWKIT's three methods)
    # ------------------------------------------------------------------------------------------

    def _program_conductance(self, g_target: Tensor, generator: Optional[torch.Generator]) -> Tensor:
        sig_prog = poly_noise_std(
            g_target, self.prog_coeff, self.g_max, self.effective_prog_coeff_g_max_reference
        )
        g_prog = g_target + self.prog_noise_scale * sig_prog * randn_like(g_target, generator)
        return g_prog.clamp_(min=0.0)  # no negative conductances

    def _drift_exponents(self, g_target: Tensor, generator: Optional[torch.Generator]) -> Tensor:
        mu, sig = self.drift_exponent_params(g_target)
        nu = torch.abs(mu + sig * randn_like(mu, generator)).clamp(min=0.0)
        return nu * self.drift_scale

    def _drift_conductance(
        self, g_prog: Tensor, nu: Tensor, t_inference: float, generator: Optional[torch.Generator]
    ) -> Tensor:
        t = t_inference + self.t_0
        if t > self.t_0:
            g_drift = g_prog * ((t / self.t_0) ** (-nu))
        else:
            g_drift = g_prog
        # AIHWKIT guards the read noise with ``t > 0``; t_0 > 0 is validated, so it always applies.
        sig_noise = self.read_noise_rel_std(g_prog, t_inference)
        g_final = g_drift + torch.abs(g_drift) * self.read_noise_scale * sig_noise * randn_like(
            g_prog, generator
        )
        return g_final.clamp(min=0.0)

    # ------------------------------------------------------------------------------------------
    # Public API
    # ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def program(
        self,
        weights: Tensor,
        generator: Optional[torch.Generator] = None,
        keep_conductances: bool = True,
    ) -> ProgrammedState:
        """Program a tile.

        Args:
            weights: ``[out, in]`` floating tensor (any units; normally normalised tile weights), on
                any device; not modified.
            generator: source of all random numbers (default: the global RNG of that device). It
                consumes ``4 * out * in`` normals in AIHWKIT's order: programming noise G+, ν G+,
                programming noise G-, ν G-.
            keep_conductances: keep the programmed ``[2, out, in]`` conductances in the state
                (informative; ``drift`` does not need them).

        Returns:
            :class:`ProgrammedState` with ``weights`` (programmed, weight units), ``scale``
            (µS per weight unit), ``nu`` ``[2, out, in]`` and optionally ``conductances`` (µS).

        Raises:
            ValueError: ``weights`` not a non-empty 2-D finite floating tensor, or a generator on
                another device type.
        """
        w = check_weights(weights, f"{type(self).__name__}.program")
        check_generator(generator, w)
        g_plus, g_minus, scale = single_pair_to_conductances(w, self.g_max)
        gp_plus = self._program_conductance(g_plus, generator)
        nu_plus = self._drift_exponents(g_plus, generator)
        gp_minus = self._program_conductance(g_minus, generator)
        nu_minus = self._drift_exponents(g_minus, generator)
        programmed = single_pair_to_weights(gp_plus, gp_minus, scale)
        return ProgrammedState(
            weights=programmed,
            scale=scale,
            conductances=torch.stack((gp_plus, gp_minus)) if keep_conductances else None,
            nu=torch.stack((nu_plus, nu_minus)),
        )

    @torch.no_grad()
    def drift(
        self, state: ProgrammedState, t_seconds: float, generator: Optional[torch.Generator] = None
    ) -> Tensor:
        """Weights ``[out, in]`` (weight units) read ``t_seconds`` s after programming finished.

        Each call is an independent draw of the 1/f read noise (``2 * out * in`` normals: G+ then
        G-); the programming draw and ``ν`` are those of ``state``. The state is not modified.

        Raises:
            ValueError: ``t_seconds`` negative, NaN or infinite; ``state`` without ``nu`` or with
                inconsistent shapes; generator on another device type.
        """
        t_inference = check_time(t_seconds)
        state.validate()
        if state.nu is None:
            raise ValueError(
                f"{type(self).__name__}.drift needs a state with drift exponents 'nu' "
                "(a state programmed by PCMLikeModel)"
            )
        check_generator(generator, state.weights)
        g_plus, g_minus, scale = single_pair_to_conductances(state.weights, self.g_max)
        nu_plus, nu_minus = (like_layout(nu, g_plus) for nu in state.nu)
        g_plus_t = self._drift_conductance(g_plus, nu_plus, t_inference, generator)
        g_minus_t = self._drift_conductance(g_minus, nu_minus, t_inference, generator)
        return single_pair_to_weights(g_plus_t, g_minus_t, scale)

    def drift_scale_ratio(self, state: ProgrammedState) -> Tensor:
        """The converter scale ``drift`` uses (µS per weight unit, from the programmed weights)."""
        return single_pair_scale(state.weights, self.g_max)
