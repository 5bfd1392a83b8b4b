"""Typed wrappers over `torch.ops.lorafusion.*`, with fake kernels and autograd registered."""

from lorafusion_ext.ops.crossbar import CrossbarAux, crossbar_mvm

__all__ = ["CrossbarAux", "crossbar_mvm"]
