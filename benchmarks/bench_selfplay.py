"""Self-play learning curves: tic-tac-toe (free and constrained moves) and Kuhn poker, vs wall clock.

Each game's model is first pretrained only on random-play transcripts (`data.source: games`,
players random), then improved by the self-play loop (`stlm_selfplay.selfplay.loop.selfplay`,
REINFORCE with RAE baselines). Tic-tac-toe constrained: `generic_recipe`, against random play,
itself and its snapshots; free: `configs/selfplay/tictactoe-free.yaml`, the same plus the
`legal_mass` objective, the `retry:1` rule in training games and an illegal-move penalty (without
them free play collapses onto illegal moves within ~40 updates; benchmarks/RESULTS.md). Kuhn: `configs/selfplay/kuhn.yaml`, against itself and its snapshots with an
entropy bonus (without it the card-blind pretrained policy turns deterministic before it learns
to read its card, and stays at exploitability 1/3; benchmarks/RESULTS.md). The run is cut
into chunks of `--eval-every` updates; after each, the loop's own evaluation
(`selfplay/evaluate.py`) logs the optimal-move rate over all 4,520 positions, W/D/L against
random and minimax by seat (greedy decoding), or Kuhn exploitability of the current and the
average policy. Every curve point carries training seconds (rollouts + updates, evaluation
excluded) as CPU time of the process (`train_cpu_s`, the loop's `update_cpu_s`: what a run costs
when other jobs share its core) and as wall-clock time (`train_s`), and games played. A run stops
once `--minutes` of training CPU time are spent (or, for a YAML recipe, once its
`selfplay.updates` are done).

At the end, tic-tac-toe models play 500 games per seat (1,000) against minimax.
Goals (hard on purpose): optimal-move rate >= 0.99 and no loss to minimax in 1,000 games within
30 CPU-minutes for <= 2M parameters; Kuhn exploitability < 0.01.

    python benchmarks/bench_selfplay.py [--quick] [--minutes M] [--runs ttt-free,ttt-constrained,kuhn]
    python benchmarks/bench_selfplay.py --recipe configs/selfplay/tictactoe-search.yaml --model value_head=true \
        --minutes 1000 --set selfplay.updates=100 --eval-every 20

`--recipe PATH` runs one YAML self-play recipe (named after its file; game and action mode from
its first stage) through the same pretraining, curve and final match, instead of `--runs`.
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_parser, report  # noqa: E402

from stlm_selfplay.config import load_config  # noqa: E402
from stlm_selfplay.runs import latest_checkpoint, load_model  # noqa: E402
from stlm_selfplay.selfplay.config import EvalConfig  # noqa: E402
from stlm_selfplay.selfplay.evaluate import evaluate  # noqa: E402
from stlm_selfplay.selfplay.loop import selfplay  # noqa: E402
from stlm_selfplay.train.metrics import read_metrics  # noqa: E402
from stlm_selfplay.train.pretrain import pretrain  # noqa: E402

# ~0.6M parameters: 2-byte patches, 128-wide trunk of 4 layers, 64-wide local encoder/decoder
MODEL = dict(d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, d_ff=344, d_local=64, local_heads=2, patch_size=2,
             max_seq_len=128)
QUICK_MODEL = dict(MODEL, d_model=32, n_layers=1, d_ff=64, d_local=32)
RUNS = {  # name: (game, action mode, evaluation bots, self-play recipe: a YAML, or "" = generic_recipe)
    "ttt-free": ("tictactoe", "free", "[random, minimax]", "configs/selfplay/tictactoe-free.yaml"),
    "ttt-constrained": ("tictactoe", "constrained", "[random, minimax]", ""),
    "kuhn": ("kuhn_poker", "constrained", "[random, nash]", "configs/selfplay/kuhn.yaml"),
}
REPO = Path(__file__).resolve().parents[1]


def add_recipe(path: str) -> str:
    """Register the YAML self-play recipe at `path` in RUNS (game and mode from its first stage); returns its name."""
    stage = load_config(REPO / path).selfplay.stages[0]
    game = next(iter(stage.games))
    name = f"recipe-{Path(path).stem}"
    RUNS[name] = (game, stage.mode, "[random, nash]" if game == "kuhn_poker" else "[random, minimax]", path)
    return name


def generic_recipe(game: str, mode: str) -> list[str]:
    """REINFORCE + RAE, normalized advantages, lr 1e-3, against random 0.3 / self 0.4 / pool 0.3."""
    return ["selfplay.updates=1000000", "selfplay.lr=1e-3", "selfplay.advantages.normalize=true",
            "selfplay.pool.snapshot_every=5",
            f"selfplay.stages=[{{games: {{{game}: 1.0}}, opponents: {{random: 0.3, self: 0.4, pool: 0.3}}, "
            f"mode: {mode}, temperature: 1.0}}]"]


def pretrain_on_games(work: Path, game: str, steps: int, model: dict, seed: int = 0, episodes: int = 5000) -> Path:
    """Pretrain on random-play transcripts of `game`; returns the checkpoint folder (cached in `work`)."""
    name = f"pretrain-{game}-{steps}"
    if latest_checkpoint(work / name) is None:
        overrides = ([f"model.overrides.{k}={v}" for k, v in model.items()] +
                     [f"run.out_dir={work}", f"run.name={name}", f"run.seed={seed}", "run.device=cpu", "run.cpu_threads=1",
                      f"run.checkpoint_every={steps}", f"data.cache_dir={work / 'cache'}", "data.source=games",
                      f"data.games={{{game}: 1.0}}", "data.players=[random]", f"data.episodes={episodes}", f"data.seed={seed}",
                      "data.seq_len=128", "data.batch_size=32", "data.val_max_sequences=8", f"schedule.steps={steps}",
                      f"schedule.warmup_steps={max(steps // 10, 1)}", "optimizer.lr=3e-3", "optimizer.weight_decay=0.0",
                      f"logging.eval_every={steps}", "logging.wandb=disabled", "logging.progress=false",
                      "logging.sample_bytes=0"])
        with contextlib.redirect_stdout(io.StringIO()):
            pretrain(load_config(None, overrides))
    return latest_checkpoint(work / name)


def pretrained_model(work: Path, game: str, steps: int, quick: bool = False) -> torch.nn.Module:
    """A model pretrained on random-play transcripts of `game` (also used by bench_rollout)."""
    return load_model(pretrain_on_games(work, game, steps, QUICK_MODEL if quick else MODEL, episodes=200 if quick else 5000))


def curve(init: Path, work: Path, name: str, minutes: float, eval_every: int, episodes: int, seed: int,
          games_per_update: int = 64, optimal_rate: bool = True, extra: list[str] = ()) -> list[dict]:
    """Self-play from `init` in chunks of `eval_every` updates until `minutes` of training time,
    or until the recipe's `selfplay.updates` (a YAML recipe lays its schedules out over them).
    `extra`: config overrides applied last (`--set`)."""
    game, mode, bots, recipe = RUNS[name]
    overrides = ([] if recipe else generic_recipe(game, mode)) + [
                 f"run.out_dir={work}", f"run.name={name}", f"run.seed={seed}", "run.device=cpu", "run.cpu_threads=1",
                 f"run.checkpoint_every={eval_every}", "run.keep_last=1", "logging.wandb=disabled",
                 "logging.progress=false", "optimizer.weight_decay=0.0",
                 f"selfplay.init_from={init}", f"selfplay.games_per_update={games_per_update}",
                 f"selfplay.eval.every={eval_every}", f"selfplay.eval.bots={bots}", f"selfplay.eval.episodes={episodes}",
                 "selfplay.eval.ratings=false", f"selfplay.eval.optimal_rate={optimal_rate and game == 'tictactoe'}",
                 *extra]
    cfg = load_config(REPO / recipe if recipe else None, overrides)
    trained, done = 0.0, 0
    while trained < minutes * 60 and done < cfg.selfplay.updates:
        with contextlib.redirect_stdout(io.StringIO()):
            done = selfplay(cfg, max_updates=eval_every)["update"]
        trained = sum(r["update_cpu_s"] for r in read_metrics(work / name / "metrics.jsonl", "train"))
    train = read_metrics(work / name / "metrics.jsonl", "train")
    upto = lambda key, step: sum(t[key] for t in train if t["step"] <= step)  # noqa: E731
    points = []
    for row in read_metrics(work / name / "metrics.jsonl", "eval"):
        step = row["step"]
        point = {"run": name, "update": step, "games": step * cfg.selfplay.games_per_update,
                 "train_cpu_s": upto("update_cpu_s", step), "train_s": upto("update_s", step)}
        keys = ["tictactoe/optimal_rate", "tictactoe/random/win_rate", "tictactoe/minimax/loss_rate",
                "tictactoe/minimax/seat0/loss_rate", "tictactoe/minimax/seat1/loss_rate", "tictactoe/random/illegal_rate",
                "kuhn_poker/exploitability", "kuhn_poker/avg_exploitability", "kuhn_poker/random/win_rate"]
        point.update({k.split("/", 1)[1]: row[k] for k in keys if k in row})
        points.append(point)
    return points


def final_minimax(work: Path, name: str, episodes: int, seed: int) -> dict:
    """The final model against minimax: `episodes` per seat, greedy, in the run's action mode."""
    game, mode, _, _ = RUNS[name]
    model = load_model(latest_checkpoint(work / name))
    metrics = evaluate(model, [game], EvalConfig(bots=["minimax"], episodes=episodes), seed + 1, mode, exact=False).metrics
    return {"games": 2 * episodes, "losses": round(metrics[f"{game}/minimax/loss_rate"] * 2 * episodes),
            "loss_rate": metrics[f"{game}/minimax/loss_rate"], "params": model.num_parameters()}


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="training CPU-minutes per run (rollouts + updates)")
    parser.add_argument("--runs", default="ttt-free,ttt-constrained,kuhn", help="which runs, comma-separated")
    parser.add_argument("--recipe", default="", metavar="PATH",
                        help="run this YAML self-play recipe (relative to the repo) instead of --runs")
    parser.add_argument("--work", default="", metavar="DIR",
                        help="keep the runs (metrics.jsonl, checkpoints) in DIR instead of a temporary folder")
    parser.add_argument("--pretrain-steps", type=int, default=600, help="pretraining steps on random-play transcripts")
    parser.add_argument("--eval-every", type=int, default=10, help="updates between curve points")
    parser.add_argument("--episodes", type=int, default=50, help="evaluation games per bot per seat at each point")
    parser.add_argument("--final-episodes", type=int, default=500, help="games per seat vs minimax at the end")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", action="append", default=[], metavar="FIELD=VALUE",
                        help="model field over MODEL for pretraining, e.g. logit_scale=10 (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="self-play config override, e.g. selfplay.lr=3e-3 (repeatable)")
    args = parser.parse_args()
    if args.quick:
        # the plumbing only: one update per run, no optimal-move rate (one batched score of 4,520 positions)
        args.minutes, args.pretrain_steps, args.eval_every, args.episodes, args.final_episodes = 0.0001, 5, 1, 2, 2
        args.runs = "ttt-constrained,kuhn"
    if args.recipe:
        args.runs = add_recipe(args.recipe)
    model = dict(QUICK_MODEL if args.quick else MODEL, **dict(item.split("=", 1) for item in args.model))
    torch.set_num_threads(1)  # the final matches run here; >1 thread thrashes on a shared machine
    rows, finals, started = [], {}, time.perf_counter()
    with contextlib.nullcontext(args.work) if args.work else tempfile.TemporaryDirectory() as work:
        work = Path(work)
        for name in args.runs.split(","):
            game = RUNS[name][0]
            init = pretrain_on_games(work, game, args.pretrain_steps, model, args.seed, 200 if args.quick else 5000)
            rows += curve(init, work, name, args.minutes, args.eval_every, args.episodes, args.seed,
                          games_per_update=8 if args.quick else 64, optimal_rate=not args.quick, extra=args.set)
            if game == "tictactoe":
                finals[name] = final_minimax(work, name, args.final_episodes, args.seed)
    last = {name: [r for r in rows if r["run"] == name][-1] for name in args.runs.split(",")}
    goals = {}
    for name, final in finals.items():
        if "optimal_rate" in last[name]:
            goals[f"{name}: optimal_rate"] = (last[name]["optimal_rate"], 0.99)
        goals[f"{name}: 1 - losses/games vs minimax (no loss)"] = (1 - final["losses"] / final["games"], 1.0)
    if "kuhn" in last:
        goals["kuhn: -exploitability (< 0.01)"] = (-last["kuhn"]["exploitability"], -0.01)
        goals["kuhn: -avg_exploitability (< 0.01)"] = (-last["kuhn"]["avg_exploitability"], -0.01)
    report("selfplay", rows, args=args, goals=goals,
           extra={"command": " ".join(sys.argv), "seed": args.seed, "minutes": args.minutes, "final_vs_minimax": finals,
                  "params": next(iter(finals.values()))["params"] if finals else None,
                  "wall_s": time.perf_counter() - started})


if __name__ == "__main__":
    main()
