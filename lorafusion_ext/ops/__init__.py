"""Typed wrappers over `torch.ops.lorafusion.*`, with fake kernels and autograd registered."""

from lorafusion_ext.ops.crossbar import CrossbarAux, crossbar_mvm
from lorafusion_ext.ops.pool import POOL_MODES, pool_fusion

__all__ = ["POOL_MODES", "CrossbarAux", "crossbar_mvm", "pool_fusion"]
