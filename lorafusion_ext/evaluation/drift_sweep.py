"""Drift sweeps: evaluate a programmed analog model at several times after programming, over
several trials (docs/numerics.md, programming and drift).

``drift_sweep(model, evaluate)`` programs the model's analog layers, drifts them to each time of
``times`` and calls ``evaluate(model)`` there, ``trials`` times; the result holds every value and
the mean and standard deviation per time, and writes Markdown, JSON and a PNG plot.

Protocols:

* ``reprogram_each_trial=True`` (default): each trial programs the crossbar again, so the spread
  includes the programming noise, the dominant device-to-device term: the honest statistic.
* ``reprogram_each_trial=False``: one programming draw shared by all trials; trials differ only
  in drift/read noise and the crossbar's output noise (the HWA-LoRA paper's protocol).

The model is left as it was found: its programmed state, noise counters and train/eval mode
are restored after the sweep (the sweep runs in eval mode, where drift compensation applies).
"""

from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from lorafusion_ext.nn.analog_linear import AnalogLinear
from lorafusion_ext.nn.deploy import analog_layers, drift, program
from lorafusion_ext.nn.tile_state import check_draws

__all__ = ["DEFAULT_TIMES", "DriftSweepResult", "drift_sweep", "format_time"]

#: s: 0, 1 hour, 1 day, 1 week, 30 days, 1 year, 10 years.
DEFAULT_TIMES: tuple[float, ...] = (0.0, 3600.0, 86400.0, 604800.0, 2592000.0, 31536000.0, 315360000.0)

_UNITS = (("y", 31536000.0), ("d", 86400.0), ("h", 3600.0), ("min", 60.0), ("s", 1.0))


def format_time(t_seconds: float) -> str:
    """Short label of a time in s: ``0 s``, ``1 h``, ``1 d``, ``1 w``, ``30 d``, ``10 y``, ``2.5 s``."""
    t = float(t_seconds)
    if t == 0:
        return "0 s"
    if t % 604800.0 == 0 and t < 2592000.0:
        return f"{t / 604800.0:g} w"
    for name, size in _UNITS:
        if t >= size and (t % size == 0 or name == "s"):
            return f"{t / size:g} {name}"
    return f"{t:g} s"


@dataclass
class DriftSweepResult:
    """Values of a drift sweep.

    Attributes:
        times: s after programming, in sweep order.
        values: ``values[trial][i]`` = the metric at ``times[i]`` in that trial.
        metric: name of the metric (labels only).
        trials: number of trials.
        reprogram_each_trial: True when each trial drew its own programming.
        seed: the sweep's seed.
    """

    times: tuple[float, ...]
    values: list[list[float]]
    metric: str = "metric"
    trials: int = 0
    reprogram_each_trial: bool = True
    seed: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def mean(self) -> list[float]:
        """Mean over trials per time."""
        return [math.fsum(col) / len(col) for col in self._columns()]

    @property
    def std(self) -> list[float]:
        """Sample standard deviation (ddof = 1) over trials per time; NaN with one trial."""
        out = []
        for col, mu in zip(self._columns(), self.mean):
            n = len(col)
            out.append(math.sqrt(math.fsum((v - mu) ** 2 for v in col) / (n - 1)) if n > 1 else math.nan)
        return out

    def _columns(self) -> list[list[float]]:
        return [[row[i] for row in self.values] for i in range(len(self.times))]

    # ------------------------------------------------------------------ reports
    def to_markdown(self, digits: int = 4) -> str:
        """A Markdown table: one row per time with the mean and std over trials."""
        protocol = "reprogrammed each trial" if self.reprogram_each_trial else "one programming shared by all trials"
        lines = [
            f"| time | {self.metric} (mean) | std |",
            "|---:|---:|---:|",
        ]
        for t, mu, sd in zip(self.times, self.mean, self.std):
            sd_text = "–" if math.isnan(sd) else f"{sd:.{digits}f}"
            lines.append(f"| {format_time(t)} | {mu:.{digits}f} | {sd_text} |")
        lines.append("")
        lines.append(f"{self.trials} trials, {protocol}, seed {self.seed}.")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict; NaN (std of one trial) becomes None."""

        def clean(v: float) -> float | None:
            return None if math.isnan(v) else v

        return {
            "metric": self.metric,
            "times_s": list(self.times),
            "time_labels": [format_time(t) for t in self.times],
            "mean": [clean(v) for v in self.mean],
            "std": [clean(v) for v in self.std],
            "values": [[clean(v) for v in row] for row in self.values],
            "trials": self.trials,
            "reprogram_each_trial": self.reprogram_each_trial,
            "seed": self.seed,
            "meta": self.meta,
        }

    def to_json(self, path: str | os.PathLike[str] | None = None, indent: int = 2) -> str:
        """The result as JSON text (:meth:`to_dict`); also written to `path` when given."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
        return text

    @classmethod
    def from_json(cls, text: str) -> "DriftSweepResult":
        """Inverse of :meth:`to_json` (text, not path)."""
        d = json.loads(text)
        values = [[math.nan if v is None else float(v) for v in row] for row in d["values"]]
        return cls(
            times=tuple(float(t) for t in d["times_s"]),
            values=values,
            metric=d.get("metric", "metric"),
            trials=int(d["trials"]),
            reprogram_each_trial=bool(d["reprogram_each_trial"]),
            seed=int(d["seed"]),
            meta=dict(d.get("meta", {})),
        )

    def plot(self, path: str | os.PathLike[str], title: str | None = None) -> str:
        """Write a PNG: the mean vs time (log axis, t = 0 at the left edge) with ±1 std band and
        the individual trials as dots. Returns the path."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        # A log time axis cannot show t = 0: place it one decade below the smallest positive time.
        positive = [t for t in self.times if t > 0]
        zero_at = min(positive) / 10.0 if positive else 1.0
        xs = [t if t > 0 else zero_at for t in self.times]
        mean, std = self.mean, [0.0 if math.isnan(s) else s for s in self.std]
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
        for row in self.values:
            ax.plot(xs, row, ".", color="0.6", markersize=3, zorder=1)
        ax.plot(xs, mean, "o-", color="C0", label=f"mean of {self.trials} trials", zorder=3)
        ax.fill_between(xs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color="C0", alpha=0.2, label="±1 std", zorder=2)
        ax.set_xscale("log")
        ax.set_xticks(xs)
        ax.set_xticklabels([format_time(t) for t in self.times], rotation=0)
        ax.minorticks_off()
        ax.set_xlabel("time after programming")
        ax.set_ylabel(self.metric)
        protocol = "reprogrammed each trial" if self.reprogram_each_trial else "shared programming"
        ax.set_title(title or f"Drift sweep ({protocol})")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, format="png")
        plt.close(fig)
        return os.fspath(path)


# ------------------------------------------------------------------ the sweep


def _check_times(times: Any) -> tuple[float, ...]:
    try:
        items = list(times)
    except TypeError:
        raise ValueError(f"drift_sweep: times = {times!r}; expected a sequence of times in s") from None
    if not items:
        raise ValueError("drift_sweep: times is empty; expected at least one time in s")
    out = []
    for t in items:
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or not math.isfinite(float(t)) or float(t) < 0:
            raise ValueError(f"drift_sweep: times contains {t!r}; expected finite times >= 0 s")
        out.append(float(t))
    return tuple(out)


def _snapshot(layers: list[tuple[str, AnalogLinear]]) -> list[dict[str, Any]]:
    # What the sweep changes on each layer: programmed state (buffers + child) and noise counter.
    snap = []
    for _, layer in layers:
        snap.append({
            "programmed_weight": layer.programmed_weight,
            "programmed_scales": layer.programmed_scales,
            "drift_alpha": layer.drift_alpha,
            "state": layer._modules.get("programmed_state"),
            "rng_state": layer.rng_state.clone(),
        })
    return snap


def _restore(layers: list[tuple[str, AnalogLinear]], snap: list[dict[str, Any]]) -> None:
    for (_, layer), s in zip(layers, snap):
        layer.programmed_weight = s["programmed_weight"]
        layer.programmed_scales = s["programmed_scales"]
        layer.drift_alpha = s["drift_alpha"]
        if s["state"] is None:
            layer._modules.pop("programmed_state", None)
        else:
            layer._modules["programmed_state"] = s["state"]
        with torch.no_grad():
            layer.rng_state.copy_(s["rng_state"])


def drift_sweep(
    model: nn.Module,
    evaluate: Callable[[nn.Module], float],
    times: Sequence[float] = DEFAULT_TIMES,
    trials: int = 10,
    reprogram_each_trial: bool = True,
    seed: int = 0,
    metric: str = "metric",
    progress: bool = True,
    draws: str = "philox",
) -> DriftSweepResult:
    """Evaluate `model` at each time of `times` after programming, `trials` times.

    Per trial: program (every trial, or once for the whole sweep with
    ``reprogram_each_trial=False``), then for each t: ``drift(model, t)`` (restarting from the
    programmed state) and ``evaluate(model)``. Device noise comes from a generator seeded with
    `seed`, and each analog layer's own noise (output noise, read-outs) is reseeded from `seed`
    for the sweep, so the same call gives the same result; the model's state is restored after.

    Args:
        model: an nn.Module containing AnalogLinear layers at any depth.
        evaluate: ``evaluate(model) -> float`` (a Python number or a one-element tensor), e.g. an
            accuracy on a validation set. It is called in eval mode, under the caller's grad mode.
        times: s after programming; finite, >= 0; default 0, 1 h, 1 d, 1 w, 30 d, 1 y, 10 y.
        trials: number of repetitions (>= 1).
        reprogram_each_trial: program again in each trial (True) or once (False, the paper).
        seed: integer seed of the sweep.
        metric: name of what `evaluate` returns (labels in the reports).
        progress: show a tqdm progress bar (one step per evaluation).
        draws: the device-noise draws, "philox" (default) or "aihwkit" (``lf.program``).

    Returns:
        :class:`DriftSweepResult`.

    Raises:
        ValueError: bad `times`, `trials`, `seed` or `evaluate`, no analog layer in `model`, or an
            `evaluate` that returns something other than a real number.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"drift_sweep: model is a {type(model).__name__}; expected a torch.nn.Module")
    if not callable(evaluate):
        raise ValueError(f"drift_sweep: evaluate is a {type(evaluate).__name__}; expected a callable model -> float")
    ts = _check_times(times)
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"drift_sweep: trials = {trials!r}; expected an integer >= 1")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"drift_sweep: seed = {seed!r}; expected an integer")
    check_draws(draws, "drift_sweep")
    layers = analog_layers(model)
    if not layers:
        raise ValueError(
            f"drift_sweep: model ({type(model).__name__}) contains no AnalogLinear layer; convert it first"
        )
    device = layers[0][1].weight.device
    generator = torch.Generator(device=device).manual_seed(seed)
    seeder = torch.Generator().manual_seed(seed)

    was_training = {m: m.training for m in model.modules()}
    snap = _snapshot(layers)
    values: list[list[float]] = []
    try:
        model.eval()
        for _, layer in layers:
            layer.manual_seed(int(torch.randint(2**62, (1,), generator=seeder)))
        bar = _progress(trials * len(ts), progress)
        try:
            if not reprogram_each_trial:
                program(model, generator, draws)
            for trial in range(trials):
                if reprogram_each_trial:
                    program(model, generator, draws)
                row = []
                for t in ts:
                    drift(model, t, generator, draws)
                    row.append(_as_float(evaluate(model)))
                    bar.set_postfix_str(f"trial {trial + 1}/{trials}, t={format_time(t)}", refresh=False)
                    bar.update(1)
                values.append(row)
        finally:
            bar.close()
    finally:
        _restore(layers, snap)
        for m, mode in was_training.items():
            m.training = mode
    return DriftSweepResult(
        times=ts,
        values=values,
        metric=metric,
        trials=trials,
        reprogram_each_trial=bool(reprogram_each_trial),
        seed=seed,
        meta={"analog_layers": len(layers)},
    )


def _as_float(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"drift_sweep: evaluate returned a tensor of shape {tuple(value.shape)}; expected one number"
            )
        return float(value.item())
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"drift_sweep: evaluate returned {value!r}; expected a real number")
    return float(value)


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="drift sweep", unit="eval", disable=not enabled, leave=True)
