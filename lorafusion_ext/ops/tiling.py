"""The tile split: how a layer's rows and columns are cut into crossbar tiles (AIHWKIT's rule).

Shared by the layers (`lorafusion_ext.nn.mapping.TileLayout`) and the plain-PyTorch oracle
(`lorafusion_ext.ops.reference`), and the same rule the compiled kernels apply (`split_count`
in csrc).
"""

from __future__ import annotations


def split_sizes(size: int, max_size: int | None) -> list[int]:
    """AIHWKIT's balanced tile split of `size` into chunks of at most `max_size`."""
    if not max_size or size <= max_size:
        return [size]
    n = -(-size // max_size)
    base, extra = divmod(size, n)
    return [base + (i < extra) for i in range(n)]
