"""`stlm compare CONFIG [key=value ...]`: equal-budget comparison of config variants over seeds.

CONFIG is a compare config (see configs/compare/ and stlm_selfplay/compare/): pretraining
variants, or self-play variants when the base names a model (`selfplay.init_from`). The
overrides apply to the base config of every variant (e.g. data.path=..., selfplay.init_from=...). Writes
`<run.out_dir>/<name>/compare.md` and `compare.png`; running it again resumes unfinished runs and
reuses finished ones.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="compare config YAML (see configs/compare/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="overrides of the base config, applied to every variant (e.g. data.path=input.txt)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the runs and their steps (self-play: updates), train nothing")


def run(args: argparse.Namespace) -> int:
    from stlm_selfplay.compare import compare, load_compare, run_config

    spec = load_compare(args.config, args.overrides)
    if args.dry_run:
        for variant in spec.variants:
            for seed in spec.seeds:
                cfg = run_config(spec, variant, seed)
                steps = "until the time is spent, at most " if spec.budget == "seconds" else ""
                print(f"{variant} seed {seed}: {steps}{spec.kind.limit(cfg)} {spec.kind.step_name} -> "
                      f"{cfg.run.out_dir}/{cfg.run.name}")
        return 0
    compare(spec)
    return 0
