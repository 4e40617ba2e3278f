"""The quickstart (`stlm run`) over several seeds: wall and CPU time, each `evaluation` target met
or not, and the in-run curves (issue 13: "the quickstart's floors, reliably").

    python benchmarks/bench_quickstart.py [--config configs/quickstart.yaml] [--seeds 0,1,2,3]
        [--set KEY=VALUE ...] [--first-stage] [--work DIR] [--quick]

Each seed is one `stlm run CONFIG logging.progress=false run.seed=S [--set overrides]` in its own
folder, one after the other (pin the whole script with `taskset -c N`; every run inherits
OMP_NUM_THREADS). CPU time is the child's user + sys (`resource.RUSAGE_CHILDREN` before and
after), so a contended core inflates `wall_s` but hardly `cpu_s`.

`--first-stage` is the cheap probe of the first curriculum stage alone: the run stops where that
stage ends (`selfplay.updates` = its `until_update`), the later stages are dropped, and only the
targets and evaluation bots of the stage's games are kept (the quickstart's tic-tac-toe stage costs
~6 CPU-minutes, the whole quickstart ~8). The pretraining is the same as the whole run's (same seed,
same config).

Rows: one per seed (`seed`, `wall_s`, `cpu_s`, `<target metric>` = its final value and
`met/<target metric>`); `curves` (extra JSON key): per seed, the in-run eval points of the Kuhn
exploitability and the tic-tac-toe optimal-move rate; `goals`: the share of seeds meeting every
target (goal 1.0: reliably).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_parser, report  # noqa: E402

from omegaconf import OmegaConf  # noqa: E402

from stlm_selfplay.envs import list_players  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CURVE_METRICS = ("kuhn_poker/exploitability", "tictactoe/optimal_rate")
QUICK = ["data.episodes=60", "schedule.steps=4", "schedule.warmup_steps=1", "selfplay.updates=2",
         "selfplay.games_per_update=4", "selfplay.eval.every=0", "evaluation.episodes=2", "evaluation.sample_games=0",
         "logging.eval_every=4", "data.val_max_sequences=4"]


def first_stage_config(config: Path, out: Path) -> Path:
    """`config` cut to its first self-play stage (module docstring), written to `out`."""
    cfg = OmegaConf.load(config)
    stage = cfg.selfplay.stages[0]
    if not stage.get("until_update"):
        raise SystemExit(f"--first-stage: the first stage of {config} has no until_update to stop at")
    cfg.selfplay.updates = int(stage.until_update)
    stage.until_update = 0
    cfg.selfplay.stages = [stage]
    games = set(stage.games)
    known = {bot for game in games for bot in list_players(game)}
    if cfg.get("evaluation") is not None and cfg.evaluation.get("bots") is not None:
        cfg.evaluation.bots = [b for b in cfg.evaluation.bots if b.partition(":")[0] in known]
    for kind in ("at_most", "at_least"):
        if cfg.get("evaluation") is not None and cfg.evaluation.get(kind) is not None:
            cfg.evaluation[kind] = {k: v for k, v in cfg.evaluation[kind].items() if k.split("/")[0] in games}
    OmegaConf.save(cfg, out)
    return out


def cpu_seconds_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_seed(config: Path, seed: int, overrides: list[str], folder: Path) -> tuple[dict, dict]:
    """(row, curves) of one `stlm run` in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "stlm_selfplay", "run", str(config), "logging.progress=false", f"run.seed={seed}",
            *overrides]
    cpu, start = cpu_seconds_of_children(), time.perf_counter()
    done = subprocess.run(argv, cwd=folder, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, cpu_seconds_of_children() - cpu
    if done.returncode != 0:
        raise SystemExit(f"seed {seed}: stlm run failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    run = next(folder.glob("runs/*/evaluation.json")).parent
    evaluation = json.loads((run / "evaluation.json").read_text())
    row = {"seed": seed, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}
    for target in evaluation.get("targets", []):
        row[target["metric"]] = target["final"]
        row["met/" + target["metric"]] = target["met"]
    points = [json.loads(line) for line in (run / "selfplay" / "metrics.jsonl").read_text().splitlines()]
    curves = {m: [(p["step"], round(p[m], 4)) for p in points if p.get("kind") == "eval" and m in p]
              for m in CURVE_METRICS}
    return row, {m: c for m, c in curves.items() if c}


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/quickstart.yaml", help="the run's YAML (relative to the repo)")
    parser.add_argument("--seeds", default="0,1", help="comma-separated run seeds")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    parser.add_argument("--first-stage", action="store_true", help="probe the first self-play stage alone")
    parser.add_argument("--work", default=None, help="keep the runs in DIR (default: a temporary folder)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")][:1 if args.quick else None]
    overrides = list(args.set) + (QUICK if args.quick else [])
    with TemporaryDirectory() as tmp:
        work = Path(args.work or tmp).resolve()
        work.mkdir(parents=True, exist_ok=True)
        config = (ROOT / args.config).resolve()
        if args.first_stage:
            config = first_stage_config(config, work / "first-stage.yaml")
        rows, curves = [], {}
        for seed in seeds:
            row, curves[seed] = run_seed(config, seed, overrides, work / f"seed{seed}")
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    met = [all(v for k, v in row.items() if k.startswith("met/")) for row in rows]
    report("bench_quickstart", rows, args=args, goals={"share_of_seeds_meeting_every_target": (sum(met) / len(met), 1.0)},
           extra={"config": args.config, "overrides": list(args.set), "first_stage": args.first_stage,
                  "curves": curves})


if __name__ == "__main__":
    main()
