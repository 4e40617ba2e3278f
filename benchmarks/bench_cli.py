"""CLI start-up: `stlm --help` and every `stlm CMD --help`, against importing torch in the same run.

Each command runs in a fresh interpreter (`python -m stlm_selfplay.cli ...`, what the `stlm` script
runs); the best of `--repeats` wall-clock seconds is kept. Baselines measured in the same run: a bare
interpreter (`python -c pass`) and `python -c "import torch"`, what every help call cost before the
CLI's imports became lazy. Goal (issue 15): every help < 1 s on an idle machine.

    python benchmarks/bench_cli.py [--quick] [--repeats N]
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_parser, report  # noqa: E402

from stlm_selfplay.cli import COMMANDS  # noqa: E402  (the CLI module itself imports no torch)

GOAL_S = 1.0


def best_seconds(argv: list[str], repeats: int) -> float:
    """Best wall-clock seconds of `repeats` fresh runs of `argv` (each must exit 0)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="fresh runs per command (the best is kept)")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    commands = [[]] + ([] if args.quick else [[name] for name in COMMANDS])
    py = [sys.executable]
    rows = [{"what": "python -c pass", "seconds": best_seconds(py + ["-c", "pass"], repeats)},
            {"what": "python -c 'import torch'", "seconds": best_seconds(py + ["-c", "import torch"], repeats)}]
    for command in commands:
        seconds = best_seconds(py + ["-m", "stlm_selfplay.cli", *command, "--help"], repeats)
        rows.append({"what": " ".join(["stlm", *command, "--help"]), "seconds": seconds})
    helps = [row["seconds"] for row in rows[2:]]
    torch_s = rows[1]["seconds"]
    report("bench_cli", rows, args=args,
           ratios={"slowest_help_over_import_torch": max(helps) / torch_s},
           goals={"one_second_over_slowest_help": (GOAL_S / max(helps), 1.0)},  # >= 1: every help < 1 s
           extra={"repeats": repeats})


if __name__ == "__main__":
    main()
