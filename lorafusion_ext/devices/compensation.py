"""Drift compensation read-outs (AIHWKIT ``aihwkit/inference/compensation/drift.py``).

The protocol, as in AIHWKIT's ``InferenceTile``: right after programming, the caller feeds the
read-out inputs (identity, one one-hot vector per tile input) through the *noisy* crossbar MVM and
keeps ``baseline = readout(outputs)``. After drifting to time ``t`` it repeats the read-out and
scales every evaluation output of the tile by ``alpha = compensation_alpha(baseline, readout(outputs))``.
The MVM itself is the caller's (crossbar op); this module only holds the arithmetic around it.
"""

from __future__ import annotations

from typing import ClassVar, Optional, Union

import torch
from torch import Tensor

__all__ = [
    "READOUT_MIN",
    "GlobalDriftCompensation",
    "PerColumnDriftCompensation",
    "compensation_alpha",
    "get_drift_compensation",
]

#: Lower clamp of a read-out (AIHWKIT's 0.0001): keeps alpha finite for a tile that reads all zeros.
READOUT_MIN: float = 1e-4


def _check_outputs(outputs: Tensor, where: str) -> None:
    if not isinstance(outputs, Tensor):
        raise ValueError(f"{where}: outputs must be a torch.Tensor, got {type(outputs).__name__}")
    if outputs.numel() == 0:
        raise ValueError(f"{where}: outputs must be non-empty, got shape {tuple(outputs.shape)}")
    if not outputs.is_floating_point():
        raise ValueError(f"{where}: outputs must be floating point, got dtype {outputs.dtype}")


def compensation_alpha(baseline: Tensor, current: Tensor) -> Tensor:
    """Drift compensation factor ``baseline / current`` (AIHWKIT ``BaseDriftCompensation.apply``).

    Args:
        baseline: read-out right after programming (0-d for global, ``[out]`` per column).
        current: read-out at the inference time, same shape (already clamped by ``readout``).

    Returns:
        ``alpha`` with the broadcast shape; multiply the tile's outputs by it in evaluation.
    """
    return baseline / current


class GlobalDriftCompensation:
    """One scalar per tile: ``readout(F(I)) = max(1e-4, mean |F(I)|)``.

    ``F(I)`` is the ``[in_size, out_size]`` output of the noisy MVM for identity inputs.
    """

    name: ClassVar[str] = "global"

    def readout_inputs(
        self,
        in_size: int,
        dtype: torch.dtype = torch.float32,
        device: Optional[Union[torch.device, str]] = None,
    ) -> Tensor:
        """Identity ``[in_size, in_size]`` (AIHWKIT ``get_readout_tensor``: ``eye``), one row per input."""
        if isinstance(in_size, bool) or not isinstance(in_size, int) or in_size <= 0:
            raise ValueError(f"in_size must be a positive int, got {in_size!r}")
        return torch.eye(in_size, dtype=dtype, device=device)

    def readout(self, outputs: Tensor) -> Tensor:
        """0-d ``max(1e-4, mean |outputs|)`` over all elements, outputs' dtype and device."""
        _check_outputs(outputs, f"{type(self).__name__}.readout")
        return torch.clamp(torch.abs(outputs).mean(), min=READOUT_MIN)

    def alpha(self, baseline: Tensor, outputs: Tensor) -> Tensor:
        """``compensation_alpha(baseline, readout(outputs))``."""
        return compensation_alpha(baseline, self.readout(outputs))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


class PerColumnDriftCompensation(GlobalDriftCompensation):
    """One factor per output column: ``readout(F(I)) = max(1e-4, mean_rows |F(I)|)``, shape ``[out]``.

    AIHWKIT ``PerColumnDriftCompensation``: the mean is over the read-out vectors (dim 0).
    """

    name: ClassVar[str] = "per_column"

    def readout(self, outputs: Tensor) -> Tensor:
        """``[out_size]`` ``max(1e-4, mean over dim 0 of |outputs|)`` for ``[in_size, out_size]`` outputs."""
        _check_outputs(outputs, f"{type(self).__name__}.readout")
        if outputs.dim() != 2:
            raise ValueError(
                f"{type(self).__name__}.readout: outputs must be 2-D [in_size, out_size], "
                f"got shape {tuple(outputs.shape)}"
            )
        return torch.clamp(torch.abs(outputs).mean(dim=0), min=READOUT_MIN)


def get_drift_compensation(name: Optional[str]) -> Optional[GlobalDriftCompensation]:
    """``"global"`` / ``"per_column"`` → an instance; ``"none"`` or ``None`` → ``None``.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    if name is None:
        return None
    known = {"global": GlobalDriftCompensation, "per_column": PerColumnDriftCompensation}
    key = name.strip().lower() if isinstance(name, str) else name
    if key == "none":
        return None
    if key not in known:
        raise ValueError(
            f"unknown drift compensation {name!r}; known: {sorted(known) + ['none']}"
        )
    return known[key]()
