"""`stlm data ...`: make datasets. Kinds: `games` (game transcripts).

    stlm data games --game tictactoe --players random,random --episodes 1000 \\
        --format compact --out ttt.txt [--seed 0]

`--game` takes a name or a weighted mix (`tictactoe=2,nim=1`). `.txt` output holds the documents
separated by a blank line; `.jsonl` one `{"text": ...}` object per line. The file is written to a
temporary path and renamed, so it is complete or absent.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from stlm_selfplay.errors import UserError, shorten
from stlm_selfplay.io import write_lines_atomic

OUTPUT_KINDS = (".txt", ".jsonl")


def add_arguments(parser) -> None:
    kinds = parser.add_subparsers(dest="data_command", metavar="KIND", required=True)
    games = kinds.add_parser(
        "games", help="transcripts of games between scripted players",
        description="Game transcripts exactly as self-play shows them: one `prompt[action]` line per turn, then the "
        "outcome line; seats rotate between games; same seed, same file.")
    games.add_argument("--game", required=True, help="game name, or a weighted mix like tictactoe=2,nim=1")
    games.add_argument("--players", default="random,random", help="comma-separated scripted players by seat, e.g. random,minimax or random,negamax:depth=2 (default random,random)")
    games.add_argument("--episodes", type=int, default=1000, help="number of games (default 1000)")
    games.add_argument("--format", default="compact", choices=("compact", "verbose"), help="prompt style (default compact)")
    games.add_argument("--out", required=True, help="output file, .txt or .jsonl")
    games.add_argument("--seed", type=int, default=0, help="seed (same seed, same file; default 0)")


def parse_game_mix(text: str) -> dict[str, float]:
    """"tictactoe" -> {tictactoe: 1}; "tictactoe=2,nim=1" -> {tictactoe: 2, nim: 1}."""
    mix: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, eq, weight = item.partition("=")
        try:
            mix[name.strip()] = float(weight) if eq else 1.0
        except ValueError:
            raise UserError(f"weight in '{shorten(item)}' is not a number; write e.g. --game tictactoe=2,nim=1") from None
        if not math.isfinite(mix[name.strip()]) or mix[name.strip()] < 0:
            raise UserError(f"weight in '{shorten(item)}' must be a finite number >= 0; write e.g. --game tictactoe=2,nim=1")
    if not mix:
        raise UserError("--game is empty; name a game, e.g. --game tictactoe")
    return mix


def run_games(args) -> int:
    from stlm_selfplay.envs.transcripts import generate_transcripts

    out = Path(args.out)
    if out.suffix not in OUTPUT_KINDS:
        raise UserError(f"--out {out} must end in .txt or .jsonl")
    if args.episodes < 1:
        raise UserError(f"--episodes must be at least 1, got {args.episodes}")
    players = [p.strip() for p in args.players.split(",") if p.strip()]
    docs = generate_transcripts(parse_game_mix(args.game), players, args.episodes, args.seed, style=args.format)
    first = next(docs)  # validates names before any file is created
    docs = (d for part in ([first], docs) for d in part)
    if out.suffix == ".jsonl":
        lines = (json.dumps({"text": d}) + "\n" for d in docs)
    else:
        lines = (("" if i == 0 else "\n") + d for i, d in enumerate(docs))
    size = write_lines_atomic(out, lines)
    print(f"wrote {args.episodes} games ({size} bytes) to {out}")
    return 0


def run(args) -> int:
    return {"games": run_games}[args.data_command](args)
