"""`stlm eval RUN_OR_CHECKPOINT --game G --opponent O --episodes N`: a model against a scripted
bot, N games in each seat; prints the model's win/draw/loss/illegal rates by seat with Wilson 95%
intervals.

    stlm eval runs/quickstart --game tictactoe --opponent minimax --episodes 200
    stlm eval runs/quickstart/pretrain --game kuhn_poker --opponent nash --episodes 500 --temperature 1

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


def run(args: argparse.Namespace) -> int:
    from stlm_selfplay.envs import list_players, make_player
    from stlm_selfplay.envs.evaluation import MatchResult
    from stlm_selfplay.errors import UserError
    from stlm_selfplay.runs import load_model, resolve_model_folder
    from stlm_selfplay.selfplay.config import EvalConfig
    from stlm_selfplay.selfplay.evaluate import evaluate

    if args.episodes < 1:
        raise UserError(f"--episodes must be >= 1, got {args.episodes}")
    if args.temperature < 0:
        raise UserError(f"--temperature must be >= 0, got {args.temperature}")
    list_players(args.game)  # unknown game -> one line
    make_player(args.game, args.opponent)  # unknown bot or option -> one line
    folder = resolve_model_folder(args.model)
    model = load_model(folder, device=args.device)
    spec = EvalConfig(bots=[args.opponent], episodes=args.episodes, temperature=args.temperature)
    results = evaluate(model, [args.game], spec, args.seed, args.mode, name="model",
                       exact=False).matches[args.game][args.opponent]
    match = MatchResult(args.game, ("model", args.opponent), seats=results["seats"])
    print(f"model: {folder}  ({args.mode}, temperature {args.temperature:g}, seed {args.seed})")
    print(match.table())
    print(f"mean game length: {results['length']:.2f} moves")
    return 0
