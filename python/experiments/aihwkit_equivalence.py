"""Does one HWA-LoRA training run agree between AIHWKIT and lorafusion_ext? (issue #11, item 1)

HWA-LoRA on MiniLM / SST-2, trained twice per seed from the same starting point:

(a) ``aihwkit``: every linear layer (heads excluded) an AIHWKIT 1.1 ``AnalogLinear`` with its
    torch inference tile (``TorchInferenceRPUConfig``);
(b) ``lorafusion_ext``: our ``AnalogLinear``, built by ``HardwareConfig.from_aihwkit`` from the
    *same* ``rpu_config``.

The HWA-LoRA paper's rpu_config (``--config paper``): 8-bit DAC and ADC, out_noise 0.04,
ADD_NORMAL weight noise 0.067, weight scaling omega 1 columnwise, learned columnwise out-scaling,
``PCMLikeNoiseModel(g_max=25)``, global drift compensation, AIHWKIT's default 512x512 tiles.
``--config paper_one_tile`` is the same with one tile per layer (``max_input_size = 0``).

Same for both engines, per seed: the data order (one training loop, seeded), the LoRA
initialisation (attached to the digital model under one seed before the base layers become
analog) and the head initialisation (the classifier loaded under the seed). What cannot be
shared: the hardware noise draws (AIHWKIT draws from torch's global RNG, we from per-layer
counter-based streams), which also shifts the dropout masks that share torch's RNG with AIHWKIT.
The base layers, including the learned out-scaling, stay frozen in both: HWA-LoRA trains only
the LoRA and the head.

Per engine and seed, the accuracy on the SST-2 dev set at 0 s, 1 h, 1 d, 1 y and 10 y after
programming (mean over `--trials` programming draws), and the training seconds per step; across
seeds, mean ± std and Welch's t-test of the two engines at each time. Writes
``docs/results/aihwkit_equivalence.md``, ``.json`` and ``.png``. Resumable: each finished (engine, seed)
cell is stored under ``--work`` and skipped on a rerun.

    nice -n 19 .venv/bin/python python/experiments/aihwkit_equivalence.py --glue-dir ../shared/data/glue
    .venv/bin/python python/experiments/aihwkit_equivalence.py --quick --model <tiny bert> --glue-dir ...
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from lorafusion_ext import AnalogLinear, HardwareConfig, LoRALinear, attach_lora, drift, program
from lorafusion_ext import targets as target_presets
from lorafusion_ext.nn.convert import HEAD_NAMES, is_head
from lorafusion_ext.evaluation.drift_sweep import format_time
from lorafusion_ext.nn.tile_state import device_model_of
from lorafusion_ext.tasks import DataConfig, get_task
from lorafusion_ext.training.loop import TrainConfig, train

# The folder's shared modules, also when a test loads this file by path.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import RunFolder, command_line, format_mean_std, pyplot, read_json, write_json_atomic, write_page  # noqa: E402

ENGINES = ("aihwkit", "lorafusion_ext")
#: s after programming, and their JSON keys.
TIMES = {"t0": 0.0, "t1h": 3600.0, "t1d": 86400.0, "t1y": 31536000.0, "t10y": 315360000.0}
CONFIGS = ("paper", "paper_one_tile")


def paper_rpu_config(config: str = "paper") -> Any:
    """The HWA-LoRA paper's AIHWKIT ``TorchInferenceRPUConfig`` (see the module docstring)."""
    from aihwkit.inference.compensation.drift import GlobalDriftCompensation
    from aihwkit.inference.noise.pcm import PCMLikeNoiseModel
    from aihwkit.simulator.configs import TorchInferenceRPUConfig
    from aihwkit.simulator.parameters.enums import WeightModifierType

    if config not in CONFIGS:
        raise ValueError(f"config = {config!r}; expected one of {CONFIGS}")
    rpu = TorchInferenceRPUConfig()
    rpu.forward.inp_res = 1 / (2**8 - 2)
    rpu.forward.out_res = 1 / (2**8 - 2)
    rpu.forward.out_noise = 0.04
    rpu.modifier.type = WeightModifierType.ADD_NORMAL
    rpu.modifier.std_dev = 0.067
    rpu.mapping.weight_scaling_omega = 1.0
    rpu.mapping.weight_scaling_columnwise = True
    rpu.mapping.learn_out_scaling = True
    rpu.mapping.out_scaling_columnwise = True
    rpu.noise_model = PCMLikeNoiseModel(g_max=25.0)
    rpu.drift_compensation = GlobalDriftCompensation()
    if config == "paper_one_tile":
        rpu.mapping.max_input_size = 0
        rpu.mapping.max_output_size = 0
    return rpu


# ---------------------------------------------------------------------- the two engines
def _swap_bases(model: nn.Module, make: Callable[[nn.Linear], nn.Module]) -> None:
    for m in model.modules():
        if isinstance(m, LoRALinear) and type(m.base) is nn.Linear:
            m.base = make(m.base)


class AihwkitLoRA(nn.Module):
    """y = base(x) + s · B A dropout(x) around an AIHWKIT AnalogLinear (whose `weight` is not a
    tensor, so LoRALinear's dtype checks do not apply); takes over a LoRALinear's `lora_A`,
    `lora_B`, scale and dropout, the same Parameter objects."""

    def __init__(self, base: nn.Module, lora: LoRALinear) -> None:
        super().__init__()
        self.base = base
        self.lora_A, self.lora_B = lora.lora_A, lora.lora_B
        self.scaling = lora.scaling
        self.dropout = lora.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (self.dropout(x) @ self.lora_A.t() @ self.lora_B.t()) * self.scaling


def build_model(engine: str, model_id: str, rpu: Any, seed: int, rank: int, alpha: float, dropout: float) -> tuple[nn.Module, Any]:
    """The SST-2 classifier with a LoRA on every linear layer whose base is analog on `engine`
    ("digital": left an `nn.Linear`, for speed comparisons).

    The head (loaded under `seed`) and the LoRA (attached to the digital layers under `seed`)
    are the same tensors for both engines; the frozen bases then become analog."""
    task = get_task("sst2")
    model, tok = task.load_model(model_id, seed=seed)
    torch.manual_seed(seed)
    attach_lora(model, rank, alpha, dropout, targets=target_presets.ALL_LINEAR)
    if engine == "digital":  # the same model, bases left digital (a reference for speed)
        pass
    elif engine == "lorafusion_ext":
        hw = HardwareConfig.from_aihwkit(rpu)
        gen = torch.Generator().manual_seed(seed)
        _swap_bases(model, lambda lin: AnalogLinear.from_linear(lin, hw, generator=gen))
    elif engine == "aihwkit":
        from aihwkit.nn import AnalogLinear as AihwkitLinear

        for path, m in list(model.named_modules()):
            if isinstance(m, LoRALinear) and type(m.base) is nn.Linear:
                parent, _, name = path.rpartition(".")
                setattr(model.get_submodule(parent) if parent else model, name,
                        AihwkitLoRA(AihwkitLinear.from_digital(m.base, copy.deepcopy(rpu)), m))
    else:
        raise ValueError(f"engine = {engine!r}; expected one of {ENGINES}")
    for path, p in model.named_parameters():  # LoRA and head only (out-scaling frozen too)
        p.requires_grad_(is_head(path, HEAD_NAMES) or path.endswith(("lora_A", "lora_B")))
    return model, tok


def _aihwkit_layers(model: nn.Module) -> list[nn.Module]:
    from aihwkit.nn.modules.base import AnalogLayerBase

    return [m for m in model.modules() if isinstance(m, AnalogLayerBase)]


def drift_accuracies(engine: str, model: nn.Module, evaluate: Callable[[nn.Module], float], trials: int,
                     seed: int) -> dict[str, list[float]]:
    """{time key: [accuracy per trial]}: each trial programs the crossbar anew (seeded) and
    reads it at every time of TIMES (drift restarts from the programmed state each time)."""
    out: dict[str, list[float]] = {k: [] for k in TIMES}
    model.eval()
    for trial in range(trials):
        trial_seed = seed * 1000 + trial
        if engine == "aihwkit":
            layers = _aihwkit_layers(model)
            torch.manual_seed(trial_seed)  # AIHWKIT's programming and drift draw from torch's RNG
            for layer in layers:
                layer.program_analog_weights()
            for key, t in TIMES.items():
                for layer in layers:
                    layer.drift_analog_weights(t)
                out[key].append(evaluate(model))
        else:
            gen = torch.Generator().manual_seed(trial_seed)
            program(model, generator=gen)
            for key, t in TIMES.items():
                drift(model, t, generator=gen)
                out[key].append(evaluate(model))
    return out


# ---------------------------------------------------------------------- one cell
def run_cell(engine: str, seed: int, args: argparse.Namespace, rpu: Any, data: DataConfig) -> dict[str, Any]:
    task = get_task("sst2")
    model, tok = build_model(engine, args.model, rpu, seed, args.rank, args.alpha, args.dropout)
    train_set, dev = task.train_data(tok, data), task.eval_data(tok, data)
    lora = [p for n, p in model.named_parameters() if p.requires_grad and n.endswith(("lora_A", "lora_B"))]
    head = [p for n, p in model.named_parameters() if p.requires_grad and not n.endswith(("lora_A", "lora_B"))]
    opt = torch.optim.Adam([{"params": lora, "lr": args.lr}, {"params": head, "lr": args.head_lr}])
    tcfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, seed=seed, progress=not args.no_progress)
    t0 = time.perf_counter()
    res = train(model, train_set, opt, tcfg, description=f"{engine} seed {seed}")
    train_s = time.perf_counter() - t0
    digital_eval = task.evaluate(model, dev)["accuracy"]  # eval mode, before programming
    t1 = time.perf_counter()
    acc = drift_accuracies(engine, model, lambda m: task.evaluate(m, dev)["accuracy"], args.trials, seed)
    return {
        "engine": engine, "seed": seed, "s_per_step": train_s / args.steps, "train_s": train_s,
        "eval_s": time.perf_counter() - t1,
        "final_loss": float(sum(res.losses[-10:]) / len(res.losses[-10:])), "accuracy_unprogrammed": digital_eval,
        "accuracy_trials": acc, "accuracy": {k: sum(v) / len(v) for k, v in acc.items()},
    }


KEY_FIELDS = ("model", "steps", "batch_size", "max_length", "rank", "alpha", "dropout", "lr", "head_lr",
              "train_examples", "eval_examples", "trials")


def cell_name(engine: str, seed: int) -> str:
    return f"{engine}_seed{seed}"


def _load_finished(cells: dict[str, dict[int, dict]], folder: RunFolder, seeds: list[int]) -> None:
    done = folder.load()
    for engine in ENGINES:
        for seed in seeds:
            if seed not in cells[engine] and cell_name(engine, seed) in done:
                cells[engine][seed] = done[cell_name(engine, seed)]


def adopt_committed(folder: RunFolder, out: Path, config: str, key: dict, note: Path) -> list[str]:
    """Into a run folder without finished cells (a fresh clone): the cells of the report in
    `out` (`cells_from_report`), and in `note` what its page says and its JSON does not hold (the
    cells' summed time, whether some ran one process per engine)."""
    path = out / "aihwkit_equivalence.json"
    report = read_json(path)
    if report is None or (report.get("config") or {}).get("config") != config:
        return []
    taken = folder.adopt(cells_from_report(report, key, str(path)))
    if taken:
        page = path.with_suffix(".md").read_text() if path.with_suffix(".md").is_file() else ""
        found = re.search(r"sum over the finished cells \(training \+ drift evaluation\): (\d+) s", page)
        write_json_atomic(note, {"source": str(path), "cells_s": float(found.group(1)) if found else 0.0,
                                 "engines_split": "one process per engine (`--engines`)" in page})
    return taken


def cells_from_report(report: dict, key: dict, source: str) -> dict[str, dict]:
    """The finished cells a committed report holds, as cells of the run folder (the report keeps
    each cell's accuracies, seconds per step and unprogrammed accuracy; not its per-trial values,
    final loss or evaluation time). Empty unless the report's recipe is `key`."""
    config = report.get("config", {})
    if not isinstance(config, dict) or {k: config.get(k) for k in KEY_FIELDS} != key:
        return {}
    out = {}
    for engine, e in report.get("engines", {}).items():
        for i, seed in enumerate(e.get("seeds", [])):
            out[cell_name(engine, seed)] = {
                "engine": engine, "seed": seed, "s_per_step": e["s_per_step_per_seed"][i],
                "train_s": e["s_per_step_per_seed"][i] * config["steps"],
                "accuracy_unprogrammed": e["accuracy_unprogrammed"][i],
                "accuracy": {k: e[k][i] for k in TIMES}, "key": key, "adopted_from": source}
    return out


# ---------------------------------------------------------------------- report
def welch_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided Welch t-test p-value (None when either side has < 2 values or no variance)."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return None
    p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return None if math.isnan(p) else p


def summarise(cells: dict[str, dict[int, dict]], seeds: list[int], args: argparse.Namespace, command: str,
              wall_s: float, hw_note: str, adopted: dict | None = None) -> tuple[dict, str]:
    """The JSON and the page. `adopted`: what the page of the cells taken from a committed report
    said and its JSON does not hold (`adopt_committed`)."""
    adopted = adopted or {}
    engines: dict[str, Any] = {}
    for engine in ENGINES:
        done = [cells[engine][s] for s in seeds if s in cells[engine]]
        e: dict[str, Any] = {k: [c["accuracy"][k] for c in done] for k in TIMES}
        e["s_per_step"] = (sum(c["s_per_step"] for c in done) / len(done)) if done else None
        e["s_per_step_per_seed"] = [c["s_per_step"] for c in done]
        e["seeds"] = [c["seed"] for c in done]
        e["accuracy_unprogrammed"] = [c["accuracy_unprogrammed"] for c in done]
        engines[engine] = e
    p = {k: welch_p(engines["aihwkit"][k], engines["lorafusion_ext"][k]) for k in TIMES}
    complete = all(len(engines[e]["seeds"]) == len(seeds) for e in ENGINES)
    result = {
        "engines": engines, "p_value_t0": p["t0"], "p_values": p, "command": command,
        "complete": complete, "seeds": seeds, "wall_time_s": wall_s,
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "work", "report_only")},
        "hardware": hw_note, "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads "
                                        f"{torch.get_num_threads()}, torch {torch.__version__}",
        "data": "SST-2 (GLUE): train split for training, dev split for evaluation",
    }
    lines = [
        "# HWA-LoRA through AIHWKIT vs lorafusion_ext (engine equivalence)",
        "",
        ("**Status: complete.**" if complete else
         "**Status: INCOMPLETE** — finished cells: " + ", ".join(f"{e} seeds {engines[e]['seeds']}" for e in ENGINES)
         + f" of seeds {seeds}. Rerun the command to finish (finished cells are skipped)."),
        "",
        f"Command: `{command}`  ",
        f"Wall time of this invocation: {wall_s:.0f} s; sum over the finished cells (training + drift evaluation): "
        f"{adopted.get('cells_s', 0.0) + sum(c.get('train_s', c['s_per_step'] * args.steps) + c['eval_s'] for e in ENGINES for c in cells[e].values() if 'adopted_from' not in c):.0f} s. "
        f"Machine: {result['machine']}.",
        "",
        f"Model {args.model}, SST-2, {args.steps} steps at batch {args.batch_size}, max length {args.max_length}, "
        f"LoRA r {args.rank}, alpha {args.alpha:g}, dropout {args.dropout:g} on every linear layer, LoRA lr {args.lr:g}, "
        f"head lr {args.head_lr:g}; training examples {args.train_examples or 'all'}, dev examples "
        f"{args.eval_examples or 'all (872)'}. Drift: {args.trials} programming draws per seed (mean per seed); "
        f"table: mean ± std over seeds.",
        "",
        f"rpu_config: `{args.config}` — {hw_note}",
        "",
        "| engine | seeds | " + " | ".join(format_time(t) for t in TIMES.values()) + " | s / step, per seed |",
        "|---|---|" + "---:|" * (len(TIMES) + 1),
    ]
    for engine in ENGINES:
        e = engines[engine]
        cells_txt = []
        for k in TIMES:
            if e[k]:
                cells_txt.append(format_mean_std(e[k], digits=2, scale=100))
            else:
                cells_txt.append("–")
        sps = ", ".join(f"{v:.2f}" for v in e["s_per_step_per_seed"]) or "–"
        lines.append(f"| {engine} | {len(e['seeds'])} | " + " | ".join(cells_txt) + f" | {sps} |")
    lines.append("| Welch p (aihwkit vs ours) | | " + " | ".join("–" if p[k] is None else f"{p[k]:.3f}" for k in TIMES)
                 + " | |")
    lines += [
        "",
        "![Accuracy against drift time per engine](aihwkit_equivalence.png)",
        "",
        "Accuracy in %. Same data order, LoRA initialisation and head initialisation per seed for both engines; "
        "the hardware noise draws and the dropout masks differ (AIHWKIT draws from torch's global RNG, lorafusion_ext "
        "from per-layer counter-based streams). Base layers, including the learned out-scaling, are frozen in both "
        "(HWA-LoRA trains only the LoRA and the head).",
        "",
        "Seconds per step are measured inside this experiment (training only, the same thread count for both); "
        "they are a by-product, not a benchmark: `python/bench/vs_aihwkit.py` times the two engines side by side "
        "on this model and config."
        + (" Some cells were trained by one process per engine (`--engines`), running at the same time on the same "
           "cores as other work: their seconds per step include that contention."
           if adopted.get("engines_split") or any(c.get("engines_in_process") not in (None, list(ENGINES))
                                                  for e in cells.values() for c in e.values())
           else ""),
        "",
    ]
    if complete and p["t0"] is not None:
        lines.append(
            f"What we would not yet conclude: with {len(seeds)} seeds a Welch test has little power; p = {p['t0']:.3f} "
            "at 0 s says only whether a difference as large as the seed spread shows up, not that the engines are equal."
        )
    return result, "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    """Accuracy against drift time, per engine: each seed's mean over programming draws (dots)
    and the mean ± std over seeds (line, band)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    xs = list(range(len(TIMES)))
    for j, engine in enumerate(ENGINES):
        e = result["engines"][engine]
        if not e["seeds"]:
            continue
        vals = [[100 * v for v in e[k]] for k in TIMES]
        means = [sum(v) / len(v) for v in vals]
        sds = [(sum((x - m) ** 2 for x in v) / (len(v) - 1)) ** 0.5 if len(v) > 1 else 0.0 for v, m in zip(vals, means)]
        shift = (j - 0.5) * 0.08
        ax.plot([x + shift for x in xs], means, marker="o", label=f"{engine} ({len(e['seeds'])} seeds)")
        ax.fill_between([x + shift for x in xs], [m - s for m, s in zip(means, sds)],
                        [m + s for m, s in zip(means, sds)], alpha=0.2)
        for x, v in zip(xs, vals):
            ax.scatter([x + shift] * len(v), v, s=10, alpha=0.5, color=ax.lines[-1].get_color())
    ax.set_xticks(xs)
    ax.set_xticklabels([format_time(t) for t in TIMES.values()])
    ax.set_xlabel("time after programming")
    ax.set_ylabel("SST-2 dev accuracy (%)")
    ax.set_title("HWA-LoRA: AIHWKIT vs lorafusion_ext (same recipe)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--glue-dir", default=os.environ.get("LORAFUSION_GLUE_DIR"))
    ap.add_argument("--config", choices=CONFIGS, default="paper",
                    help="paper: AIHWKIT's default 512x512 tiles; paper_one_tile: one tile per layer")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=32.0)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--head-lr", type=float, default=1e-3)
    ap.add_argument("--train-examples", type=int, default=None)
    ap.add_argument("--eval-examples", type=int, default=None)
    ap.add_argument("--trials", type=int, default=3, help="programming draws per seed and engine")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="docs/results", help="folder of aihwkit_equivalence.md / .json")
    ap.add_argument("--work", default="runs/aihwkit_equivalence", help="finished cells (resume)")
    ap.add_argument("--engines", default=",".join(ENGINES),
                    help="engines this process trains (comma-separated; the report covers both): one process "
                         "per engine shares --work")
    ap.add_argument("--report-only", action="store_true", help="write the report from the finished cells, compute nothing")
    ap.add_argument("--quick", action="store_true", help="2 seeds, 2 steps, tiny subsets, 1 trial (a smoke run)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.steps, args.trials = 2, 2, 1
        args.batch_size = min(args.batch_size, 4)
        args.train_examples, args.eval_examples = args.train_examples or 16, args.eval_examples or 8
    if args.seeds < 2:
        ap.error(f"--seeds {args.seeds}: the significance test needs >= 2 seeds per engine (the issue asks for >= 3)")
    run_engines = tuple(e.strip() for e in args.engines.split(",") if e.strip())
    if not run_engines or any(e not in ENGINES for e in run_engines):
        ap.error(f"--engines {args.engines!r}: expected a comma-separated subset of {ENGINES}")
    if args.glue_dir is None or not os.path.isdir(args.glue_dir):
        ap.error(f"--glue-dir {args.glue_dir}: expected a local GLUE folder (SST-2)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run_engines = tuple(e.strip() for e in args.engines.split(",") if e.strip())
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # The computing command (a --report-only rerun only rewrites the report of the same cells).
    command = command_line("python/experiments/aihwkit_equivalence.py", argv, drop=("--report-only",), prefix="")
    rpu = paper_rpu_config(args.config)
    try:
        hw = HardwareConfig.from_aihwkit(rpu)
        # Conversion is per layer: the layers' shapes decide whether the tiling is supported.
        model, _ = build_model("lorafusion_ext", args.model, rpu, 0, args.rank, args.alpha, args.dropout)
        del model
    except ValueError as exc:
        print(f"aihwkit_equivalence: rpu_config {args.config!r} does not convert to lorafusion_ext: {exc}\n"
              f"(--config paper_one_tile uses one tile per layer)", file=sys.stderr)
        return 2
    hw_note = (f"HardwareConfig.from_aihwkit gives DAC {hw.dac.bits} bit, ADC {hw.adc.bits} bit (bound {hw.adc.bound:g}), "
               f"out_noise {hw.out_noise:g}, modifier {hw.modifier.kind} {hw.modifier.std:g}, weight scaling "
               f"{hw.mapping.weight_scaling} omega {hw.mapping.omega:g}, learned out-scaling "
               f"{'columnwise' if hw.mapping.out_scaling_columnwise else 'per tile'}, tiles "
               f"{hw.tiles.max_in or 'whole'}x{hw.tiles.max_out or 'whole'}, bound management "
               f"{hw.bound_management.mode}, device {hw.device.name} g_max {device_model_of(hw).g_max:g} µS, "
               f"drift compensation {hw.device.drift_compensation}.")
    data = DataConfig(args.glue_dir, args.max_length, args.train_examples, args.eval_examples, 0)
    work = Path(args.work) / args.config
    work.mkdir(parents=True, exist_ok=True)
    seeds = list(range(args.seeds))
    cells: dict[str, dict[int, dict]] = {e: {} for e in ENGINES}
    t_start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    key = {k: getattr(args, k) for k in KEY_FIELDS}
    folder = RunFolder(work, config=key)
    # A fresh clone (no finished cell) resumes where the committed report stopped.
    note = Path(args.work) / f"adopted_{args.config}.json"
    taken = adopt_committed(folder, out, args.config, key, note)
    if taken:
        print(f"[aihwkit_equivalence] finished cells taken from the report: {', '.join(taken)}", flush=True)
    adopted = read_json(note)
    _load_finished(cells, folder, seeds)
    for seed in seeds:
        for engine in ENGINES:
            if seed in cells[engine] or args.report_only or engine not in run_engines:
                continue
            cell = run_cell(engine, seed, args, rpu, data)
            cell["engines_in_process"] = list(run_engines)
            cells[engine][seed] = folder.store(cell_name(engine, seed), cell)
            _load_finished(cells, folder, seeds)  # the other engine's process may have finished cells
            result, md = summarise(cells, seeds, args, command, time.perf_counter() - t_start, hw_note, adopted)
            write_page(out, "aihwkit_equivalence", md, result)
    _load_finished(cells, folder, seeds)
    result, md = summarise(cells, seeds, args, command, time.perf_counter() - t_start, hw_note, adopted)
    write_page(out, "aihwkit_equivalence", md, result, plot=lambda path: plot(result, path))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
