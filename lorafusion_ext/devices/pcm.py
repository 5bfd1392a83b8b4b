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
from typing import Any, ClassVar, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from .base import (
    GeneratorLike,
    ZERO_CLIP,
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

__all__ = [
    "PCMLikeModel",
    "CustomDriftPCMLikeModel",
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
class PCMLikeModel(SinglePairDriftMixin):
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
        set_(self, "g_max", check_conductance(owner, "g_max", self.g_max))
        set_(self, "prog_coeff", check_coefficients(owner, "prog_coeff", self.prog_coeff))
        if self.prog_coeff_g_max_reference is not None:
            set_(self, "prog_coeff_g_max_reference", check_real(
                owner, "prog_coeff_g_max_reference", self.prog_coeff_g_max_reference,
                minimum=0.0, strictly_greater=True, expected="None or a finite conductance > 0 µS"))
        set_(self, "t_0", check_real(owner, "t_0", self.t_0, minimum=0.0, strictly_greater=True,
                                     expected="a finite time > 0 s"))
        set_(self, "t_read", check_read_time(owner, self.t_read, self.t_0))
        normalise_scales(self, owner)

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

    def _program_conductance(self, g_target: Tensor, generator: GeneratorLike) -> Tensor:
        sig_prog = poly_noise_std(
            g_target, self.prog_coeff, self.g_max, self.effective_prog_coeff_g_max_reference
        )
        g_prog = g_target + self.prog_noise_scale * sig_prog * randn_like(g_target, generator)
        return g_prog.clamp_(min=0.0)  # no negative conductances

    def _drift_exponents(self, g_target: Tensor, generator: GeneratorLike) -> Tensor:
        mu, sig = self.drift_exponent_params(g_target)
        nu = torch.abs(mu + sig * randn_like(mu, generator)).clamp(min=0.0)
        return nu * self.drift_scale

    def _drift_conductance(
        self, g_prog: Tensor, nu: Tensor, t_inference: float, generator: GeneratorLike
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


def _curve(owner: str, field: str, values: Any, *, minimum: Optional[float], expected: str) -> Tuple[float, ...]:
    """A tuple of at least two finite reals (``>= minimum`` when given), or a ValueError naming it."""
    try:
        if isinstance(values, (str, bytes)):
            raise TypeError
        items = tuple(values)
    except TypeError:
        raise ValueError(
            f"{owner}.{field} must be a sequence of at least 2 {expected}, got {values!r}"
        ) from None
    if len(items) < 2:
        raise ValueError(f"{owner}.{field} must hold at least 2 {expected}, got {len(items)}")
    return tuple(
        check_real(owner, f"{field}[{i}]", v, minimum=minimum, expected=expected)
        for i, v in enumerate(items)
    )


@dataclass(frozen=True)
class CustomDriftPCMLikeModel(PCMLikeModel):
    """PCM-like model with a user drift-exponent curve (AIHWKIT ``CustomDriftPCMLikeNoiseModel``).

    Programming noise, conversion and drift + read noise are those of :class:`PCMLikeModel`. Only
    the drift exponents differ: with the target conductance ``g`` (µS) clipped to
    ``[g_lst[0], g_lst[-1]]``, ``μ_ν(g)`` and ``σ_ν(g)`` are linearly interpolated in the points
    ``(g_lst, nu_mean_lst)`` and ``(g_lst, nu_std_lst)``, and ``ν = drift_scale |μ_ν + σ_ν N|``
    (e.g. the measurements of N. Li et al., Adv. Electron. Mater. 2023).

    As in AIHWKIT, the curve is rounded to float32 before the interpolation (AIHWKIT builds it with
    ``torch.Tensor(list)``), the interpolation is ``numpy.interp`` (float64, on the CPU: tensors on
    another device are copied there and back; programming is not a hot path) and ``μ_ν``, ``σ_ν``
    are float32.

    Args (besides those of :class:`PCMLikeModel`):
        g_lst: µS, at least 2 conductances ``>= 0`` in ascending order. They must cover the
            converter's range ``[0, g_max]``: ``g_lst[0] == 0`` and ``g_lst[-1] >= g_max``
            (AIHWKIT's check; the single-pair converter has g_min = 0).
        nu_mean_lst: mean drift exponents ``μ_ν`` at ``g_lst`` (dimensionless, finite), same length.
        nu_std_lst: standard deviations ``σ_ν >= 0`` at ``g_lst``, same length.
    """

    g_lst: Sequence[float] = ()
    nu_mean_lst: Sequence[float] = ()
    nu_std_lst: Sequence[float] = ()

    name: ClassVar[str] = "pcm_custom_drift"

    def __post_init__(self) -> None:
        super().__post_init__()
        owner = type(self).__name__
        set_ = object.__setattr__
        g = _curve(owner, "g_lst", self.g_lst, minimum=0.0, expected="conductances >= 0 µS")
        mean = _curve(owner, "nu_mean_lst", self.nu_mean_lst, minimum=None,
                      expected="finite drift exponents")
        std = _curve(owner, "nu_std_lst", self.nu_std_lst, minimum=0.0,
                     expected="drift-exponent standard deviations >= 0")
        if any(b < a for a, b in zip(g, g[1:])):
            raise ValueError(f"{owner}.g_lst must be in ascending order (µS), got {g!r}")
        for field, values in (("nu_mean_lst", mean), ("nu_std_lst", std)):
            if len(values) != len(g):
                raise ValueError(
                    f"{owner}.{field} must have one value per g_lst point ({len(g)}), got {len(values)}"
                )
        if g[0] > 0.0 or g[-1] < self.g_max:
            raise ValueError(
                f"{owner}.g_lst must cover the converter's conductances [0, g_max={self.g_max}] µS "
                f"(g_lst[0] = 0 and g_lst[-1] >= g_max), got [{g[0]}, {g[-1]}]"
            )
        set_(self, "g_lst", g)
        set_(self, "nu_mean_lst", mean)
        set_(self, "nu_std_lst", std)

    def drift_exponent_params(self, g_target: Tensor) -> Tuple[Tensor, Tensor]:
        """``(μ_ν, σ_ν)``, float32, interpolated in the user curve at ``g_target`` (µS)."""
        points = torch.tensor(
            (self.g_lst, self.nu_mean_lst, self.nu_std_lst), dtype=torch.float32
        ).numpy()
        g = g_target.clamp(min=float(points[0].min()), max=float(points[0].max()))
        g_np = g.detach().cpu().numpy()
        mean, std = (
            torch.from_numpy(np.interp(g_np, points[0], points[k])).float().to(g_target.device)
            for k in (1, 2)
        )
        return mean, std

    def _drift_exponents(self, g_target: Tensor, generator: GeneratorLike) -> Tensor:
        mu, sig = self.drift_exponent_params(g_target)
        # Drawn like the targets (AIHWKIT: randn_like(g_target)): float64 weights get float64 ν.
        return torch.abs(mu + sig * randn_like(g_target, generator)) * self.drift_scale
