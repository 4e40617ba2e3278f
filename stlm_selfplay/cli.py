"""The `stlm` command line.

Each subcommand lives in `stlm_selfplay/commands/<module>.py` and defines
`add_arguments(parser)` and `run(args) -> int | None`. A new subcommand is one file plus one
line in `COMMANDS`. Modules are imported only when their command runs, so `stlm --help` is fast.
Bad input becomes a one-line `error: ...` on stderr and exit code 2, all in `main`: a
`UserError` anywhere; an OSError, UnicodeError or data-parsing error (turned into a message naming
the file and the fix by `errors.as_user_error`); a NaN or infinite number given to any option
(`--temperature nan`; config values are checked by `config.load_config`). Anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import warnings

from stlm_selfplay.errors import UserError, as_user_error

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
    parser.add_argument("--verbose", action="store_true",
                        help="show third-party progress bars, info logs and warnings (off by default)")
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
    if "--verbose" not in argv[: argv.index(command) if command in argv else len(argv)]:
        quiet_libraries()
    try:
        parser = build_parser(only=command)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        check_finite(args)
        code = _load(args.command).run(args)
        return int(code or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        user_error = as_user_error(err)
        if user_error is None:
            raise
        print(f"error: {user_error}", file=sys.stderr)
        return user_error.exit_code


THIRD_PARTY = r"(torch|transformers|datasets|huggingface_hub|wandb|trl|pyarrow|lm_eval|textarena|gymnasium|tqdm)(\.|$)"
QUIET_ENV = {  # read by each library when it is imported (the CLI imports them lazily, after this)
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # also transformers' "Loading weights" bars
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "DATASETS_VERBOSITY": "critical",  # its parse errors reach the user as our one-line error instead
    "WANDB_SILENT": "true",
}


def quiet_libraries() -> None:
    """Third-party progress bars, logs and warnings off (the CLI without `stlm --verbose`): the
    environment variables the libraries read at import (a value the user set wins), their own
    switches for any already imported, and their Python warnings ignored. Our own bars and
    one-line messages are unaffected."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    warnings.filterwarnings("ignore", module=THIRD_PARTY)
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.utils.logging.set_verbosity(datasets.logging.CRITICAL)
        datasets.disable_progress_bars()


def check_finite(args: argparse.Namespace) -> None:
    """Every float option is a real number: NaN or infinity (`--temperature nan`) is refused."""
    for key, value in vars(args).items():
        if isinstance(value, float) and not math.isfinite(value):
            flag = "--" + key.replace("_", "-")
            raise UserError(f"{flag} {value} is not a finite number; pass a real number, e.g. {flag} 1")


if __name__ == "__main__":
    sys.exit(main())
