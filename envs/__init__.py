"""Text games (installed as `stlm_selfplay.envs`): native games, scripted players, formats,
exact evaluators, and gymnasium / TextArena adapters.

    from stlm_selfplay.envs import make, list_games, make_player, format_prompt, format_action
    game = make("tictactoe", illegal="retry:1", seed=0)
    game.step(format_action("4"))

Importing this package registers the gymnasium ids `stlm_selfplay/<Game>-v0`.
"""

from stlm_selfplay.envs.registry import GAMES, PLAYERS, from_history, list_games, list_players, make, make_player

# the plugins: each module registers its game and players (a new game is one line here)
from stlm_selfplay.envs import players, tictactoe, connect_four, nim, kuhn_poker, simple_negotiation  # noqa: E402,F401
from stlm_selfplay.envs.base import Game, IllegalRule, StepResult
from stlm_selfplay.envs.formats import format_action, format_outcome, format_prompt, format_turn, parse_action
from stlm_selfplay.envs.players import GameRecord, Move, Player, play_game
from stlm_selfplay.envs.gym_env import register_gym_envs

register_gym_envs()

list = list_games  # noqa: A001 - `envs.list()` as the issue names it; shadows the builtin here only

__all__ = [
    "Game", "IllegalRule", "StepResult", "GameRecord", "Move", "Player", "play_game", "make", "make_player", "from_history",
    "list_games", "list_players", "list", "GAMES", "PLAYERS",
    "format_prompt", "format_action", "format_outcome", "format_turn", "parse_action",
]
