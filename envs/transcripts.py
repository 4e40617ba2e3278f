"""Game transcripts: games played by scripted players, written exactly as self-play shows them.

    for doc in generate_transcripts({"tictactoe": 2, "nim": 1}, ["random", "minimax"], 1000, seed=0):
        ...

Each document is one game: a `prompt + [action]` line per turn, then the outcome line (see
`formats`). Transcript i picks its game by weight (from a generator seeded by `seed`); the seats
rotate, so seat s of transcript i gets `players[(s + i) % len(players)]`; the game and each seat draw
from generators seeded by (seed, i). Same arguments, same documents, on any machine.
"""

from __future__ import annotations

import random
from typing import Iterator, Mapping, Sequence

from stlm_selfplay.envs.base import derive_seed
from stlm_selfplay.envs.formats import STYLES
from stlm_selfplay.envs.players import play_game
from stlm_selfplay.envs.registry import GAMES, make, make_player
from stlm_selfplay.errors import UserError


def game_weights(games: Mapping[str, float] | Sequence[str]) -> dict[str, float]:
    """{name: weight} from a mapping or a list (equal weights); checks names and weights."""
    weights = dict(games) if isinstance(games, Mapping) else {name: 1.0 for name in games}
    if not weights:
        raise UserError("no games given; name at least one, e.g. tictactoe")
    for name, weight in weights.items():
        GAMES.get(name)  # unknown game -> UserError
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0:
            raise UserError(f"weight of game '{name}' must be a number >= 0, got {weight!r}")
    if sum(weights.values()) <= 0:
        raise UserError("game weights sum to 0; give at least one game a positive weight")
    return {name: float(w) for name, w in weights.items()}


def generate_transcripts(
    games: Mapping[str, float] | Sequence[str],
    players: Sequence[str] | Mapping[str, Sequence[str]],
    episodes: int,
    seed: int,
    style: str = "compact",
) -> Iterator[str]:
    """Yield `episodes` transcripts (one str per game).

    games:    {name: weight} or a list of names (equal weights)
    players:  scripted player names (e.g. ["random", "random"], options as "negamax:depth=2"),
              used for every game, or {game: [names]} per game
    style:    compact | verbose prompts
    """
    if style not in STYLES:
        raise UserError(f"unknown transcript style '{style}'; valid: {', '.join(STYLES)}")
    if not isinstance(episodes, int) or episodes < 0:
        raise UserError(f"episodes must be an integer >= 0, got {episodes!r}")
    weights = game_weights(games)
    boards, seats = {}, {}
    for name in weights:
        names = players.get(name) if isinstance(players, Mapping) else players
        if not names:
            raise UserError(f"no players for game '{name}'; give e.g. players: [random, random]")
        boards[name] = make(name)
        seats[name] = [make_player(name, p) for p in names]
    mix = random.Random(derive_seed(seed, "mix"))
    names, shares = list(weights), list(weights.values())
    for i in range(episodes):
        name = mix.choices(names, weights=shares)[0]
        game, roster = boards[name], seats[name]
        game.reset(derive_seed(seed, "game", i))
        seated = [roster[(s + i) % len(roster)] for s in range(game.num_players)]
        rngs = [random.Random(derive_seed(seed, "seat", i, s)) for s in range(game.num_players)]
        yield play_game(game, seated, rngs, style=style).transcript(style)
