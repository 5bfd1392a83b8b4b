"""The CPU speed figures of issue 24, side by side in one run, for the host it runs on:

- per-pass overhead of the crossbar MVM against `F.linear` (eval) and against `nn.Linear`
  forward + backward (training, the paper's ADD_NORMAL modifier on), fp32, on the shapes of
  `crossbar_mvm.py` (outlier inputs: one bound-management pass), paired rounds;
- `program` + `drift` of all-MiniLM-L6-v2 (`pcm_paper`, global drift compensation) against
  AIHWKIT 1.1's `program_analog_weights` + `drift_analog_weights` on the same model, paired;
- at each thread count of `--threads`, with the CPU model and the instruction set the
  extension's kernels were built for.

    python python/bench/cpu_speed.py [--threads 1,2] [--reps 7] [--repeats 3] [--json out.json] [--md out.md]

Pause other heavy work first: a ratio is paired round by round, but a busy core still skews it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import lorafusion_ext as lf  # noqa: E402
from crossbar_mvm import DEFAULT_SHAPES, bench_case  # noqa: E402
from host_info import host  # noqa: E402
from lorafusion_ext.nn import deploy  # noqa: E402
from program_drift import convert_linears, minilm_path  # noqa: E402

GOALS = {"eval_vs_linear": 1.15, "train_vs_linear": 1.25, "program_drift_speedup": 3.0}


def program_drift(threads: list[int], repeats: int, t: float) -> dict[int, dict]:
    """Median seconds of program + drift(t) per thread count, ours (Philox draws) and AIHWKIT's."""
    from aihwkit.nn.conversion import convert_to_analog
    from transformers import AutoModel

    hw = lf.HardwareConfig.preset("pcm_paper")
    model = convert_linears(AutoModel.from_pretrained(str(minilm_path())).eval(), hw)
    layers = deploy.analog_layers(model)
    ref = AutoModel.from_pretrained(str(minilm_path())).eval()
    for name, layer in layers:  # the same conditioned target weights (the preset clips once)
        with torch.no_grad():
            ref.get_submodule(name).weight.copy_(layer.weight)
    ref = convert_to_analog(ref, hw.to_aihwkit()).eval()
    gen = torch.Generator().manual_seed(0)

    def ours() -> float:
        a = time.perf_counter()
        deploy.program(model, gen)
        deploy.drift(model, t, gen)
        return time.perf_counter() - a

    def theirs() -> float:
        a = time.perf_counter()
        ref.program_analog_weights()
        ref.drift_analog_weights(t)
        return time.perf_counter() - a

    out = {}
    for n in threads:
        torch.set_num_threads(n)
        ours(), theirs()  # warm-up
        rounds = [(ours(), theirs()) for _ in range(repeats)]
        out[n] = {"ours_s": statistics.median(r[0] for r in rounds), "aihwkit_s": statistics.median(r[1] for r in rounds),
                  "speedup": statistics.median(r[1] / r[0] for r in rounds), "rounds": repeats,
                  "weights": sum(layer.weight.numel() for _, layer in layers)}
    return out


def markdown(data: dict) -> str:
    h = data["host"]
    lines = [f"# CPU speed on {h['model_name']} ({h['family_model']})", "",
             f"Instruction sets: CPU {', '.join(h['cpu_isa']) or 'none of AVX2/AVX-512'}; kernels built for "
             f"{h['kernels_isa']} (`{h['build_flags']}`). torch {data['torch']}, fp32. Command: `{data['command']}`.",
             "", "Per pass (outlier inputs, one bound-management pass; ratio = median over paired rounds). Goals: eval "
             f"<= {GOALS['eval_vs_linear']}x `F.linear`, training <= {GOALS['train_vs_linear']}x `nn.Linear`.", "",
             "| threads | shape | F.linear ms | ours eval ms | eval / F.linear | nn.Linear f+b ms | ours f+b ms "
             "| f+b / nn.Linear |", "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for n, rows in data["per_pass"].items():
        for r in rows:
            ms = r["ms"]
            lines.append(f"| {n} | {r['shape']} | {ms['linear_eval']:.2f} | {ms['ours_eval']:.2f} "
                         f"| {r['ratio_eval_vs_linear_per_pass']:.2f} | {ms['linear_train']:.2f} | {ms['ours_train']:.2f} "
                         f"| {r['ratio_train_vs_linear']:.2f} |")
    lines += ["", f"Program + drift (1 day) of all-MiniLM-L6-v2, `pcm_paper` with global drift compensation; goal: "
              f">= {GOALS['program_drift_speedup']}x faster than AIHWKIT 1.1.", "",
              "| threads | analog weights | ours s | AIHWKIT s | speed-up |", "|---:|---:|---:|---:|---:|"]
    for n, r in data["program_drift"].items():
        lines.append(f"| {n} | {r['weights'] / 1e6:.2f}M | {r['ours_s']:.3f} | {r['aihwkit_s']:.3f} | {r['speedup']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    p.add_argument("--reps", type=int, default=7, help="paired rounds per MVM shape")
    p.add_argument("--repeats", type=int, default=3, help="paired rounds of program + drift")
    p.add_argument("--json", default=None)
    p.add_argument("--md", default=None)
    p.add_argument("--no-program-drift", action="store_true", help="skip the program + drift rows (no AIHWKIT)")
    a = p.parse_args(argv)
    try:
        threads = [int(x) for x in a.threads.split(",") if x.strip()]
    except ValueError:
        p.error(f"--threads {a.threads!r}; expected comma-separated positive integers")
    if not threads or min(threads) < 1 or a.reps < 1 or a.repeats < 1:
        p.error("--threads, --reps and --repeats must be positive")
    data = {"host": host(), "torch": torch.__version__, "dtype": "float32", "goals": GOALS,
            "command": "python python/bench/cpu_speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "per_pass": {}, "program_drift": {}}
    for n in threads:
        torch.set_num_threads(n)
        data["per_pass"][n] = [bench_case(m, k, o, "outliers", a.reps, with_aihwkit=False) for m, k, o in DEFAULT_SHAPES]
    if not a.no_program_drift:
        data["program_drift"] = program_drift(threads, a.repeats, 86400.0)
    text = markdown(data)
    print(text)
    if a.json:
        Path(a.json).write_text(json.dumps(data, indent=2) + "\n")
    if a.md:
        Path(a.md).write_text(text)
    return data


if __name__ == "__main__":
    main()
