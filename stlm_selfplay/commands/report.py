"""`stlm report RUN`: rebuild a run's report.md and plots from the files in its run folder.

    stlm report runs/quickstart        (or just: stlm report quickstart)

Reads config.yaml, the stages' metrics.jsonl and ratings.jsonl, evaluation.json and eval_lm.md;
loads no model and trains nothing. Works for `stlm run`, `stlm pretrain` and `stlm selfplay` runs.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("run", metavar="RUN", help="run folder, or a run name under runs/")


def run(args: argparse.Namespace) -> int:
    from stlm_selfplay.report import write_report
    from stlm_selfplay.runs import resolve_run_dir

    path = write_report(resolve_run_dir(args.run))
    print(f"report: {path}")
    return 0
