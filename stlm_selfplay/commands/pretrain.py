"""`stlm pretrain CONFIG.yaml [key=value ...]`: pretrain (or resume) a byte-level model.

Multi-GPU / multi-node: launch the same command under torchrun, e.g.
`torchrun --nproc_per_node 8 -m stlm_selfplay pretrain CONFIG.yaml`.
"""

from __future__ import annotations

import argparse

from stlm_selfplay.commands import add_config_arguments, load_or_print


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, "YAML config (see configs/pretrain/)", "optimizer.lr=1e-3 data.path=input.txt")


def run(args: argparse.Namespace) -> int:
    cfg = load_or_print(args.config, args.overrides, args.print_config)
    if cfg is None:
        return 0
    from stlm_selfplay.train.pretrain import pretrain

    pretrain(cfg)
    return 0
