"""State-independent drift model: AIHWKIT 1.1 ``aihwkit.inference.noise.custom.StateIndependentNoiseModel``.

A generic single-pair model whose drift exponent statistics and read noise do not depend on the
programmed state (unlike the PCM fits): useful as a simple, tunable baseline. Every step is written
in AIHWKIT's order with AIHWKIT's draws (see :class:`~lorafusion_ext.devices.pair_drift.SinglePairDriftMixin`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .base import (
    GeneratorLike,
    check_coefficients,
    check_conductance,
    check_read_time,
    check_real,
    check_time,
    normalise_scales,
    poly_noise_std,
    randn_like,
)
from .pair_drift import SinglePairDriftMixin

__all__ = ["StateIndependentModel", "STATE_INDEPENDENT_DEFAULT_PROG_COEFF"]

#: σ_prog(g) = c0 + c1 (g/g_max) + c2 (g/g_max)^2 in µS: AIHWKIT's default, a constant 0.2 µS.
STATE_INDEPENDENT_DEFAULT_PROG_COEFF: Tuple[float, ...] = (0.2, 0.0, 0.0)


@dataclass(frozen=True)
class StateIndependentModel(SinglePairDriftMixin):
    """State-independent drift + 1/f read noise (AIHWKIT ``StateIndependentNoiseModel``).

    Conversion (single pair, g_min = 0): ``scale = g_max / max(max|W|, 1e-7)`` µS per weight unit,
    ``G± = clamp(±scale W, 0, g_max)``.

    Programming, per device of each pair (target ``g`` µS):
    ``σ_prog(g) = Σ_i c_i (g/g_max)^i`` µS (no reference rescaling, unlike PCM),
    ``g_prog = max(0, g + prog_noise_scale σ_prog N)``; drift exponent
    ``ν = drift_scale · max(0, |drift_nu_mean + drift_nu_std N|)`` (independent of ``g``).

    Inference at ``t`` s after programming (``t' = t + t_0``): the programmed weights are converted
    to a pair again (new scale from the programmed matrix), ``g_drift = g (t'/t_0)^(-ν)`` (for
    ``t > 0``), and ``g(t) = max(0, g_drift + read_noise_scale |g_drift/g_max|
    sqrt(ln((t' + t_read) / (2 t_read))) N)``. AIHWKIT's read-noise std is thus in units of
    ``g/g_max`` (µS per µS), not relative to ``g``: about 4.8 µS at ``g = g_max`` after one hour
    with the defaults. It is kept as written there.

    Args:
        g_max: µS, the conductance ``max |W|`` is mapped to; ``> 0``.
        prog_coeff: µS, programming-noise polynomial coefficients, ascending powers of ``g/g_max``.
        prog_noise_scale: ``>= 0`` multiplier of the programming noise.
        drift_nu_mean: mean of the drift exponent before ``drift_scale`` (dimensionless, finite).
        drift_nu_std: device-to-device standard deviation of ν, ``>= 0``.
        drift_scale: ``>= 0`` multiplier of ν.
        t_0: s, first-read time of the drift; ``t_seconds`` counts from programming's end.
        read_noise_scale: ``>= 0`` multiplier of the read noise.
        t_read: s, parameter of the 1/f noise; ``0 < t_read <= t_0``.
    """

    g_max: float = 25.0
    prog_coeff: Sequence[float] = STATE_INDEPENDENT_DEFAULT_PROG_COEFF
    prog_noise_scale: float = 1.0
    drift_nu_mean: float = 0.1
    drift_nu_std: float = 0.05
    drift_scale: float = 1.0
    t_0: float = 20.0
    read_noise_scale: float = 1.0
    t_read: float = 250.0e-9

    name: ClassVar[str] = "state_independent"

    def __post_init__(self) -> None:
        owner = type(self).__name__
        set_ = object.__setattr__  # frozen dataclass: normalise in place once
        set_(self, "g_max", check_conductance(owner, "g_max", self.g_max))
        set_(self, "prog_coeff", check_coefficients(owner, "prog_coeff", self.prog_coeff))
        set_(self, "drift_nu_mean", check_real(owner, "drift_nu_mean", self.drift_nu_mean,
                                               expected="a finite drift exponent"))
        set_(self, "drift_nu_std", check_real(owner, "drift_nu_std", self.drift_nu_std, minimum=0.0,
                                              expected="a finite standard deviation >= 0"))
        set_(self, "t_0", check_real(owner, "t_0", self.t_0, minimum=0.0, strictly_greater=True,
                                     expected="a finite time > 0 s"))
        set_(self, "t_read", check_read_time(owner, self.t_read, self.t_0))
        normalise_scales(self, owner)

    # ------------------------------------------------------------------------------------------
    # Formulas
    # ------------------------------------------------------------------------------------------

    def programming_noise_std(self, g_target: Tensor) -> Tensor:
        """σ_prog in µS for target conductances ``g_target`` (µS), before ``prog_noise_scale``."""
        sig: Union[Tensor, float] = poly_noise_std(g_target, self.prog_coeff, self.g_max, self.g_max)
        return sig if isinstance(sig, Tensor) else torch.full_like(g_target, sig)

    def read_noise_std(self, g_drift: Tensor, t_seconds: float) -> Tensor:
        """Read-noise std (µS, before ``read_noise_scale``) of drifted conductances ``g_drift`` (µS)
        at ``t_seconds`` s after programming: ``|g/g_max| sqrt(ln((t + t_0 + t_read) / (2 t_read)))``."""
        t = check_time(t_seconds) + self.t_0
        return torch.abs(g_drift / self.g_max) * np.sqrt(np.log((t + self.t_read) / (2 * self.t_read)))

    # ------------------------------------------------------------------------------------------
    # Per-conductance steps (AIHWKIT's three methods, same op order)
    # ------------------------------------------------------------------------------------------

    def _program_conductance(self, g_target: Tensor, generator: GeneratorLike) -> Tensor:
        sig_prog = poly_noise_std(g_target, self.prog_coeff, self.g_max, self.g_max)
        g_prog = g_target + self.prog_noise_scale * sig_prog * randn_like(g_target, generator)
        return g_prog.clamp_(min=0.0)

    def _drift_exponents(self, g_target: Tensor, generator: GeneratorLike) -> Tensor:
        nu = torch.abs(self.drift_nu_mean + self.drift_nu_std * randn_like(g_target, generator))
        return nu.clamp(min=0.0) * self.drift_scale

    def _drift_conductance(
        self, g_prog: Tensor, nu: Tensor, t_inference: float, generator: GeneratorLike
    ) -> Tensor:
        t = t_inference + self.t_0
        g_drift = g_prog * ((t / self.t_0) ** (-nu)) if t > self.t_0 else g_prog
        # numpy for the scalar, as AIHWKIT (its log/sqrt may differ from math's in the last ulp).
        sig_noise = np.sqrt(np.log((t + self.t_read) / (2 * self.t_read)))
        g_final = g_drift + torch.abs(g_drift / self.g_max) * self.read_noise_scale * sig_noise * randn_like(
            g_drift, generator
        )
        return g_final.clamp(min=0.0)
