"""`stlm selfplay CONFIG.yaml [key=value ...]`: improve a model by self-play on text games.

`selfplay.init_from` names the model: a pretrain run folder (its latest checkpoint), a
checkpoint folder, or a Hugging Face model folder. The run resumes from its own latest
checkpoint (`run.resume=auto`). Multi-GPU: `torchrun --nproc_per_node N -m stlm_selfplay selfplay CONFIG.yaml`
(each process plays games_per_update / N games).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config (see configs/selfplay/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. selfplay.init_from=runs/ttt-pretrain selfplay.updates=50")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from omegaconf import OmegaConf

    from stlm_selfplay.config import load_config

    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(OmegaConf.to_yaml(OmegaConf.create(dataclasses.asdict(cfg))), end="")
        return 0
    from stlm_selfplay.selfplay.loop import selfplay

    selfplay(cfg)
    return 0
