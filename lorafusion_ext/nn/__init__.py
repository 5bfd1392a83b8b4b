"""Analog modules: `AnalogLinear` (drop-in for nn.Linear)."""

from lorafusion_ext.nn.analog_linear import AnalogLinear
from lorafusion_ext.nn.mapping import TileLayout

__all__ = ["AnalogLinear", "TileLayout"]
