"""Seed derivation for the counter-based noise streams: one seed in, independent seeds out.

The kernels key their Philox streams by 62-bit seeds (the two top bits stay free for the key's
offset mixing); every derived seed (a layer's read-out, a tile's device noise, a pool's shrink
and expand noise) is a SplitMix64 chain of the parent seed and a tag or index, masked to 62 bits.
"""

from __future__ import annotations

__all__ = ["MASK62", "splitmix64"]

#: The seeds the kernels take: 62 bits.
MASK62 = (1 << 62) - 1


def splitmix64(x: int) -> int:
    """SplitMix64 of `x` (a 64-bit integer): derives independent seeds from one seed."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)
