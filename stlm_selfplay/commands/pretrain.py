"""`stlm pretrain CONFIG.yaml [key=value ...]`: pretrain (or resume) a byte-level model.

Multi-GPU / multi-node: launch the same command under torchrun, e.g.
`torchrun --nproc_per_node 8 -m stlm_selfplay pretrain CONFIG.yaml`.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config (see configs/pretrain/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. optimizer.lr=1e-3 data.path=input.txt")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def run(args: argparse.Namespace) -> int:
    from stlm_selfplay.config import config_to_yaml, load_config

    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(config_to_yaml(cfg), end="")
        return 0
    from stlm_selfplay.train.pretrain import pretrain

    pretrain(cfg)
    return 0
