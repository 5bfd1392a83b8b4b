"""CMO/HfOx ReRAM model: AIHWKIT 1.1 ``aihwkit.inference.noise.reram.ReRamCMONoiseModel``.

Filamentary conductive-metal-oxide (CMO)/HfOx ReRAM of IBM Research Europe (Falcone et al., in
review, as cited by AIHWKIT), one bidirectional device per weight (AIHWKIT's
``SingleDeviceConductanceConverter``): the smallest weight of the tile maps to ``g_min``, the
largest to ``g_max``. The constants are AIHWKIT's.

AIHWKIT programs and drifts such a tile row by row (its converter returns one tensor, which
``BaseNoiseModel`` iterates over). The same is done here, so that with the same seed the
programming draws are those of AIHWKIT; the per-row loop is a once-per-deployment cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from .base import (
    GeneratorLike,
    ProgrammedState,
    check_generator,
    check_real,
    check_time,
    check_weights,
    normalise_scales,
    randn_like,
)

__all__ = ["ReRamCMOModel", "CMO_COEFF_DICT", "single_device_to_conductances", "single_device_to_weights"]

#: Programming-noise coefficients (µS, ascending powers of g in µS: σ = c0 + c1 g) by the
#: program-and-verify acceptance range (in % of the target: 0.2 % and 2 %).
CMO_COEFF_DICT: Tuple[Tuple[float, Tuple[float, ...]], ...] = (
    (0.2, (0.00081107, 0.00106879)),
    (2.0, (0.0112185391, 0.01129027418)),
)

CoeffTable = Tuple[Tuple[float, Tuple[float, ...]], ...]


def single_device_to_conductances(
    weights: Tensor, g_max: float, g_min: float
) -> Tuple[Tensor, Tensor, Tensor]:
    """AIHWKIT ``SingleDeviceConductanceConverter``: ``min W → g_min``, ``max W → g_max``.

    Returns:
        ``(g, scale, w_min)``: conductances (µS, ``weights``-shaped), the 0-d scale
        ``(g_max - g_min) / (max W - min W)`` in µS per weight unit and the 0-d ``min W``.
    """
    w_min = weights.min()
    w_max = weights.max()
    scale = (g_max - g_min) / (w_max - w_min)
    return (weights - w_min) * scale + g_min, scale, w_min


def single_device_to_weights(g: Tensor, scale: Tensor, w_min: Tensor, g_min: float) -> Tensor:
    """Inverse of :func:`single_device_to_conductances`: ``min W + (g - g_min) / scale``."""
    return w_min + ((g - g_min) / scale)


def _coeff_table(owner: str, value: Any) -> CoeffTable:
    items = value.items() if isinstance(value, Mapping) else value
    try:
        pairs = [(key, coeffs) for key, coeffs in items]
    except (TypeError, ValueError):
        pairs = []
    if not pairs:
        raise ValueError(
            f"{owner}.coeff_dict must be a non-empty mapping {{acceptance range (%): µS coefficients}} "
            f"or a sequence of such pairs, got {value!r}"
        )
    table = {}
    for key, coeffs in pairs:
        k = check_real(owner, "coeff_dict key", key, minimum=0.0, strictly_greater=True,
                       expected="an acceptance range > 0 %")
        try:
            raw = tuple(coeffs)
        except TypeError:
            raw = ()
        if not raw:
            raise ValueError(
                f"{owner}.coeff_dict[{key!r}] must be a non-empty sequence of µS coefficients, got {coeffs!r}"
            )
        table[k] = tuple(
            check_real(owner, f"coeff_dict[{key!r}][{i}]", c, expected="a finite coefficient in µS")
            for i, c in enumerate(raw)
        )
    return tuple(sorted(table.items()))


@dataclass(frozen=True)
class ReRamCMOModel:
    """CMO/HfOx ReRAM, one device per weight (AIHWKIT ``ReRamCMONoiseModel``).

    Conversion: ``scale = (g_max - g_min) / (max W - min W)`` µS per weight unit,
    ``g = (W - min W) scale + g_min`` µS.

    Programming (acceptance range ``r``, coefficients ``c = coeff_dict[r]``, ``g`` in µS, not
    normalised): ``σ_prog(g) = Σ_i c_i g^i`` µS and ``g_prog = g + σ_prog N prog_noise_scale``
    (no clamp, as in AIHWKIT).

    Inference at ``t`` s after programming (``t > 0``; natural logs, ``t`` in s), on the conductances
    re-derived from the programmed weights (AIHWKIT converts them again: their min/max map to
    ``g_min``/``g_max``):

    * conductance decay: ``g_mean = g + decay_mean ln(t) drift_scale`` µS;
    * relaxation spread: ``σ_rel = decay_std[0] ln(t) + decay_std[1]`` µS,
      ``g_drift = g_mean + N σ_rel drift_scale``;
    * read noise: ``σ_rd = read_k log10(g_drift / 1 µS) sqrt(ln((t + t_read) / (2 t_read)))`` µS,
      ``g(t) = clamp(g_drift + σ_rd N read_noise_scale, g_min, g_max)``.

    ``t = 0`` returns the programmed weights (through the converter, as AIHWKIT) and draws nothing.
    Where ``g_drift <= 0`` µS the read-noise fit ``log10(g)`` is undefined and AIHWKIT returns NaN
    weights; here no read noise is added there (``σ_rd = 0``) before the clamp to ``g_min``. With
    the default ``g_min = 9`` µS this needs a relaxation beyond about 6 σ at 10 years.

    Args:
        g_max: µS, the conductance of the largest weight; ``> g_min``.
        g_min: µS, the conductance of the smallest weight; ``>= 0``.
        coeff_dict: ``{acceptance range (%): (c0, c1, ...)}`` µS coefficients in ascending powers
            of ``g`` (µS), as a mapping or a sequence of pairs; stored as a sorted tuple of pairs.
        acceptance_range: %, the key of ``coeff_dict`` used at programming. AIHWKIT's nominal
            default ``2e-2`` is not a key of its table and falls back to the smallest key (0.2),
            which is therefore this model's default; here a value that is not a key raises.
        prog_noise_scale: ``>= 0`` multiplier of the programming noise.
        read_noise_scale: ``>= 0`` multiplier of the read noise.
        drift_scale: ``>= 0`` multiplier of the decay and of the relaxation spread.
        decay_mean: µS per ln(s), AIHWKIT ``decay_dict["mean"][0]``.
        decay_std: ``(a, b)``: µS per ln(s) and µS, AIHWKIT ``decay_dict["std"]``.
        read_k: AIHWKIT ``read_dict["K"]`` (µS per decade of g).
        t_read: s, AIHWKIT ``read_dict["t_read"]``; ``> 0``.
    """

    g_max: float = 88.199997
    g_min: float = 9.0
    coeff_dict: Any = CMO_COEFF_DICT
    acceptance_range: float = 0.2
    prog_noise_scale: float = 1.0
    read_noise_scale: float = 1.0
    drift_scale: float = 1.0
    decay_mean: float = -0.08900206
    decay_std: Sequence[float] = (0.04201137, 0.41183342)
    read_k: float = 0.0277316483
    t_read: float = 1e-6

    name: ClassVar[str] = "reram_cmo"

    def __post_init__(self) -> None:
        owner = type(self).__name__
        set_ = object.__setattr__  # frozen dataclass: normalise in place once
        g_min = check_real(owner, "g_min", self.g_min, minimum=0.0,
                           expected="a finite conductance >= 0 µS")
        g_max = check_real(owner, "g_max", self.g_max, minimum=0.0, strictly_greater=True,
                           expected="a finite conductance > g_min µS")
        if g_max <= g_min:
            raise ValueError(f"{owner}.g_max must be a finite conductance > g_min µS, got {g_max!r} "
                             f"with g_min={g_min!r}")
        set_(self, "g_min", g_min)
        set_(self, "g_max", g_max)
        table = _coeff_table(owner, self.coeff_dict)
        set_(self, "coeff_dict", table)
        acceptance = check_real(owner, "acceptance_range", self.acceptance_range, minimum=0.0,
                                strictly_greater=True, expected="a key of coeff_dict (%)")
        if acceptance not in dict(table):
            raise ValueError(
                f"{owner}.acceptance_range must be a key of coeff_dict {[k for k, _ in table]} (%), "
                f"got {self.acceptance_range!r}"
            )
        set_(self, "acceptance_range", acceptance)
        normalise_scales(self, owner)
        set_(self, "decay_mean", check_real(owner, "decay_mean", self.decay_mean,
                                            expected="a finite decay in µS per ln(s)"))
        try:
            std = tuple(self.decay_std)
        except TypeError:
            std = ()
        if len(std) != 2:
            raise ValueError(
                f"{owner}.decay_std must be 2 finite coefficients (µS per ln(s), µS), got {self.decay_std!r}"
            )
        set_(self, "decay_std", tuple(
            check_real(owner, f"decay_std[{i}]", c, expected="a finite coefficient")
            for i, c in enumerate(std)
        ))
        set_(self, "read_k", check_real(owner, "read_k", self.read_k,
                                        expected="a finite read-noise coefficient"))
        set_(self, "t_read", check_real(owner, "t_read", self.t_read, minimum=0.0, strictly_greater=True,
                                        expected="a finite time > 0 s"))

    # ------------------------------------------------------------------------------------------
    # Formulas
    # ------------------------------------------------------------------------------------------

    @property
    def prog_coeff(self) -> Tuple[float, ...]:
        """µS coefficients of the programming noise at ``acceptance_range``."""
        return dict(self.coeff_dict)[self.acceptance_range]

    def programming_noise_std(self, g_target: Tensor) -> Tensor:
        """σ_prog in µS of targets ``g_target`` (µS), before ``prog_noise_scale``."""
        return self._poly(g_target) + torch.zeros_like(g_target)

    def decay_mean_shift(self, t_seconds: float) -> float:
        """µS, the mean conductance change at ``t_seconds`` > 0: ``decay_mean ln(t) drift_scale``."""
        t = self._positive_time(t_seconds)
        return float(self.decay_mean * np.log(t) * self.drift_scale)

    def relaxation_std(self, t_seconds: float) -> float:
        """µS, ``|σ_rel(t)| drift_scale``: the spread of the decay at ``t_seconds`` > 0."""
        t = self._positive_time(t_seconds)
        return abs(float(self.decay_std[0] * np.log(t) + self.decay_std[1])) * self.drift_scale

    def read_noise_std(self, g_drift: Tensor, t_seconds: float) -> Tensor:
        """µS, ``|σ_rd|`` (before ``read_noise_scale``) of conductances ``g_drift`` (µS) at
        ``t_seconds`` > 0; 0 where ``g_drift <= 0`` (see the class docstring)."""
        t = self._positive_time(t_seconds)
        return torch.abs(self._read_sigma(g_drift, t))

    # ------------------------------------------------------------------------------------------
    # Steps
    # ------------------------------------------------------------------------------------------

    @staticmethod
    def _positive_time(t_seconds: float) -> float:
        t = check_time(t_seconds)
        if t == 0.0:
            raise ValueError("t_seconds must be > 0 s here (at t = 0 nothing has decayed)")
        return t

    def _poly(self, g: Tensor) -> Any:
        # AIHWKIT's op order; its "* g_max / coeff_g_max_reference" is "* 1.0" (it sets the
        # reference to g_max) and is left out.
        coeffs = self.prog_coeff
        mat: Any = 1
        sig: Any = coeffs[0]
        for c in coeffs[1:]:
            mat = mat * g
            sig = sig + mat * c
        return sig

    def _read_sigma(self, g_drift: Tensor, t: float) -> Tensor:
        positive = g_drift > 0
        safe = torch.where(positive, g_drift, torch.ones_like(g_drift))
        # numpy's log10, as AIHWKIT (torch's differs in the last ulp); a CPU round trip per row
        # is fine for a once-per-deployment step.
        log_g = torch.from_numpy(np.log10(safe.detach().cpu().numpy())).to(g_drift.device)
        root = np.sqrt(np.log((t + self.t_read) / (2 * self.t_read)))
        return torch.where(positive, self.read_k * log_g * root, torch.zeros_like(g_drift))

    def _check_spread(self, weights: Tensor, where: str) -> None:
        # One host sync per programming/drift (not a hot path): a constant tile has no
        # single-device mapping (AIHWKIT divides by zero there).
        if not bool(weights.max() > weights.min()):
            raise ValueError(
                f"{where}: a single-device tile needs max(W) > min(W) to map weights to "
                f"[g_min, g_max]; got a constant matrix (all {float(weights.flatten()[0])!r})"
            )

    @torch.no_grad()
    def program(self, weights: Tensor, generator: GeneratorLike = None) -> ProgrammedState:
        """Program a tile.

        Args:
            weights: ``[out, in]`` floating tensor, not constant; not modified.
            generator: source of the ``out * in`` normals, drawn row by row (AIHWKIT's order);
                default: the global RNG of the weights' device.

        Returns:
            :class:`ProgrammedState` with ``weights`` (programmed, weight units) and ``scale``
            (µS per weight unit at programming). A single-device tile has no conductance pair, so
            ``conductances``, ``nu`` and ``g_target`` are ``None``; ``drift`` needs only the weights.

        Raises:
            ValueError: ``weights`` not a non-empty 2-D finite floating tensor, or constant; a
                generator on another device type.
        """
        where = f"{type(self).__name__}.program"
        w = check_weights(weights, where)
        check_generator(generator, w)
        self._check_spread(w, where)
        g_target, scale, w_min = single_device_to_conductances(w, self.g_max, self.g_min)
        rows = []
        for g_row in g_target:
            rows.append(g_row + self._poly(g_row) * randn_like(g_row, generator) * self.prog_noise_scale)
        programmed = single_device_to_weights(torch.stack(rows), scale, w_min, self.g_min)
        return ProgrammedState(weights=programmed, scale=scale)

    @torch.no_grad()
    def drift(
        self, state: ProgrammedState, t_seconds: float, generator: GeneratorLike = None
    ) -> Tensor:
        """Weights ``[out, in]`` read ``t_seconds`` s after programming finished.

        For ``t > 0`` draws, row by row, the relaxation then the read-noise normals (AIHWKIT's
        order). The state is not modified.

        Raises:
            ValueError: ``t_seconds`` negative, NaN or infinite; a state with inconsistent shapes
                or constant weights; generator on another device type.
        """
        t = check_time(t_seconds)
        state.validate()
        check_generator(generator, state.weights)
        self._check_spread(state.weights, f"{type(self).__name__}.drift")
        g_prog, scale, w_min = single_device_to_conductances(state.weights, self.g_max, self.g_min)
        if t == 0.0:
            return single_device_to_weights(g_prog, scale, w_min, self.g_min)
        log_t = np.log(t)
        shift = self.decay_mean * log_t * self.drift_scale
        sigma_relaxation = self.decay_std[0] * log_t + self.decay_std[1]
        rows = []
        for g_row in g_prog:
            g_drift = (g_row + shift) + (randn_like(g_row, generator) * sigma_relaxation * self.drift_scale)
            sigma_read = self._read_sigma(g_drift, t)
            g_final = g_drift + sigma_read * randn_like(g_row, generator) * self.read_noise_scale
            rows.append(g_final.clamp(min=self.g_min, max=self.g_max))
        return single_device_to_weights(torch.stack(rows), scale, w_min, self.g_min)

