"""LoRAFusion training with the original LoRAFusion script's flags, on lorafusion_ext.

    python python/train.py --task rte --pool results/demo/pool_runs/pool --epoch 3 --batch_size 32 \
        --lr 0.02 --lora_num 3 [--log] [--load_in_4bit]

--lr is the coefficient learning rate, --lora_num the number of pool adapters fused (the
first K), --log logs to Weights & Biases, --load_in_4bit loads the base model in 4 bit
(needs bitsandbytes and a CUDA GPU). Everything else is `lorafusion fuse`'s.
"""

from __future__ import annotations

import argparse
import sys

from lorafusion_ext.apps import cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--pool", required=True)
    parser.add_argument("--out", default="results/fuse")
    parser.add_argument("--epoch", type=float, default=1.0)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--lora_num", type=int, default=None)
    parser.add_argument("--log", action="store_true", help="log to Weights & Biases")
    parser.add_argument("--load_in_4bit", action="store_true")
    args, rest = parser.parse_known_args(argv)
    if args.load_in_4bit:
        import importlib.util

        import torch

        if importlib.util.find_spec("bitsandbytes") is None or not torch.cuda.is_available():
            print("train.py: error: --load_in_4bit needs the bitsandbytes package and a CUDA GPU "
                  "(4-bit base weights are not simulated on the analog crossbar path)", file=sys.stderr)
            return 2
        print("train.py: error: --load_in_4bit is not supported with analog layers: the crossbar holds "
              "the full-precision pre-trained weights", file=sys.stderr)
        return 2
    forwarded = ["fuse", "--task", args.task, "--pool", args.pool, "--out", args.out, "--epochs", str(args.epoch),
                 "--batch-size", str(args.batch_size), "--coeff-lr", str(args.lr)]
    if args.lora_num is not None:
        forwarded += ["--lora-num", str(args.lora_num)]
    if args.log:
        forwarded += ["--log", "wandb"]
    return cli.main(forwarded + rest)


if __name__ == "__main__":
    sys.exit(main())
