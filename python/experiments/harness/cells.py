"""Cells, their keys and the noise-stream version of the results they hold.

A *cell* is one unit of an experiment (one training run and its evaluation): a `key` unique and
stable across reruns (e.g. ``held_out/sst2/hwa_lora/seed0``), and what the script needs to
compute it. A finished cell is a JSON record; it is reused by a rerun only when it was computed
with the run's configuration and with the simulator's current noise stream.

**Noise stream.** `NOISE_STREAM` is the version of the simulator's random draws (programming
noise, read noise, drift): the same seed gives the same numbers only within one version. Every
new record carries ``"noise_stream": NOISE_STREAM``; records written before the field existed
carry version 1 implicitly. When a change of the engine moves the draws, bump `NOISE_STREAM`:
the finished cells of the old version then no longer match, are recomputed, and are never mixed
with new ones in a table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

#: Version of the simulator's noise draws that new cells are computed with (see module docstring).
#: 1: device noise (programming, drift, read noise) from torch.normal_ in AIHWKIT's order (today's
#: ``draws="aihwkit"``); 2: device noise from the extension's Philox streams (``draws="philox"``,
#: the default since issue 24; docs/numerics.md, "Device noise streams").
NOISE_STREAM = 2
#: The version of a record that has no ``noise_stream`` field (cells computed before it existed).
LEGACY_NOISE_STREAM = 1


def noise_stream_of(record: Mapping[str, Any]) -> int:
    """The noise-stream version a finished record was computed with."""
    return int(record.get("noise_stream", LEGACY_NOISE_STREAM))


def stamp(record: dict[str, Any]) -> dict[str, Any]:
    """`record` with the current noise stream written into it (a new cell)."""
    return {**record, "noise_stream": NOISE_STREAM}


def same_config(stored: Mapping[str, Any] | None, mine: Mapping[str, Any]) -> bool:
    """Whether a stored cell's configuration is `mine`. A ``noise_stream`` entry in either side is
    ignored here: the stream is checked on the record (`noise_stream_of`)."""
    if not isinstance(stored, Mapping):
        return False
    strip = lambda d: {k: v for k, v in d.items() if k != "noise_stream"}  # noqa: E731
    return strip(stored) == strip(mine)


def file_name(key: str) -> str:
    """A cell key as one file name (``held_out/sst2/...`` -> ``held_out__sst2__...``)."""
    return key.replace("/", "__")


@dataclass(frozen=True)
class Cell:
    """One cell of a plan. `key` is unique and stable across reruns; `params` are the changes a
    variant makes to the run's recipe, as (name, value) pairs (hashable)."""

    key: str
    kind: str = ""
    task: str = ""
    method: str = ""
    seed: int = 0
    variant: str = ""
    params: tuple[tuple[str, Any], ...] = ()

    def param(self, name: str, default: Any = None) -> Any:
        return dict(self.params).get(name, default)


class PendingCell(Exception):
    """A cell that cannot run yet (e.g. it needs another cell's output): it stays pending."""


def to_compute(cells: Iterable[Cell], done: Mapping[str, Any]) -> list[Cell]:
    """The cells of `cells` not finished in `done` (key -> record), in plan order."""
    return [c for c in cells if c.key not in done]


def select(cells: Iterable[Cell], prefixes: Iterable[str]) -> list[Cell]:
    """The cells whose key starts with one of `prefixes` (all of them when there is none)."""
    prefixes = tuple(prefixes)
    return [c for c in cells if not prefixes or c.key.startswith(prefixes)]
