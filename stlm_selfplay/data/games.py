"""`games` source: transcripts of games played by the envs' scripted players.

    generate_transcripts(data.games, data.players, data.episodes, seed, style=data.game_style)

yields one document per game (see `stlm_selfplay.envs.transcripts`). The seed is the run seed.
"""

from __future__ import annotations

from typing import Iterator

from stlm_selfplay.data.sources import register_source
from stlm_selfplay.errors import UserError


@register_source("games", keys=("games", "players", "episodes", "game_style", "seed"))
def game_documents(cfg) -> Iterator[str]:
    try:
        from stlm_selfplay.envs.transcripts import generate_transcripts
    except ImportError:
        raise UserError("the games data source needs stlm_selfplay.envs.transcripts, which is not installed yet") from None
    if not cfg.games:
        raise UserError("data.games is empty; name the games and their weights, e.g. data.games={tictactoe: 1.0}")
    yield from generate_transcripts(dict(cfg.games), list(cfg.players), cfg.episodes, cfg.seed, style=cfg.game_style)
