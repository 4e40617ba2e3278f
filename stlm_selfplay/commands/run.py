"""`stlm run [CONFIG] [key=value ...]`: the main job. Runs the config's `stages` in order (pretrain,
then self-play from the pretrain stage's final checkpoint), evaluates the pretrained and the final
model side by side, and writes `runs/<name>/report.md` with plots.

With no CONFIG it runs configs/quickstart.yaml: random-play transcripts of tic-tac-toe and Kuhn
poker, a small STLM pretrained on them, constrained self-play (self + pool + random, RAE, a
curriculum from tic-tac-toe to both games), about 10 minutes on a 2-core CPU. Ctrl-C saves a
checkpoint; the same command again resumes whichever stage was running.
"""

from __future__ import annotations

import argparse

from stlm_selfplay.commands import add_config_arguments, load_or_print


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.epilog = ("examples:  stlm run            (configs/quickstart.yaml)\n"
                     "           stlm run configs/micro.yaml run.name=try selfplay.updates=20\n"
                     "           stlm run micro      (a bundled config by name, from any folder)")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_config_arguments(parser, "YAML config with `stages` (default: the bundled configs/quickstart.yaml)",
                         "run.name=mine selfplay.updates=50 run.device=cuda", optional=True)


def run(args: argparse.Namespace) -> int:
    from stlm_selfplay.stages import command_line, find_config, run_stages

    overrides = list(args.overrides)
    if args.config is not None and "=" in args.config and not args.config.endswith(".yaml"):
        overrides, args.config = [args.config] + overrides, None  # `stlm run key=value`: the quickstart
    path = find_config(args.config)
    cfg = load_or_print(path, overrides, args.print_config)
    if cfg is None:
        return 0
    return run_stages(cfg, command_line(["run", *([args.config] if args.config else []), *overrides]))
