"""The `stlm` command line.

Each subcommand lives in `stlm_selfplay/commands/<module>.py` and defines
`add_arguments(parser)` and `run(args) -> int | None`. A new subcommand is one file plus one
line in `COMMANDS`. Modules are imported only when their command runs, so `stlm --help` is fast.
A `UserError` anywhere becomes a one-line `error: ...` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from stlm_selfplay.errors import UserError

# name -> (module under stlm_selfplay.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "run a staged job (pretrain, then self-play) from one config; resumes"),
    "pretrain": ("pretrain", "pretrain a byte-level model from a config"),
    "selfplay": ("selfplay", "improve a model by self-play on text games"),
    "compare": ("compare", "equal-budget comparison of config variants over seeds"),
    "eval": ("evaluate", "match a model against a scripted opponent, by seat"),
    "eval-lm": ("eval_lm", "language-model evaluation: bits-per-byte, BLiMP, HellaSwag, ..."),
    "play": ("play", "play a game against a model in the terminal"),
    "params": ("params", "parameter table of a model config vs a GPT-2-vocabulary baseline"),
    "data": ("data", "make datasets (e.g. `stlm data games`: game transcripts)"),
    "report": ("report", "rebuild a run's report.md and plots from its folder"),
}


def _load(name: str):
    return importlib.import_module(f"stlm_selfplay.commands.{COMMANDS[name][0]}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, just that subcommand's module is imported."""
    parser = argparse.ArgumentParser(prog="stlm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only == name:
            _load(name).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command is not None and command not in COMMANDS:
        from stlm_selfplay.errors import unknown_name

        print(f"error: {unknown_name('command', command, COMMANDS)}", file=sys.stderr)
        return 2
    try:
        parser = build_parser(only=command)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        code = _load(args.command).run(args)
        return int(code or 0)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
