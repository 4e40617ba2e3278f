"""`stlm play RUN_OR_CHECKPOINT --game tictactoe`: play a game against a model in the terminal.

    stlm play runs/quickstart                          you are x and move first
    stlm play runs/quickstart --seat o --temperature 1 you are o; the model samples its moves

The position is shown after every move, with your legal moves; type a move (`4` or `[4]`), `q`
to quit. A move that is not legal is refused with the reason and asked again. The model picks
among the legal moves' texts (constrained, as in self-play) unless `--mode free`.
"""

from __future__ import annotations

import argparse
import sys

QUIT = ("q", "quit", "exit")
VERBS = {"win": "You win.", "draw": "Draw.", "loss": "The model wins."}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("model", metavar="RUN_OR_CHECKPOINT", help="run folder, run name under runs/, or checkpoint folder")
    parser.add_argument("--game", default="tictactoe", help="game name (default: tictactoe; also kuhn_poker, nim, ...)")
    parser.add_argument("--seat", default="0", help="your seat: 0 (first to move) or 1, or the side's name (x, o) (default: 0)")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="the model's sampling temperature; 0 = greedy, its most likely move (default: 0)")
    parser.add_argument("--mode", choices=("constrained", "free"), default="constrained",
                        help="constrained: the model picks among the legal moves; free: it writes its move")
    parser.add_argument("--seed", type=int, default=0, help="seed of the deal (card games) and of the model's sampling")


def parse_seat(text: str, sides: tuple[str, ...]) -> int:
    from stlm_selfplay.errors import UserError

    text = text.strip().lower()
    if text.isdigit() and int(text) < len(sides):
        return int(text)
    if text in sides:
        return sides.index(text)
    raise UserError(f"--seat '{text}' is not a seat of this game; use {', '.join(map(str, range(len(sides))))} "
                    f"or {', '.join(sides)}")


def read_move(game, seat: int, stdin, out) -> str | None:
    """Ask until the text names a legal move; None when the player quits (or stdin ends)."""
    from stlm_selfplay.envs import parse_action

    legal = game.legal_actions(seat)
    while True:
        text = ask(f"your move ({', '.join(legal)}; q quits)> ", stdin, out)
        if text is None or text.lower() in QUIT:
            return None
        move = parse_action(text) if "[" in text else text.lower()
        if not text:
            out.write("please type a move\n")
        elif move in legal:
            return move
        elif move is None:
            out.write(f"'{text}' has no move between brackets; type e.g. {legal[0]}\n")
        else:
            out.write(f"'{text}' is not a legal move here; legal moves: {', '.join(legal)}\n")


def ask(prompt: str, stdin, out) -> str | None:
    """One line from `stdin` after `prompt`, stripped; None at the end of input. Piped input is
    echoed, so a scripted session reads as if typed."""
    from stlm_selfplay.errors import as_user_error

    out.write(prompt)
    out.flush()
    try:
        line = stdin.readline()
    except UnicodeDecodeError as err:  # a strict UTF-8 stdin given other bytes: name it, exit 2
        raise as_user_error(err, kind="standard input") from None
    try:
        typed = stdin.isatty()
    except (AttributeError, ValueError):
        typed = False
    if not typed or not line:
        out.write(line.rstrip("\n") + "\n")
    return line.strip() if line else None


def play_one(model_player, game, human: int, stdin, out) -> bool:
    """One game; False when the player quit."""
    sides = game.sides
    out.write(f"\nYou are {sides[human]} (seat {human}); the model is "
              f"{', '.join(s for i, s in enumerate(sides) if i != human)}.\n{game.describe(human)}\n")
    while not game.done:
        if game.current_player == human:
            move = read_move(game, human, stdin, out)
            if move is None:
                out.write("bye\n")
                return False
            game.step(move)
            out.write(f"you ({sides[human]}) play {move}\n")
        else:
            mover = game.current_player
            text = model_player.act(game)
            result = game.step(text)
            said = f"model ({sides[mover]}) plays {result.applied}" if result.legal else \
                f"model ({sides[mover]}) wrote {text!r}, not a legal move ({result.rule})"
            out.write(said + "\n")
        out.write(game.describe(human) + "\n")
    out.write(f"Game over: {VERBS[game.outcome[human]]} (your payoff {game.rewards[human]:+g})\n")
    return True


def run(args: argparse.Namespace) -> int:
    from stlm_selfplay.envs import make
    from stlm_selfplay.envs.base import derive_seed
    from stlm_selfplay.errors import UserError
    from stlm_selfplay.model_player import ModelPlayer
    from stlm_selfplay.runs import load_model, resolve_model_folder

    if args.temperature < 0:
        raise UserError(f"--temperature must be >= 0, got {args.temperature}")
    game = make(args.game)
    human = parse_seat(args.seat, game.sides)
    folder = resolve_model_folder(args.model)
    player = ModelPlayer(load_model(folder), mode=args.mode, temperature=args.temperature, seed=args.seed)
    out = sys.stdout
    out.write(f"{args.game} against {folder}\n")
    for round_ in range(1_000_000):
        game.reset(derive_seed(args.seed, "play", round_))
        if not play_one(player, game, human, sys.stdin, out):
            return 0
        if (ask("play again? (y/n)> ", sys.stdin, out) or "").lower() not in ("y", "yes"):
            out.write("bye\n")
            return 0
    return 0
