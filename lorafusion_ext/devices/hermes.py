"""PCM model of the IBM HERMES project chip: AIHWKIT 1.1 ``aihwkit.inference.noise.hermes.HermesNoiseModel``.

Fitted on the PCM devices of the HERMES chip (Le Gallo et al., Nat. Electron. 2023;
Khaddam-Aljameh et al., JSSC 2022) with the methodology of Nandakumar et al., ICECS 2019. The
constants below are AIHWKIT's. Same structure as :class:`~lorafusion_ext.devices.PCMLikeModel`
(programming noise, per-device drift exponents, accumulated 1/f read noise), with piecewise fits
that depend on the number of devices per weight (1, or 2 programmed with the multi-device
"MSF" scheme of Vasilopoulos et al., TED 2023).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from .base import (
    GeneratorLike,
    ZERO_CLIP,
    check_coefficients,
    check_read_time,
    check_real,
    check_time,
    normalise_scales,
    poly_noise_std,
    randn_like,
)
from .pair_drift import SinglePairDriftMixin

__all__ = ["HermesModel", "HERMES_G_MAX", "HERMES_T_0", "HERMES_PROG_COEFF"]

#: µS, the largest characterised conductance per weight, by number of devices (AIHWKIT's default g_max).
HERMES_G_MAX: Dict[int, float] = {1: 10.35, 2: 20.7}
#: s, the first-read time of the drift fit, by number of devices.
HERMES_T_0: Dict[int, float] = {1: 200.0, 2: 300.0}
#: σ_prog polynomial (µS, ascending powers of g/g_max), fitted at ``HERMES_G_MAX[n]``.
HERMES_PROG_COEFF: Dict[int, Tuple[float, ...]] = {
    1: (0.15781817, 2.32443916, -2.16310839, 0.68841818),
    2: (0.16603222, 4.71806468, -8.48101252, 4.68961419),
}

# Piecewise fits vs g_rel (AIHWKIT generate_drift_coefficients / apply_drift_noise_to_conductance):
# (threshold, log slope, log offset, clamp min, clamp max, polynomial above the threshold,
# highest power first).
_NU_MEAN = (0.0945, -0.0387, -0.0182, 0.0720, 0.13, (-0.0436, -0.0126, 0.0736))
_NU_STD = {
    1: (0.3039, -0.0120, -0.0023, 0.0124, 0.04, (-0.0165, 0.0116, 0.0104)),
    2: (0.3055, -0.0117, -0.0057, 0.0091, 0.04, (-0.0118, 0.0093, 0.0073)),
}
_READ_QS = {
    1: (0.1591, -0.0078, 0.0038, 0.0179, 0.04, (0.0664, -0.1352, 0.0768, 0.0088)),
    2: (0.16, -0.0117, -0.0069, 0.015, 0.04, (0.0069, -0.0280, 0.0211, 0.0123)),
}


def _piecewise(g_rel: Tensor, fit: Tuple) -> Tensor:
    """``clamp(a ln g + b, lo, hi)`` below the threshold, a polynomial in ``g`` at or above it.

    The polynomial is summed as AIHWKIT writes it: ``c0 g^n + c1 g^(n-1) + ... + c_n``.
    """
    threshold, slope, offset, lo, hi, poly = fit
    low = (slope * torch.log(g_rel) + offset).clamp(min=lo, max=hi)
    degree = len(poly) - 1
    high = poly[0] * g_rel**degree
    for k, c in enumerate(poly[1:-1], start=1):
        power = degree - k
        high = high + c * (g_rel**power if power > 1 else g_rel)
    high = high + poly[-1]
    return torch.where(g_rel < threshold, low, high)


@dataclass(frozen=True)
class HermesModel(SinglePairDriftMixin):
    """HERMES-chip PCM model (AIHWKIT ``HermesNoiseModel`` + single-pair converter).

    Conversion and the structure of every step are those of :class:`PCMLikeModel`:
    ``σ_prog(g) = (Σ_i c_i (g/g_max)^i) · g_max / prog_coeff_g_max_reference`` µS,
    ``g_prog = max(0, g + prog_noise_scale σ_prog N)``; ``ν = drift_scale |μ_ν + σ_ν N|`` with
    ``g_rel = max(1e-7, g/g_max)`` and piecewise fits:

    * ``μ_ν = clamp(-0.0387 ln g_rel - 0.0182, 0.072, 0.13)`` for ``g_rel < 0.0945``, else
      ``-0.0436 g_rel² - 0.0126 g_rel + 0.0736``;
    * ``σ_ν`` (2 devices) ``= clamp(-0.0117 ln g_rel - 0.0057, 0.0091, 0.04)`` below 0.3055, else
      ``-0.0118 g_rel² + 0.0093 g_rel + 0.0073``; (1 device) ``clamp(-0.0120 ln g_rel - 0.0023,
      0.0124, 0.04)`` below 0.3039, else ``-0.0165 g_rel² + 0.0116 g_rel + 0.0104``.

    At ``t`` s after programming (``t' = t + t_0``), on the pair re-derived from the programmed
    weights: ``g_drift = g (t'/t_0)^(-ν)`` (for ``t > 0``),
    ``g(t) = max(0, g_drift + |g_drift| read_noise_scale Q_s sqrt(ln((t' + t_read)/(2 t_read))) N)``
    with ``g_rel = |g|/g_max`` and ``Q_s`` (2 devices) ``= clamp(-0.0117 ln g_rel - 0.0069, 0.015,
    0.04)`` below 0.16, else ``0.0069 g_rel³ - 0.0280 g_rel² + 0.0211 g_rel + 0.0123``; (1 device)
    ``clamp(-0.0078 ln g_rel + 0.0038, 0.0179, 0.04)`` below 0.1591, else
    ``0.0664 g_rel³ - 0.1352 g_rel² + 0.0768 g_rel + 0.0088``.

    With 2 devices AIHWKIT (and so this model) treats the pair as two devices holding the same
    conductance for drift, which overstates the drift measured on chip with MSF programming.

    Args:
        num_devices: devices per weight, 1 or 2.
        g_max: µS, the conductance ``max |W|`` is mapped to; ``None``: the characterised maximum
            (``HERMES_G_MAX``: 20.7 µS for 2 devices, 10.35 µS for 1). At most that maximum.
        prog_coeff: µS programming-noise coefficients; ``None``: the chip fit ``HERMES_PROG_COEFF``.
        prog_coeff_g_max_reference: µS, the g_max the coefficients were fitted at; ``None``: the
            characterised maximum for the default coefficients, ``g_max`` for user coefficients.
        t_read: s, parameter of the 1/f fit; ``0 < t_read <= t_0``.
        t_0: s, first-read time of the drift fit; ``None``: 300 s for 2 devices, 200 s for 1.
        prog_noise_scale: ``>= 0`` multiplier of the programming noise (0 switches it off).
        read_noise_scale: ``>= 0`` multiplier of the read noise (0 switches it off).
        drift_scale: ``>= 0`` multiplier of the drift exponents (0 switches drift off).

    The ``None`` fields are resolved at construction, so the model's fields always hold the values
    in use. (AIHWKIT drops a ``prog_coeff_g_max_reference`` passed together with the default
    coefficients; here it is used.)
    """

    num_devices: int = 2
    g_max: Optional[float] = None
    prog_coeff: Optional[Sequence[float]] = None
    prog_coeff_g_max_reference: Optional[float] = None
    t_read: float = 512.0e-9
    t_0: Optional[float] = None
    prog_noise_scale: float = 1.0
    read_noise_scale: float = 1.0
    drift_scale: float = 1.0

    name: ClassVar[str] = "hermes"

    def __post_init__(self) -> None:
        owner = type(self).__name__
        set_ = object.__setattr__  # frozen dataclass: normalise in place once
        n = self.num_devices
        if isinstance(n, bool) or n not in (1, 2):
            raise ValueError(f"{owner}.num_devices must be 1 or 2 (devices per weight), got {n!r}")
        limit = HERMES_G_MAX[n]
        g_max = limit if self.g_max is None else check_real(
            owner, "g_max", self.g_max, minimum=0.0, strictly_greater=True,
            expected=f"None or a finite conductance in (0, {limit}] µS")
        if g_max > limit:
            raise ValueError(
                f"{owner}.g_max must be at most {limit} µS, the largest conductance characterised "
                f"with num_devices={n}; got {self.g_max!r}"
            )
        set_(self, "g_max", g_max)
        if self.prog_coeff is None:
            coeffs: Tuple[float, ...] = HERMES_PROG_COEFF[n]
            reference = limit
        else:
            coeffs = check_coefficients(owner, "prog_coeff", self.prog_coeff, allow_none=True)
            reference = g_max
        set_(self, "prog_coeff", coeffs)
        if self.prog_coeff_g_max_reference is not None:
            reference = check_real(
                owner, "prog_coeff_g_max_reference", self.prog_coeff_g_max_reference, minimum=0.0,
                strictly_greater=True, expected="None or a finite conductance > 0 µS")
        set_(self, "prog_coeff_g_max_reference", reference)
        t_0 = HERMES_T_0[n] if self.t_0 is None else check_real(
            owner, "t_0", self.t_0, minimum=0.0, strictly_greater=True,
            expected="None or a finite time > 0 s")
        set_(self, "t_0", t_0)
        set_(self, "t_read", check_read_time(owner, self.t_read, t_0))
        normalise_scales(self, owner)

    # ------------------------------------------------------------------------------------------
    # Formulas
    # ------------------------------------------------------------------------------------------

    def programming_noise_std(self, g_target: Tensor) -> Tensor:
        """σ_prog in µS for target conductances ``g_target`` (µS), before ``prog_noise_scale``."""
        sig = poly_noise_std(g_target, self.prog_coeff, self.g_max, self.prog_coeff_g_max_reference)
        return sig if isinstance(sig, Tensor) else torch.full_like(g_target, sig)

    def drift_exponent_params(self, g_target: Tensor) -> Tuple[Tensor, Tensor]:
        """``(μ_ν, σ_ν)`` of the drift exponent for target conductances ``g_target`` (µS)."""
        g_relative = torch.clamp(torch.abs(g_target / self.g_max), min=ZERO_CLIP)
        return _piecewise(g_relative, _NU_MEAN), _piecewise(g_relative, _NU_STD[self.num_devices])

    def read_noise_rel_std(self, g: Tensor, t_seconds: float) -> Tensor:
        """Relative 1/f read-noise std ``Q_s sqrt(ln((t + t_0 + t_read)/(2 t_read)))`` (before
        ``read_noise_scale``) of conductances ``g`` (µS) at ``t_seconds`` s after programming."""
        t = check_time(t_seconds) + self.t_0
        q_s = _piecewise(torch.abs(g) / self.g_max, _READ_QS[self.num_devices])
        return q_s * np.sqrt(np.log((t + self.t_read) / (2 * self.t_read)))

    # ------------------------------------------------------------------------------------------
    # Per-conductance steps (AIHWKIT's three methods)
    # ------------------------------------------------------------------------------------------

    def _program_conductance(self, g_target: Tensor, generator: GeneratorLike) -> Tensor:
        sig_prog = poly_noise_std(g_target, self.prog_coeff, self.g_max, self.prog_coeff_g_max_reference)
        g_prog = g_target + self.prog_noise_scale * sig_prog * randn_like(g_target, generator)
        return g_prog.clamp_(min=0.0)

    def _drift_exponents(self, g_target: Tensor, generator: GeneratorLike) -> Tensor:
        mu, sig = self.drift_exponent_params(g_target)
        nu = torch.abs(mu + sig * randn_like(mu, generator)).clamp(min=0.0)
        return nu * self.drift_scale

    def _drift_conductance(
        self, g_prog: Tensor, nu: Tensor, t_inference: float, generator: GeneratorLike
    ) -> Tensor:
        t = t_inference + self.t_0
        g_drift = g_prog * ((t / self.t_0) ** (-nu)) if t > self.t_0 else g_prog
        sig_noise = self.read_noise_rel_std(g_prog, t_inference)
        g_final = g_drift + torch.abs(g_drift) * self.read_noise_scale * sig_noise * randn_like(
            g_prog, generator
        )
        return g_final.clamp(min=0.0)
