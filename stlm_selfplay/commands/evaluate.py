"""`stlm eval RUN_OR_CHECKPOINT --game G --opponent O --episodes N`: a model against a scripted
bot, N games in each seat; prints the model's win/draw/loss/illegal rates by seat with Wilson 95%
intervals.

    stlm eval runs/quickstart --game tictactoe --opponent minimax --episodes 200
    stlm eval runs/quickstart/pretrain --game kuhn_poker --opponent nash --episodes 500 --temperature 1
    stlm eval runs/ttt-distill --game tictactoe --opponent minimax --search 64

--search N plays each of the model's moves by a PUCT search of N simulations (selfplay/search.py:
the model's constrained policy as prior, its value head or --playouts random play-outs at the
leaves, no root noise; the most visited move, or with --temperature t a draw from N^(1/t)):
two-player games of perfect information, constrained mode.

RUN_OR_CHECKPOINT: a run folder or name (its final model: for `stlm run`, the last stage's latest
checkpoint), a checkpoint folder, or a Hugging Face model folder. The same --seed plays the same
games, so two models can be compared game for game.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("model", metavar="RUN_OR_CHECKPOINT", help="run folder, run name under runs/, or checkpoint folder")
    parser.add_argument("--game", required=True, help="game name (stlm_selfplay.envs: tictactoe, kuhn_poker, ...)")
    parser.add_argument("--opponent", default="random",
                        help="scripted bot of the game, options as name:key=value (default: random)")
    parser.add_argument("--episodes", type=int, default=100, help="games per seat of the model (default: 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the games and of sampling (default: 0)")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="the model's sampling temperature; 0 = greedy, its most likely move (default: 0)")
    parser.add_argument("--mode", choices=("constrained", "free"), default="constrained",
                        help="constrained: pick among the legal moves' texts; free: write the move (default: constrained)")
    parser.add_argument("--device", default=None, help="torch device (default: cpu)")
    parser.add_argument("--search", type=int, default=0, metavar="N",
                        help="play each move by a PUCT search of N simulations around the model (default: 0, off)")
    parser.add_argument("--playouts", type=int, default=8,
                        help="with --search, for a model without a value head: random play-outs per leaf (default: 8)")


def run(args: argparse.Namespace) -> int:
    from stlm_selfplay.envs import list_players, make_player
    from stlm_selfplay.envs.evaluation import MatchResult
    from stlm_selfplay.errors import UserError
    from stlm_selfplay.runs import load_model, resolve_model_folder
    from stlm_selfplay.selfplay.config import EvalConfig
    from stlm_selfplay.selfplay.evaluate import evaluate
    from stlm_selfplay.selfplay.search import SearchConfig, SearchPolicy, check_searchable

    if args.episodes < 1:
        raise UserError(f"--episodes must be >= 1, got {args.episodes}")
    if args.temperature < 0:
        raise UserError(f"--temperature must be >= 0, got {args.temperature}")
    list_players(args.game)  # unknown game -> one line
    make_player(args.game, args.opponent)  # unknown bot or option -> one line
    if args.search < 0 or args.playouts < 1:
        raise UserError(f"--search must be >= 0 and --playouts >= 1, got {args.search} and {args.playouts}")
    if args.search and args.mode != "constrained":
        raise UserError("--search picks among the legal moves: use it with --mode constrained")
    if args.search:
        check_searchable(args.game)
    folder = resolve_model_folder(args.model)
    model = load_model(folder, device=args.device)
    spec = EvalConfig(bots=[args.opponent], episodes=args.episodes, temperature=args.temperature)
    player = None
    if args.search:  # the most visited move (tau -> 0 from the first move), or N^(1/t) at every move
        cfg = SearchConfig(simulations=args.search, dirichlet_epsilon=0.0, playouts=args.playouts,
                           temperature=args.temperature, temperature_moves=10 ** 9 if args.temperature > 0 else 0)
        player = SearchPolicy(model, cfg, name="model")
    results = evaluate(model, [args.game], spec, args.seed, args.mode, name="model", exact=False,
                       player=player).matches[args.game][args.opponent]
    match = MatchResult(args.game, ("model", args.opponent), seats=results["seats"])
    how = f", search {args.search} simulations" if args.search else ""
    print(f"model: {folder}  ({args.mode}, temperature {args.temperature:g}{how}, seed {args.seed})")
    print(match.table())
    print(f"mean game length: {results['length']:.2f} moves")
    return 0
