"""Programming and drift of the single-pair drift models (PCM-like families).

AIHWKIT's ``PCMLikeNoiseModel``, ``CustomDriftPCMLikeNoiseModel``, ``StateIndependentNoiseModel``
and ``HermesNoiseModel`` share ``BaseNoiseModel.apply_programming_noise`` /
``apply_drift_noise`` with the ``SinglePairConductanceConverter`` (g_min = 0) and differ only in
three per-conductance steps: the programming noise, the drift exponents ν and the drift + read
noise at time ``t``. :class:`SinglePairDriftMixin` holds the shared part, step for step in
AIHWKIT's order (so that equal seeds give equal draws); a model class provides ``g_max`` (µS) and
the three steps.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .base import (
    GeneratorLike,
    ProgrammedState,
    check_generator,
    check_time,
    check_weights,
    like_layout,
    single_pair_scale,
    single_pair_to_conductances,
    single_pair_to_weights,
)

__all__ = ["SinglePairDriftMixin"]


class SinglePairDriftMixin:
    """``program`` / ``drift`` of a single-pair model with per-device drift exponents.

    Subclasses (frozen dataclasses) define ``g_max`` (µS) and:

    * ``_program_conductance(g_target, generator) -> g_prog``: µS, ``g_target``-shaped;
    * ``_drift_exponents(g_target, generator) -> nu``: dimensionless, ``g_target``-shaped;
    * ``_drift_conductance(g_prog, nu, t_inference, generator) -> g(t)``: µS at ``t_inference`` s.

    Random numbers: programming draws, per device of the pair (G+ then G-), the programming noise
    and then ν; ``drift`` draws what ``_drift_conductance`` draws, G+ then G-.
    """

    g_max: float

    def _program_conductance(self, g_target: Tensor, generator: GeneratorLike) -> Tensor:
        raise NotImplementedError

    def _drift_exponents(self, g_target: Tensor, generator: GeneratorLike) -> Tensor:
        raise NotImplementedError

    def _drift_conductance(
        self, g_prog: Tensor, nu: Tensor, t_inference: float, generator: GeneratorLike
    ) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def program(
        self,
        weights: Tensor,
        generator: GeneratorLike = None,
        keep_conductances: bool = True,
    ) -> ProgrammedState:
        """Program a tile.

        Args:
            weights: ``[out, in]`` floating tensor (any units; normally normalised tile weights), on
                any device; not modified.
            generator: source of all random numbers (default: the global RNG of that device), drawn
                in AIHWKIT's order: programming noise G+, ν G+, programming noise G-, ν G-.
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
        self, state: ProgrammedState, t_seconds: float, generator: GeneratorLike = None
    ) -> Tensor:
        """Weights ``[out, in]`` (weight units) read ``t_seconds`` s after programming finished.

        As in AIHWKIT, the programmed weights are converted to a conductance pair again (new scale
        from the programmed matrix) and each device drifts with its ν from ``state``. Each call is
        an independent draw of the read noise; the state is not modified.

        Raises:
            ValueError: ``t_seconds`` negative, NaN or infinite; ``state`` without ``nu`` or with
                inconsistent shapes; generator on another device type.
        """
        t_inference = check_time(t_seconds)
        state.validate()
        if state.nu is None:
            raise ValueError(
                f"{type(self).__name__}.drift needs a state with drift exponents 'nu' "
                f"(a state programmed by {type(self).__name__})"
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
