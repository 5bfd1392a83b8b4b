"""The HWA-LoRA paper's experiments on this project's engine (issue #11, item 2).

On all-MiniLM-L6-v2 (SST-2 unless said otherwise), every linear layer analog (`pcm_paper`),
heads digital; one training recipe for every method (`--steps` at `--batch-size`, LoRA lr
`--lr`, head lr `--head-lr`), 3 drift trials per evaluation:

1. **Baselines** at 0 s, 1 h, 1 d, 1 y, 10 y: digital LoRA with no hardware; that digital LoRA
   deployed on the crossbar without hardware-aware training; HWA-LoRA (each trial programs the
   crossbar anew).
2. **LoRA placement**: all linear layers, attention (Q, K, V, O), Q and V, FFN: trainable
   parameters and accuracy at 0 s and 10 y.
3. **Rank sweep**: r in {1, 2, 4, 8, 16}, accuracy at 0 s and 10 y.
4. **Hardware change**: the 8-bit HWA-LoRA on one programmed crossbar, its DAC/ADC switched to
   6 bit (drop); then a new LoRA trained at 6 bit through the same programmed crossbar, no cell
   reprogrammed (recovery). One programming draw, 3 drift trials.
5. **Multi-task**: one programmed crossbar serving every task held locally with a training
   split (SST-2, CoLA, MRPC, STS-B, RTE and SQuAD), each through its own HWA-LoRA and head, at
   0 s and 10 y. One programming draw, 3 drift trials.
6. **SQuAD v1.1**: HWA-LoRA with a span head, F1 / EM at the five times (offline: the article
   split of the official dev set, see `lorafusion_ext.data.squad`).

``--sections`` picks the experiments (default: all six). Two pages: every section at one short
budget (the defaults, 300 steps: ``docs/results/hwa_lora_short_budget.md``), and the sections
that need few trainings -- baselines, multi-task, SQuAD -- at the real budget
(``--sections baselines,multitask,squad`` with per-task steps: ``docs/results/hwa_lora.md``).
``--page`` names the page (default: the short-budget page when a section of the short budget
alone -- placement, ranks, hardware change -- is computed, else ``hwa_lora``), written as
``.md``, ``.json`` and ``.png`` with the command and wall time.

``--from-sweep DIR`` (the budget sweep's run folder, ``python/experiments/budget_sweep.py``):
the SST-2 HWA-LoRA and digital LoRA of the baselines and the SST-2, STS-B and MRPC adapters of
the multi-task table are the sweep's seed-0 runs at this script's steps of that task, loaded
and evaluated here instead of trained again. Only when the training protocol is the same
(model, hardware, batch, max length, learning rates, length grouping, training examples, data
seed and LoRA config); otherwise the script refuses, naming what differs.
Resumable: each finished cell (JSON, plus the trained adapter where later cells need it) is
stored under ``--work`` and skipped on a rerun; training checkpoints every 50 steps. A partial
run writes the finished cells and says which are missing, after every cell. The report's JSON
holds the finished cells: a checkout without ``--work`` (a fresh clone of a committed partial
report) takes them back and computes only the missing ones.

Two cores: ``--workers 2 --threads 1`` runs a second process beside the first; they share
``--work``, each cell and each adapter's training is locked by the process computing it (the
other skips the cell or waits for the adapter), and the first process writes the report.

    nice -n 19 .venv/bin/python python/experiments/hwa_lora_paper.py --glue-dir ../shared/data/glue \
        --workers 2 --threads 1                                     # hwa_lora_short_budget.md
    nice -n 19 .venv/bin/python python/experiments/hwa_lora_paper.py --glue-dir ../shared/data/glue \
        --workers 2 --threads 1 --sections baselines,multitask,squad --group-by-length 50 \
        --steps 1000 --task-steps stsb=540,mrpc=345,cola=804,rte=234 --from-sweep results/budget_sweep \
        --squad-steps 1300 --squad-lr 0.003 --squad-head-lr 0.003   # hwa_lora.md

The real budget: each GLUE task 3 epochs at batch 32 or 2,000 steps, whichever is fewer (the
budget sweep's largest budget; SST-2 1,000 as run there); SQuAD about 4 epochs of its 10,298
training windows (322 steps an epoch at max length 192) at LoRA and head lr 3e-3, where a
probe of the digital LoRA at 3e-3 reached the F1 that 300 steps at 1e-3 give in 50 steps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from lorafusion_ext import AnalogLinear, HardwareConfig, analog_layers, attach_lora, drift, program, trainable_parameters
from lorafusion_ext import targets as target_presets
from lorafusion_ext.nn.convert import lora_layers
from lorafusion_ext.evaluation.drift_sweep import format_time
from lorafusion_ext.hardware import ADC, DAC
from lorafusion_ext.apps.pipelines import drift_evaluation
from lorafusion_ext.tasks import DataConfig, Task, get_task
from lorafusion_ext.training.loop import TrainConfig
from lorafusion_ext.training.methods import HWALoRAConfig, analog_model, load_task_state, task_state, train_hwa_lora

# The folder's shared modules, also when a test loads this file by path.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (Claims, ProcessLock, RunFolder, adapter_config, command_line, format_mean_std,  # noqa: E402
                     load_adapter, read_json, write_page)

TIMES = (0.0, 3600.0, 86400.0, 31536000.0, 315360000.0)
TEN_YEARS = 315360000.0
#: label -> (cell slug, target patterns); "all" is the baseline HWA-LoRA cell.
PLACEMENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "all linear": ("all", target_presets.ALL_LINEAR),
    "attention (Q, K, V, O)": ("attention", target_presets.ATTENTION),
    "Q, V": ("qv", target_presets.QV),
    "FFN": ("ffn", (r"layer\.\d+\.intermediate\.dense", r"layer\.\d+\.output\.dense")),
}


def placement_cell(label: str) -> str:
    slug = PLACEMENTS[label][0]
    return "baseline_hwa" if slug == "all" else f"placement_hwa_sst2_r8_{slug}"
RANKS = (1, 2, 4, 8, 16)
MULTI_TASKS = ("sst2", "cola", "mrpc", "stsb", "rte", "squad")
#: The experiments, in report order; `--sections` picks some.
SECTIONS = ("baselines", "placement", "ranks", "hardware_change", "multitask", "squad")
#: The sections of the real-budget page (few trainings each); the others stay at the short budget.
REAL_BUDGET_SECTIONS = ("baselines", "multitask", "squad")
SHORT_PAGE, REAL_PAGE = "hwa_lora_short_budget", "hwa_lora"
#: Fields of the budget sweep's config (`sweep.protocol.sweep_config`) that decide a trained
#: adapter, and this script's value of each; the others (drift trials, dev examples, the full
#: fine-tune's lr) only change the sweep's own evaluation.
SWEEP_TRAINING_FIELDS: dict[str, Callable[[argparse.Namespace], Any]] = {
    "model": lambda a: a.model, "hardware": lambda a: "pcm_paper", "batch_size": lambda a: a.batch_size,
    "max_length": lambda a: a.max_length, "lora_lr": lambda a: a.lr, "head_lr": lambda a: a.head_lr,
    "group_by_length": lambda a: a.group_by_length, "train_examples": lambda a: a.train_examples,
    "data_seed": lambda a: 0,
}


class SweepMismatch(ValueError):
    """--from-sweep: a needed adapter of the budget sweep is missing or was trained otherwise."""


class Runner:
    """Cells stored as JSON under `work` (a `harness.RunFolder` keyed by the recipe); a finished
    cell is read back instead of recomputed. Several processes may share `work` (`--workers`): a
    cell (`harness.Claims`), and each adapter's training (`ProcessLock`), is locked by the
    process computing it; the others skip the cell or wait for the adapter."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.hw = HardwareConfig.preset("pcm_paper")
        self.cells: dict[str, Any] = {}
        self.after_cell: Callable[[], None] | None = None  # the reporting process rewrites the report
        self.key = {k: getattr(args, k) for k in ("model", "steps", "batch_size", "max_length", "lr", "head_lr",
                                                   "train_examples", "eval_examples", "trials", "squad_steps",
                                                   "squad_max_length", "squad_doc_stride", "squad_eval_examples")}
        # Recipe fields added later enter the key only when set, so that the cells of runs
        # recorded before them keep matching.
        if args.task_steps:
            self.key["task_steps"] = dict(sorted(args.task_steps.items()))
        if args.group_by_length:
            self.key["group_by_length"] = args.group_by_length
        for k in ("squad_lr", "squad_head_lr"):
            if getattr(args, k) is not None:
                self.key[k] = getattr(args, k)
        self.folder = RunFolder(self.work, config=self.key)
        self.claims = Claims(self.work, suffix=".lock")
        #: The budget sweep's stored adapters (--from-sweep), or None.
        self.sweep_dir = Path(args.from_sweep) / "adapters" if args.from_sweep else None
        if self.sweep_dir is not None:
            self._check_sweep_lora()

    # ---------------------------------------------------------------- the budget sweep's adapters
    def _check_sweep_lora(self) -> None:
        """The sweep's LoRA config (`sweep.methods.lora_config`) must be this script's: raises
        SweepMismatch naming the fields that differ."""
        from dataclasses import asdict

        from sweep.methods import lora_config
        from sweep.protocol import Recipe

        theirs = asdict(lora_config(Recipe(lora_lr=self.args.lr, head_lr=self.args.head_lr)))
        ours = asdict(self.lcfg())
        diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        if diff:
            raise SweepMismatch(f"--from-sweep: the sweep's LoRA config differs in {diff}: "
                                f"{ {k: theirs.get(k) for k in diff} } there, { {k: ours.get(k) for k in diff} } here")

    def sweep_key(self, task_name: str, method: str) -> str | None:
        """The budget sweep's seed-0 cell of `method` ("hwa_lora", "digital_lora") on `task_name`
        at this run's steps of that task; None without --from-sweep or for a task the sweep does
        not train (`sweep.protocol.TASKS`)."""
        from sweep.protocol import TASKS, cell_key

        if self.sweep_dir is None or task_name not in TASKS:
            return None
        return cell_key(task_name, method, self.steps(get_task(task_name)), 0)

    def sweep_state(self, task_name: str, method: str) -> tuple[dict[str, torch.Tensor], str] | None:
        """(the trained LoRA and head, the sweep cell key) of `sweep_key`, or None when that is None.
        Raises SweepMismatch when the adapter is missing or its training differs from this run's
        (it names the fields: `SWEEP_TRAINING_FIELDS`)."""
        key = self.sweep_key(task_name, method)
        if key is None:
            return None
        assert self.sweep_dir is not None
        stored = adapter_config(self.sweep_dir, key)
        if stored is None:
            prefix = key.rsplit("/b", 1)[0].replace("/", "__")
            have = sorted(p.stem.replace("__", "/") for p in self.sweep_dir.glob(f"{prefix}__b*__seed0.pt"))
            raise SweepMismatch(f"--from-sweep: no adapter {key!r} under {self.sweep_dir} (its seed-0 {task_name} "
                                f"{method} adapters: {have or 'none'}); set this task's steps to a budget the sweep "
                                "has finished, or wait for its cell")
        ours = {k: f(self.args) for k, f in SWEEP_TRAINING_FIELDS.items()}
        diff = sorted(k for k in ours if stored.get(k) != ours[k])
        if diff:
            raise SweepMismatch(f"--from-sweep: {key!r} was trained with another protocol: "
                                + "; ".join(f"{k} {stored.get(k)!r} there, {ours[k]!r} here" for k in diff))
        return load_adapter(self.sweep_dir, key, stored), key

    def check_sweep(self, sections: tuple[str, ...]) -> None:
        """Every sweep adapter that the unfinished cells of `sections` will load is there and of
        this run's protocol (before any training starts; raises SweepMismatch)."""
        if self.sweep_dir is None or self.args.report_only:
            return
        needs: list[tuple[str, str]] = []
        if "baselines" in sections:
            needs += [("sst2", "digital_lora")] * (self.folder.get("baseline_digital") is None)
            needs += [("sst2", "hwa_lora")] * (self.folder.get("baseline_hwa") is None)
        if "hardware_change" in sections and self.folder.get("hardware_change") is None:
            needs.append(("sst2", "hwa_lora"))
        if "multitask" in sections and self.folder.get("multitask") is None:
            needs += [(n, "hwa_lora") for n in MULTI_TASKS]
        problems = []
        for task_name, method in dict.fromkeys(needs):
            try:
                self.sweep_state(task_name, method)
            except SweepMismatch as exc:
                problems.append(str(exc))
        if problems:
            raise SweepMismatch("\n".join(problems))

    def load_from_sweep(self, model: nn.Module, task: Task, data: DataConfig, lcfg: HWALoRAConfig,
                        method: str) -> dict | None:
        """Attach `lcfg`'s LoRA to `model` and load the sweep's trained LoRA and head of `task`
        into it: the training record (steps, trainable parameters, the sweep cell it came from),
        or None when this run does not take `task` from the sweep."""
        found = self.sweep_state(task.name, method)
        if found is None:
            return None
        state, key = found
        attach_lora(model, lcfg.rank, lcfg.alpha, lcfg.dropout, targets=lcfg.targets)
        load_task_state(model, state)
        return {"train_s": None, "steps": self.steps(task), "trainable": trainable_parameters(model),
                "data": task.describe_data(data), "adapter": f"budget sweep cell {key} ({self.sweep_dir})"}

    # ---------------------------------------------------------------- plumbing
    def tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        from lorafusion_ext.models import resolve_model_path

        return AutoTokenizer.from_pretrained(resolve_model_path(self.args.model))

    def adopt(self, report: Path) -> list[str]:
        """Take the finished cells of this configuration from an earlier report (`hwa_lora.json`)
        into `work`, so that a fresh checkout whose work folder is gone resumes where the committed
        report stopped (only into a work folder without finished cells: `RunFolder.adopt`).
        Trained adapters are not in the report: a later cell that needs one retrains it (seeded,
        so the same adapter). Returns the names adopted."""
        cells = (read_json(report) or {}).get("cells", {})
        return self.folder.adopt(cells) if isinstance(cells, dict) else []

    def reload(self) -> None:
        """Read every finished cell of this configuration (some may come from other workers)."""
        self.cells.update(self.folder.load())

    def cell(self, name: str, compute: Callable[[], dict]) -> dict | None:
        stored = self.folder.get(name)
        if stored is None:
            if self.args.report_only or (self.args.only and not any(name.startswith(p) for p in self.args.only)):
                return None
            stored = self.folder.compute_once(name, lambda: {**compute(), "worker": self.args.worker_index},
                                              self.claims, lambda msg: print(f"[hwa_lora_paper] {msg}", flush=True))
            if stored is None:
                return None
            self.cells[name] = stored
            if self.after_cell is not None:
                self.after_cell()
            return stored
        self.cells[name] = stored
        return stored

    def data(self, task: Task) -> DataConfig:
        a = self.args
        if task.kind == "extractive_qa":
            return DataConfig(a.glue_dir, a.squad_max_length, a.train_examples, a.squad_eval_examples, 0,
                              doc_stride=a.squad_doc_stride)
        return DataConfig(a.glue_dir, a.max_length, a.train_examples, a.eval_examples, 0)

    def steps(self, task: Task) -> int:
        """Training steps of a run on `task`: --squad-steps for extractive QA, else the task's
        --task-steps entry, else --steps."""
        a = self.args
        if task.kind == "extractive_qa":
            return a.squad_steps
        return a.task_steps.get(task.name, a.steps)

    def tcfg(self, name: str, steps: int | None = None) -> TrainConfig:
        a = self.args
        return TrainConfig(steps=steps or a.steps, batch_size=a.batch_size, seed=0, progress=not a.no_progress,
                           checkpoint_dir=str(self.work / name / "ckpt"), checkpoint_every=50, resume=True,
                           group_by_length=a.group_by_length)

    def lcfg(self, rank: int = 8, targets: tuple[str, ...] = target_presets.ALL_LINEAR) -> HWALoRAConfig:
        return HWALoRAConfig(rank=rank, alpha=32.0, dropout=0.1, lr=self.args.lr, head_lr=self.args.head_lr,
                             targets=targets)

    def squad_lcfg(self, lcfg: HWALoRAConfig) -> HWALoRAConfig:
        """`lcfg` with the SQuAD runs' learning rates (--squad-lr, --squad-head-lr where given)."""
        a = self.args
        return replace(lcfg, lr=a.lr if a.squad_lr is None else a.squad_lr,
                       head_lr=a.head_lr if a.squad_head_lr is None else a.squad_head_lr)

    def sweep(self, model: nn.Module, task: Task, dev: Any, times: tuple[float, ...]) -> dict:
        s = drift_evaluation(model, dev, task, times, self.args.trials, seed=0, progress=not self.args.no_progress)
        return s.to_dict()

    def train_hwa(self, name: str, task_name: str, lcfg: HWALoRAConfig,
                  hw: HardwareConfig | None = None) -> tuple[nn.Module, Task, Any, dict]:
        """Train (or reload) an HWA-LoRA; its task state is saved under work/name."""
        task = get_task(task_name)
        if task.kind == "extractive_qa":
            lcfg = self.squad_lcfg(lcfg)
        model, tok = analog_model(self.args.model, task, hw or self.hw, seed=0)
        data = self.data(task)
        dev = task.eval_data(tok, data)
        if hw is None and name == f"hwa_{task_name}_r8_all" and lcfg == self.lcfg():
            info = self.load_from_sweep(model, task, data, lcfg, "hwa_lora")
            if info is not None:
                return model, task, dev, info
        state_path = self.work / name / "task_state.pt"
        (self.work / name).mkdir(exist_ok=True)
        lock = ProcessLock(self.work / name / "train.lock")
        lock.acquire()  # another worker training this adapter: wait for it, then load its result
        try:
            return self._train_or_load(name, model, tok, task, lcfg, data, dev, state_path)
        finally:
            lock.release()

    def _train_or_load(self, name: str, model: nn.Module, tok: Any, task: Task, lcfg: HWALoRAConfig,
                       data: DataConfig, dev: Any, state_path: Path) -> tuple[nn.Module, Task, Any, dict]:
        if state_path.is_file():
            attach_lora(model, lcfg.rank, lcfg.alpha, lcfg.dropout, targets=lcfg.targets)
            load_task_state(model, torch.load(state_path, weights_only=True))
            info = json.loads((self.work / name / "train.json").read_text())
        else:
            steps = self.steps(task)
            t0 = time.perf_counter()
            res = train_hwa_lora(model, task.train_data(tok, data), lcfg, self.tcfg(name, steps), description=name)
            info = {"train_s": time.perf_counter() - t0, "steps": res.steps,
                    "final_loss": sum(res.losses[-10:]) / max(1, len(res.losses[-10:])),
                    "trainable": trainable_parameters(model), "data": task.describe_data(data)}
            (self.work / name / "train.json").write_text(json.dumps(info, indent=2))
            tmp = state_path.with_suffix(".pt.tmp")
            torch.save(task_state(model), tmp)
            tmp.replace(state_path)  # last: its presence means the adapter is complete
        return model, task, dev, info


# ---------------------------------------------------------------------- experiments
def baselines(r: Runner) -> None:
    def hwa() -> dict:
        model, task, dev, info = r.train_hwa("hwa_sst2_r8_all", "sst2", r.lcfg())
        return {**info, "sweep": r.sweep(model, task, dev, TIMES)}

    def digital() -> dict:
        task = get_task("sst2")
        model, tok = task.load_model(r.args.model, seed=0)
        data = r.data(task)
        dev = task.eval_data(tok, data)
        cfg = r.lcfg()
        trained = r.load_from_sweep(model, task, data, cfg, "digital_lora")
        if trained is None:
            t0 = time.perf_counter()
            res = train_hwa_lora(model, task.train_data(tok, data), cfg, r.tcfg("digital_sst2", r.steps(task)),
                                 description="digital")
            trained = {"train_s": time.perf_counter() - t0, "steps": res.steps}
        acc = task.evaluate(model, dev)[task.main_metric]
        torch.save(task_state(model), r.work / "digital_sst2" / "task_state.pt")
        # Deployed without hardware-aware training: the same LoRA and head, bases made analog.
        gen = torch.Generator().manual_seed(0)
        for layer in lora_layers(model).values():
            layer.base = AnalogLinear.from_linear(layer.base, r.hw, generator=gen)
        return {**trained, "trainable": trainable_parameters(model), "digital_accuracy": acc,
                "sweep_deployed": r.sweep(model, task, dev, TIMES), "data": task.describe_data(data)}

    (r.work / "digital_sst2").mkdir(exist_ok=True)
    (r.work / "hwa_sst2_r8_all").mkdir(exist_ok=True)
    r.cell("baseline_digital", digital)
    r.cell("baseline_hwa", hwa)


def placement(r: Runner) -> None:
    for label, (short, pats) in PLACEMENTS.items():
        if short == "all":
            continue  # the r 8 all-linear cell is the baseline HWA-LoRA
        slug = f"hwa_sst2_r8_{short}"

        def run(slug=slug, pats=pats) -> dict:
            (r.work / slug).mkdir(exist_ok=True)
            model, task, dev, info = r.train_hwa(slug, "sst2", r.lcfg(8, pats))
            return {**info, "sweep": r.sweep(model, task, dev, (0.0, TEN_YEARS))}

        r.cell(f"placement_{slug}", run)


def ranks(r: Runner) -> None:
    for rank in RANKS:
        if rank == 8:
            continue

        def run_rank(rank=rank) -> dict:
            slug = f"hwa_sst2_r{rank}_all"
            (r.work / slug).mkdir(exist_ok=True)
            model, task, dev, info = r.train_hwa(slug, "sst2", r.lcfg(rank))
            return {**info, "sweep": r.sweep(model, task, dev, (0.0, TEN_YEARS))}

        r.cell(f"rank_{rank}", run_rank)


def _programmed_fingerprint(model: nn.Module) -> float:
    """A sum over every layer's programmed conductances: unchanged iff nothing was reprogrammed."""
    total = 0.0
    for _, layer in analog_layers(model):
        st = layer._modules.get("programmed_state")
        for t in st.state_dict().values() if st is not None else ():
            if t.is_floating_point():
                total += float(t.double().sum())
    return total


def _shared_sweep(model: nn.Module, evaluate: Callable[[], dict[str, float]], times: tuple[float, ...], trials: int,
                  gen: torch.Generator) -> list[list[dict[str, float]]]:
    """Drift trials on the crossbar as programmed (no programming here): values[trial][time]."""
    model.eval()
    out = []
    for _ in range(trials):
        row = []
        for t in times:
            drift(model, t, generator=gen)
            row.append(evaluate())
        out.append(row)
    return out


def hardware_change(r: Runner) -> None:
    def run() -> dict:
        # The baseline HWA-LoRA's adapter (trained here, or by the worker on baseline_hwa).
        model, task, dev, _ = r.train_hwa("hwa_sst2_r8_all", "sst2", r.lcfg())
        times = (0.0, TEN_YEARS)
        gen = torch.Generator().manual_seed(1)
        model.eval()
        program(model, generator=gen)
        fingerprint = _programmed_fingerprint(model)
        acc = lambda: {task.main_metric: task.evaluate(model, dev)[task.main_metric]}  # noqa: E731
        at8 = _shared_sweep(model, acc, times, r.args.trials, gen)
        hw6 = r.hw.replace(dac=DAC(6, r.hw.dac.bound), adc=ADC(6, r.hw.adc.bound))
        for _, layer in analog_layers(model):
            layer.hardware = hw6  # the periphery changes; the programmed cells stay
        at6 = _shared_sweep(model, acc, times, r.args.trials, gen)
        # A new LoRA (fresh initialisation; the head continues) trained at 6 bit through the
        # crossbar as read right after programming.
        drift(model, 0.0, generator=gen)
        torch.manual_seed(0)
        for layer in lora_layers(model).values():
            layer.reset_lora_parameters()
        t0 = time.perf_counter()
        from lorafusion_ext.training.loop import train

        lora = [p for n, p in model.named_parameters() if p.requires_grad and n.endswith(("lora_A", "lora_B"))]
        head = [p for n, p in model.named_parameters() if p.requires_grad and not n.endswith(("lora_A", "lora_B"))]
        opt = torch.optim.Adam([{"params": lora, "lr": r.args.lr}, {"params": head, "lr": r.args.head_lr}])
        train(model, task.train_data(r.tokenizer(), r.data(task)), opt,
              replace(r.tcfg("hw_change_retrain", r.args.task_steps.get("sst2")), checkpoint_dir=None, resume=False), description="retrain 6 bit")
        retrain_s = time.perf_counter() - t0
        unchanged = _programmed_fingerprint(model) == fingerprint
        if not unchanged:
            raise RuntimeError("hardware change: the programmed state changed during retraining")
        at6_new = _shared_sweep(model, acc, times, r.args.trials, gen)
        return {"times": times, "train_8bit_deploy_8bit": at8, "train_8bit_deploy_6bit": at6,
                "new_lora_6bit": at6_new, "retrain_s": retrain_s, "cells_reprogrammed": 0,
                "programmed_state_unchanged": unchanged}

    r.cell("hardware_change", run)


def multi_task(r: Runner) -> None:
    for name in MULTI_TASKS:
        if name == "sst2":
            continue

        def train_one(name=name) -> dict:
            slug = f"hwa_{name}_r8_all"
            (r.work / slug).mkdir(exist_ok=True)
            _, task, _, info = r.train_hwa(slug, name, r.lcfg())
            return info

        r.cell(f"multitask_train_{name}", train_one)

    def run() -> dict:
        # Each task's adapter is trained by its multitask_train_* cell (here, if not yet; or
        # awaited from the worker training it). The crossbar: the SST-2 model's encoder, programmed once; each task brings its LoRA
        # and head (the QA head through a span-head wrapper around the same encoder).
        shared, _, _, _ = r.train_hwa("hwa_sst2_r8_all", "sst2", r.lcfg())
        encoder_name = shared.base_model_prefix
        encoder = getattr(shared, encoder_name)
        served: dict[str, tuple[nn.Module, dict, Task, Any]] = {}
        trained: dict[str, dict] = {}
        for name in MULTI_TASKS:
            model, task, dev, trained[name] = r.train_hwa(f"hwa_{name}_r8_all", name, r.lcfg())
            state = {k[len(encoder_name) + 1:]: v for k, v in task_state(model).items() if k.startswith(encoder_name + ".")}
            setattr(model, encoder_name, encoder)  # the task's wrapper now runs on the shared crossbar
            model.eval()
            served[name] = (model, state, task, dev)
        gen = torch.Generator().manual_seed(2)
        shared.eval()
        program(encoder, generator=gen)

        def evaluate_all() -> dict[str, float]:
            out = {}
            for name, (model, state, task, dev) in served.items():
                load_task_state(encoder, state)
                out[name] = task.evaluate(model, dev)[task.main_metric]
            return out

        times = (0.0, TEN_YEARS)
        values = _shared_sweep(encoder, evaluate_all, times, r.args.trials, gen)
        return {"times": times, "values": values, "metrics": {n: served[n][2].main_metric for n in MULTI_TASKS},
                "data": {n: served[n][2].describe_data(r.data(served[n][2])) for n in MULTI_TASKS},
                "steps": {n: r.steps(served[n][2]) for n in MULTI_TASKS},
                "adapters": {n: info["adapter"] for n, info in trained.items() if "adapter" in info},
                "chance": {n: majority_level(r, served[n][2]) for n in MULTI_TASKS
                           if served[n][2].kind != "extractive_qa"}}

    r.cell("multitask", run)


def majority_level(r: Runner, task: Task) -> dict[str, Any]:
    """The main metric of the constant predictor on the dev examples used
    (`lorafusion_ext.evaluation.metrics.chance_level`: the training majority class, or 0 for a
    correlation): the level a learned task must clear."""
    from lorafusion_ext.data.glue import load_glue
    from lorafusion_ext.evaluation.metrics import chance_level

    a = r.args
    train = [e.label for e in load_glue(task.name, "train", a.glue_dir, a.train_examples, 0)]
    dev = [e.label for e in load_glue(task.name, "dev", a.glue_dir, a.eval_examples, 0)]
    value, predictor = chance_level(task.main_metric, train, dev)
    return {"value": value, "predictor": predictor}


def squad(r: Runner) -> None:
    def run() -> dict:
        (r.work / "hwa_squad_r8_all").mkdir(exist_ok=True)
        model, task, dev, info = r.train_hwa("hwa_squad_r8_all", "squad", r.lcfg())
        s = drift_evaluation(model, dev, task, TIMES, r.args.trials, seed=0, progress=not r.args.no_progress)
        # EM beside F1 at 0 s and 10 y is in the multi-task cell's tasks; here the drift of F1.
        return {**info, "sweep": s.to_dict()}

    (r.work / "hwa_squad_r8_all").mkdir(exist_ok=True)
    r.cell("squad", run)


# ---------------------------------------------------------------------- report
def _ms(values: list[float]) -> str:
    return format_mean_std(values, digits=2, scale=100)


def _sweep_cells(sweep: dict) -> list[str]:
    return [_ms([row[i] for row in sweep["values"]]) for i in range(len(sweep["times_s"]))]


EXPERIMENTS: dict[str, Callable[[Runner], None]] = {
    "baselines": baselines, "placement": placement, "ranks": ranks, "hardware_change": hardware_change,
    "squad": squad, "multitask": multi_task}


def expected_cells(sections: tuple[str, ...] = SECTIONS) -> list[str]:
    """Every cell of the experiment's `sections`, in report order."""
    cells = {"baselines": ["baseline_digital", "baseline_hwa"],
             "placement": [f"placement_hwa_sst2_r8_{s}" for s in ("attention", "qv", "ffn")],
             "ranks": [f"rank_{k}" for k in RANKS if k != 8], "hardware_change": ["hardware_change"],
             "multitask": [f"multitask_train_{n}" for n in MULTI_TASKS if n != "sst2"] + ["multitask"],
             "squad": ["squad"]}
    return [c for s in SECTIONS if s in sections for c in cells[s]]


def _page_ref(a: argparse.Namespace, name: str) -> str:
    """A link to the page `name` beside this one, or its name alone while it is not written (a
    link to a missing page fails the site's strict build)."""
    return f"[{name}.md]({name}.md)" if (Path(a.out) / f"{name}.md").is_file() else f"`{name}.md` (not yet computed)"


def _budget_note(a: argparse.Namespace) -> list[str]:
    """Which budget this page is, and where the other page is."""
    if a.page == SHORT_PAGE:
        return [f"**Short budget**: every training on this page is {a.steps} steps. The baselines, the multi-task table "
                f"and SQuAD at the real budget (each task's budget of the budget sweep) are on {_page_ref(a, REAL_PAGE)}; "
                "the sections that need many trainings (LoRA placement, rank sweep, hardware change) stay here, at "
                "this budget.", ""]
    if any(s not in REAL_BUDGET_SECTIONS for s in a.sections):
        return []
    return ["The sections that need many trainings (LoRA placement, rank sweep, hardware change) are at a short "
            f"budget (300 steps) on {_page_ref(a, SHORT_PAGE)}.", ""]


def report(r: Runner, command: str, wall_s: float) -> tuple[str, dict]:
    a = r.args
    expected = expected_cells(a.sections)
    c = {k: v for k, v in r.cells.items() if k in expected}
    missing = [n for n in expected if n not in c]
    lines = ["# HWA-LoRA: the paper's experiments on lorafusion_ext", "", *_budget_note(a)]
    lines.append("**Status: complete.**" if not missing else
                 f"**Status: INCOMPLETE.** Finished cells: {', '.join(n for n in expected if n in c) or 'none'}. "
                 f"Missing: {', '.join(missing)}. Rerun the command to finish them (finished cells are skipped).")
    lines += [
        "", f"Command: `{command}`  ",
        f"Wall time of the computing invocation: {wall_s:.0f} s; sum of the finished cells' wall times: "
        f"{sum(cell.get('wall_s', 0.0) for cell in c.values()):.0f} s (per cell in the JSON). Machine: {platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.get_num_threads()} threads, torch {torch.__version__}.", "",
        f"Model {a.model}; hardware `pcm_paper` (8-bit DAC/ADC, out_noise 0.04, ADD_NORMAL 0.067 in training, "
        "per-row mapping with 3σ clip and remap, one tile per layer, PCM with global drift compensation) on every "
        "linear layer, heads digital. Recipe for every method: "
        f"{a.steps} steps at batch {a.batch_size}"
        + (" (per task: " + ", ".join(f"{t} {n}" for t, n in sorted(a.task_steps.items())) + ")" if a.task_steps else "")
        + (f", batches grouped by length (groups of {a.group_by_length})" if a.group_by_length else "")
        + f", max length {a.max_length}, LoRA α 32, dropout 0.1, LoRA lr {a.lr:g}, "
        f"head lr {a.head_lr:g}, seed 0; training examples {a.train_examples or 'all'}, dev examples "
        f"{a.eval_examples or 'all'}. {a.trials} drift trials per entry (mean ± std, in %). GLUE data: train split "
        "for training, dev split for evaluation.", "",
    ]
    reused = sorted({cell["adapter"] for cell in c.values() if isinstance(cell.get("adapter"), str)}
                    | set(c.get("multitask", {}).get("adapters", {}).values()))
    if reused:
        lines += ["Trained LoRAs and heads taken from the budget sweep (the same training protocol, checked field by "
                  "field; evaluated here): " + "; ".join(reused) + ".", ""]
    if "baseline_digital" in c or "baseline_hwa" in c:
        lines += ["## Baselines (SST-2 accuracy, each trial reprogrammed)", "",
                  "| method | " + " | ".join(format_time(t) for t in TIMES) + " |", "|---|" + "---:|" * len(TIMES)]
        if "baseline_digital" in c:
            d = c["baseline_digital"]
            lines.append("| digital LoRA, no hardware | " + " | ".join([f"{100 * d['digital_accuracy']:.2f}"] * len(TIMES))
                         + " |")
            lines.append("| digital LoRA deployed on the crossbar | " + " | ".join(_sweep_cells(d["sweep_deployed"])) + " |")
        if "baseline_hwa" in c:
            lines.append("| HWA-LoRA | " + " | ".join(_sweep_cells(c["baseline_hwa"]["sweep"])) + " |")
        lines += ["", "The digital row has no hardware: the same accuracy at every time.", ""]
        if "baseline_digital" in c and "baseline_hwa" in c:
            dep, hwa = c["baseline_digital"]["sweep_deployed"], c["baseline_hwa"]["sweep"]
            gaps = [100 * (hwa["mean"][i] - dep["mean"][i]) for i in (0, len(TIMES) - 1)]
            lines += [f"HWA-LoRA minus the digitally trained LoRA deployed on the same hardware: {gaps[0]:+.2f} points "
                      f"at 0 s, {gaps[1]:+.2f} at 10 y. "
                      + ("Here hardware-aware training does not beat deploying the digital LoRA, against the paper's "
                         "finding; a result, not tuned away. " if gaps[0] < 0 and gaps[1] < 0 else "")
                      + "What this does not show: each method is one training seed (the spread in the table is over "
                        "drift trials only; `aihwkit_equivalence.md` gives HWA-LoRA a seed spread of 0.5-1 point), "
                       f"one budget ({r.steps(get_task('sst2'))} steps) and one model (MiniLM, not the paper's MobileBERT).", ""]
    rows = []  # the all-linear row and the r 8 row are the baseline HWA-LoRA: only with their sections
    for label in PLACEMENTS if "placement" in a.sections else ():
        name = placement_cell(label)
        if name in c:
            cell = c[name]
            s = cell["sweep"]
            idx = [s["times_s"].index(0.0), s["times_s"].index(TEN_YEARS)]
            vals = _sweep_cells(s)
            rows.append(f"| {label} | {cell['trainable']['lora']:,} | {cell['trainable']['total']:,} | "
                        f"{vals[idx[0]]} | {vals[idx[1]]} |")
    if rows:
        lines += ["## LoRA placement (SST-2, r 8)", "", "| LoRA on | LoRA parameters | trainable (with head) | 0 s | 10 y |",
                  "|---|---:|---:|---:|---:|", *rows, ""]
    rows = []
    for rank in RANKS if "ranks" in a.sections else ():
        name = "baseline_hwa" if rank == 8 else f"rank_{rank}"
        if name in c:
            s = c[name]["sweep"]
            vals = _sweep_cells(s)
            rows.append(f"| {rank} | {c[name]['trainable']['lora']:,} | {vals[s['times_s'].index(0.0)]} | "
                        f"{vals[s['times_s'].index(TEN_YEARS)]} |")
    if rows:
        lines += ["## Rank sweep (SST-2, all linear layers)", "", "| r | LoRA parameters | 0 s | 10 y |",
                  "|---:|---:|---:|---:|", *rows, ""]
    if "hardware_change" in c:
        h = c["hardware_change"]

        def col(vals: list[list[dict]], i: int) -> str:
            return _ms([row[i]["accuracy"] for row in vals])

        lines += ["## Hardware change (SST-2): trained at 8-bit DAC/ADC, deployed at 6 bit", "",
                  f"One programmed crossbar (one programming draw), {a.trials} drift trials; the new LoRA is trained through "
                  "that crossbar as read at 0 s, with the DAC/ADC at 6 bit. Cells reprogrammed: "
                  f"{h['cells_reprogrammed']} (programmed state checked unchanged: {h['programmed_state_unchanged']}).", "",
                  "| adapter | DAC/ADC | 0 s | 10 y |", "|---|---|---:|---:|",
                  f"| HWA-LoRA trained at 8 bit | 8 bit | {col(h['train_8bit_deploy_8bit'], 0)} | {col(h['train_8bit_deploy_8bit'], 1)} |",
                  f"| HWA-LoRA trained at 8 bit | 6 bit | {col(h['train_8bit_deploy_6bit'], 0)} | {col(h['train_8bit_deploy_6bit'], 1)} |",
                  f"| new LoRA trained at 6 bit, same crossbar | 6 bit | {col(h['new_lora_6bit'], 0)} | {col(h['new_lora_6bit'], 1)} |",
                  ""]

        def mean(vals: list[list[dict]], i: int) -> float:
            return 100 * sum(row[i]["accuracy"] for row in vals) / len(vals)

        for i, label in enumerate(("0 s", "10 y")):
            drop = mean(h["train_8bit_deploy_8bit"], i) - mean(h["train_8bit_deploy_6bit"], i)
            rec = mean(h["new_lora_6bit"], i) - mean(h["train_8bit_deploy_6bit"], i)
            lines.append(f"At {label}: 8 → 6 bit costs {drop:.2f} points; the new 6-bit LoRA recovers {rec:.2f} of them.  ")
        lines.append("")
    if "multitask" in c:
        m = c["multitask"]
        chance = m.get("chance")  # cells computed before the majority level have none
        lines += ["## Multi-task: one programmed crossbar, one adapter and head per task", "",
                  f"One programming draw of the encoder, {a.trials} drift trials; the adapters and heads are swapped per task.", ""]
        if chance is None:
            lines += ["| task | metric | 0 s | 10 y |", "|---|---|---:|---:|"]
        else:
            lines += ["| task | metric | steps | majority level | 0 s | 10 y |", "|---|---|---:|---:|---:|---:|"]
        for n in MULTI_TASKS:
            at = f"{_ms([row[0][n] for row in m['values']])} | {_ms([row[1][n] for row in m['values']])}"
            if chance is None:
                lines.append(f"| {n} | {m['metrics'][n]} | {at} |")
            else:
                level = f"{100 * chance[n]['value']:.2f}" if n in chance else "—"
                lines.append(f"| {n} | {m['metrics'][n]} | {m['steps'][n]} | {level} | {at} |")
        if chance is not None:
            below = [n for n in chance if min(100 * sum(row[i][n] for row in m["values"]) / len(m["values"])
                                              for i in (0, 1)) <= 100 * chance[n]["value"]]
            lines += ["", "Majority level: the main metric of predicting the training set's majority class for every "
                      "dev example (0 for a correlation). "
                      + (f"At or below it at 0 s or 10 y (nothing learned that survives the crossbar): {', '.join(below)}."
                         if below else "Every task is above it at 0 s and 10 y.")]
        lines += ["", f"SQuAD data: {m['data']['squad']}.", ""]
    if "squad" in c:
        s = c["squad"]
        lines += ["## SQuAD v1.1 (HWA-LoRA, span head; F1 in %)", "",
                  "| task | " + " | ".join(format_time(t) for t in TIMES) + " |", "|---|" + "---:|" * len(TIMES),
                  "| squad | " + " | ".join(_sweep_cells(s["sweep"])) + " |", "",
                  f"{a.squad_steps} steps at batch {a.batch_size}, max sequence length {a.squad_max_length}, doc stride "
                  f"{a.squad_doc_stride}, LoRA lr {r.squad_lcfg(r.lcfg()).lr:g}, head lr {r.squad_lcfg(r.lcfg()).head_lr:g}, "
                  f"{a.squad_eval_examples or 'all'} evaluation questions. Data: {s['data']}.",
                  "The paper's SQuAD figure (MobileBERT, F1 89.17 → 85.36 at 10 y) is for a QA-pretrained model with a "
                  "full training budget; this row is MiniLM (a sentence-embedding model) with a fresh span head and the "
                  "budget above, so its absolute level is not comparable, only its drift.", ""]
    if c:
        lines += [f"![results]({a.page}.png)", ""]
    return "\n".join(lines), {"cells": c, "missing": missing, "complete": not missing, "command": command,
                              "wall_time_s": wall_s, "args": {k: v for k, v in vars(a).items() if k not in ("only", "report_only")}}


def plot(r: Runner, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = r.cells
    # The rank and placement panels only on a page with those sections.
    panels = 1 + ("ranks" in r.args.sections) + ("placement" in r.args.sections)
    fig, axes = plt.subplots(1, panels, figsize=(14 * panels / 3 + 1.5 * (panels == 1), 4), squeeze=False)
    axes = list(axes[0])
    ax = axes[0]
    xs = [max(t, 1.0) for t in TIMES]
    for name, key, label in (("baseline_digital", "sweep_deployed", "digital LoRA deployed"),
                             ("baseline_hwa", "sweep", "HWA-LoRA"), ("squad", "sweep", "SQuAD F1 (HWA-LoRA)")):
        if name in c:
            s = c[name][key]
            ax.errorbar(xs, [100 * v for v in s["mean"]], yerr=[100 * (v or 0) for v in s["std"]], marker="o",
                        capsize=3, label=label)
    if "baseline_digital" in c:
        ax.axhline(100 * c["baseline_digital"]["digital_accuracy"], color="0.5", ls="--", label="digital, no hardware")
    ax.set_xscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([format_time(t) for t in TIMES])
    ax.set_title("Drift (SST-2 accuracy / SQuAD F1, %)")
    ax.legend(fontsize=7)
    if "ranks" in r.args.sections:
        _rank_panel(axes[1], c)
    if "placement" in r.args.sections:
        _placement_panel(axes[-1], c)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _rank_panel(ax: Any, c: dict) -> None:
    for i, t in enumerate((0.0, TEN_YEARS)):
        pts = [(k, c["baseline_hwa" if k == 8 else f"rank_{k}"]["sweep"]) for k in RANKS
               if ("baseline_hwa" if k == 8 else f"rank_{k}") in c]
        if pts:
            ax.errorbar([k for k, _ in pts], [100 * s["mean"][s["times_s"].index(t)] for _, s in pts],
                        yerr=[100 * (s["std"][s["times_s"].index(t)] or 0) for _, s in pts], marker="o", capsize=3,
                        label=format_time(t))
    ax.set_xscale("log", base=2)
    ax.set_title("Rank sweep (SST-2 accuracy, %)")
    ax.set_xlabel("r")
    ax.legend()


def _placement_panel(ax: Any, c: dict) -> None:
    labels, v0, v10 = [], [], []
    for label in PLACEMENTS:
        name = placement_cell(label)
        if name in c:
            s = c[name]["sweep"]
            labels.append(label)
            v0.append(100 * s["mean"][s["times_s"].index(0.0)])
            v10.append(100 * s["mean"][s["times_s"].index(TEN_YEARS)])
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], v0, 0.4, label="0 s")
    ax.bar([i + 0.2 for i in x], v10, 0.4, label="10 y")
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_title("LoRA placement (SST-2 accuracy, %)")
    ax.legend()
    if v0:
        ax.set_ylim(min(v0 + v10) - 5, max(v0 + v10) + 2)


def _task_steps(text: str) -> dict[str, int]:
    """'stsb=540,mrpc=345' -> {'stsb': 540, 'mrpc': 345}."""
    out: dict[str, int] = {}
    for part in filter(None, (x.strip() for x in text.split(","))):
        task, _, steps = part.partition("=")
        if task not in MULTI_TASKS or task == "squad" or not steps.strip().isdigit() or int(steps) < 1:
            raise argparse.ArgumentTypeError(f"{part!r}: expected TASK=STEPS with TASK one of "
                                             f"{[t for t in MULTI_TASKS if t != 'squad']} and STEPS a positive integer")
        out[task] = int(steps)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--glue-dir", default=os.environ.get("LORAFUSION_GLUE_DIR"))
    ap.add_argument("--steps", type=int, default=300, help="training steps of every GLUE run")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--head-lr", type=float, default=1e-3)
    ap.add_argument("--train-examples", type=int, default=None)
    ap.add_argument("--eval-examples", type=int, default=None)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--task-steps", type=_task_steps, default={},
                    help="per-task steps of the GLUE runs, e.g. 'stsb=540,mrpc=345' (others: --steps)")
    ap.add_argument("--group-by-length", type=int, default=0,
                    help="batches of similar length, groups of this many batches (default 0: plain shuffling)")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma-separated experiments to compute and report, of {','.join(SECTIONS)} (default: all); "
                         f"the real-budget page: {','.join(REAL_BUDGET_SECTIONS)}")
    ap.add_argument("--page", default=None,
                    help=f"the page's name under --out (default {SHORT_PAGE} when a section of the short budget alone "
                         f"is computed, else {REAL_PAGE})")
    ap.add_argument("--from-sweep", default=None, metavar="DIR",
                    help="the budget sweep's run folder (budget_sweep.py --out): take the SST-2 baselines' and the "
                         "multi-task table's LoRAs of its tasks from its seed-0 adapters at this run's steps")
    ap.add_argument("--squad-steps", type=int, default=300)
    ap.add_argument("--squad-lr", type=float, default=None, help="LoRA lr of the SQuAD runs (default --lr)")
    ap.add_argument("--squad-head-lr", type=float, default=None, help="head lr of the SQuAD runs (default --head-lr)")
    ap.add_argument("--squad-max-length", type=int, default=192)
    ap.add_argument("--squad-doc-stride", type=int, default=64)
    ap.add_argument("--squad-eval-examples", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="where the report goes (default docs/results; --quick: --work)")
    ap.add_argument("--work", default=None, help="cells and adapters (default runs/hwa_lora_paper, "
                                                 "--quick: runs/hwa_lora_paper_quick)")
    ap.add_argument("--only", default=None, help="comma-separated cell-name prefixes to compute now (others: reuse if done)")
    ap.add_argument("--report-only", action="store_true", help="write the report from the finished cells, compute nothing")
    ap.add_argument("--quick", action="store_true", help="tiny subsets, 2 steps, 2 trials (a smoke run)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--workers", type=int, default=1,
                    help="processes computing cells at once (each with --threads threads); 2 on 2 cores with --threads 1")
    ap.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)  # set for the spawned workers
    args = ap.parse_args(argv)
    if args.workers < 1:
        ap.error(f"--workers {args.workers}: expected >= 1")
    if args.group_by_length < 0:
        ap.error(f"--group-by-length {args.group_by_length}: expected 0 (off) or a positive number of batches")
    if args.quick:
        args.steps, args.squad_steps, args.trials, args.batch_size = 2, 2, 2, min(args.batch_size, 4)
        args.train_examples, args.eval_examples, args.squad_eval_examples = 16, 8, 4
        args.max_length, args.squad_max_length, args.squad_doc_stride = 32, 48, 16
    args.only = [p for p in args.only.split(",") if p] if args.only else None
    sections = tuple(s.strip() for s in args.sections.split(",") if s.strip())
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown or not sections:
        ap.error(f"--sections {args.sections!r}: expected some of {','.join(SECTIONS)}")
    args.sections = tuple(s for s in SECTIONS if s in sections)  # report order
    if args.page is None:
        args.page = REAL_PAGE if set(args.sections) <= set(REAL_BUDGET_SECTIONS) else SHORT_PAGE
    if args.from_sweep is not None and not os.path.isdir(os.path.join(args.from_sweep, "adapters")):
        ap.error(f"--from-sweep {args.from_sweep}: no adapters/ folder there (the budget sweep's run folder)")
    # A smoke run never touches the real run's cells or the committed report.
    # Each page its own work folder: the trained adapters under it are not keyed by the recipe.
    if args.work is None:
        args.work = "runs/hwa_lora_paper" + ("" if args.page == SHORT_PAGE else f"_{args.page}") + ("_quick" if args.quick else "")
    if args.out is None:
        args.out = args.work if args.quick else "docs/results"
    if args.glue_dir is None or not os.path.isdir(args.glue_dir):
        ap.error(f"--glue-dir {args.glue_dir}: expected a local GLUE folder (with squad/)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    argv_list = sys.argv[1:] if argv is None else argv
    # The computing command (a --report-only rerun only rewrites the report of the same cells).
    command = command_line("python/experiments/hwa_lora_paper.py", argv_list, drop=("--report-only",))
    try:
        r = Runner(args)
        r.check_sweep(args.sections)
    except SweepMismatch as exc:
        print(f"[hwa_lora_paper] {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    page = args.page
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    if args.worker_index == 0:
        adopted = r.adopt(out / f"{page}.json")
        if adopted:
            print(f"[hwa_lora_paper] finished cells taken from {out / f'{page}.json'}: {', '.join(adopted)}", flush=True)
    children: list[subprocess.Popen] = []
    if args.worker_index == 0 and args.workers > 1 and not args.report_only:
        base = [a for a in argv_list]
        for i in range(1, args.workers):
            children.append(subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *base,
                                              "--worker-index", str(i)]))

    # A --report-only rerun keeps the wall time of the invocation that computed the cells.
    prior_wall = None
    prior = read_json(out / f"{page}.json") if args.report_only else None
    if prior is not None and prior.get("command") == command:
        try:
            prior_wall = float(prior["wall_time_s"])
        except (KeyError, TypeError, ValueError):
            prior_wall = None

    def write() -> None:
        if args.worker_index:  # a spawned worker computes; the first process reports
            return
        r.reload()
        md, js = report(r, command, prior_wall if prior_wall is not None else time.perf_counter() - t0)
        # No empty figure for a run with no finished cell.
        write_page(out, page, md, js, plot=(lambda path: plot(r, path)) if r.cells else None)

    r.after_cell = write
    # Each worker starts at a different experiment, so that they rarely wait on each other.
    experiments = [EXPERIMENTS[s] for s in ("baselines", "placement", "ranks", "hardware_change", "squad", "multitask")
                   if s in args.sections]
    start = (args.worker_index * len(experiments)) // args.workers
    try:
        for experiment in experiments[start:] + experiments[:start]:
            experiment(r)
            write()
        # The other workers' cells reach the report while they run, not only at their end.
        seen = len(list(r.work.glob("*.json")))
        while any(child.poll() is None for child in children):
            time.sleep(15.0)
            now = len(list(r.work.glob("*.json")))
            if now != seen:
                seen = now
                write()
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        write()
    failed = [f"worker {i} (exit {child.returncode})" for i, child in enumerate(children, 1) if child.returncode]
    if failed:
        print(f"[hwa_lora_paper] {', '.join(failed)} failed; rerun the command to finish its cells", file=sys.stderr)
    if args.worker_index == 0:
        print((out / f"{page}.md").read_text())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
