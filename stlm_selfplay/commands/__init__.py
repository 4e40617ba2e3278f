"""Subcommands of `stlm`: one module each, with `add_arguments(parser)` and `run(args)`."""

from __future__ import annotations

import argparse


def add_config_arguments(parser: argparse.ArgumentParser, config_help: str, example: str,
                         optional: bool = False) -> None:
    """`CONFIG [key=value ...] [--print-config]`, shared by run, pretrain and selfplay."""
    parser.add_argument("config", help=config_help, **({"nargs": "?", "default": None} if optional else {}))
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=f"config overrides, e.g. {example}")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config, each option's help as a comment, and exit")


def load_or_print(path, overrides, print_config: bool):
    """The resolved root config, or None after printing it as YAML with each option's help as a
    comment (`--print-config`; the run folder's `config.yaml` holds the same values, uncommented)."""
    from stlm_selfplay.config import load_config
    from stlm_selfplay.options import commented_yaml

    cfg = load_config(path, overrides)
    if print_config:
        print(commented_yaml(cfg), end="")
        return None
    return cfg
