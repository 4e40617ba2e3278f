"""`stlm selfplay CONFIG.yaml [key=value ...]`: improve a model by self-play on text games.

`selfplay.init_from` names the model: a pretrain run folder (its latest checkpoint), a
checkpoint folder, or a Hugging Face model folder. The run resumes from its own latest
checkpoint (`run.resume=auto`). Multi-GPU: `torchrun --nproc_per_node N -m stlm_selfplay selfplay CONFIG.yaml`
(each process plays games_per_update / N games).
"""

from __future__ import annotations

import argparse

from stlm_selfplay.commands import add_config_arguments, load_or_print


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, "YAML config (see configs/selfplay/)",
                         "selfplay.init_from=runs/ttt-pretrain selfplay.updates=50")


def run(args: argparse.Namespace) -> int:
    cfg = load_or_print(args.config, args.overrides, args.print_config)
    if cfg is None:
        return 0
    from stlm_selfplay.selfplay.loop import selfplay

    selfplay(cfg)
    return 0
