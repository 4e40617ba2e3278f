"""Registries: game names -> classes, and per game, scripted-player names -> classes.

A new game is one file defining `@register_game("name") class ...(Game)` (and its players with
`@register_player("name", "bot")`), plus one import line in `envs/__init__.py` (the plugin
pattern of `stlm_selfplay.registry`: this module imports no game).
`make("textarena:TicTacToe-v0")` wraps a TextArena env instead (see `textarena_adapter`).
"""

from __future__ import annotations

import inspect
from typing import Any

from stlm_selfplay.errors import UserError, closest, unknown_name
from stlm_selfplay.registry import Registry, named

GAMES = Registry("game")
PLAYERS: dict[str, Registry] = {"*": Registry("player")}  # game -> its players; "*": every game's
TEXTARENA_PREFIX = "textarena:"


def register_game(name: str):
    """Class decorator: `@register_game("tictactoe")` makes `make("tictactoe")` build it."""
    return named(GAMES, name)


def register_player(game: str, name: str):
    """Class decorator: a scripted player `name` for `game` ("*": for every game)."""
    return named(PLAYERS.setdefault(game, Registry(f"{game} player")), name)


def option_names(cls) -> set[str]:
    """Keyword options of `cls(...)`, following `**kwargs` up to the base classes' `__init__`."""
    named = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters
        names |= {p for p, param in params.items() if p != "self" and param.kind in named}
        if not any(param.kind is inspect.Parameter.VAR_KEYWORD for param in params.values()):
            break
    return names


def _construct(kind: str, name: str, cls, options: dict[str, Any]):
    """`cls(**options)`, with unknown options and bad values reported as `UserError`s."""
    valid = sorted(option_names(cls))
    for key in options:
        if key not in valid:
            raise UserError(f"{kind} '{name}' has no option '{key}'{closest(key, valid)}; valid options: {', '.join(valid) or 'none'}")
    try:
        return cls(**options)
    except (TypeError, ValueError) as err:
        raise UserError(f"{kind} '{name}': {err}") from None


def make(name: str, **options):
    """A new game by registry name (`list_games()`), e.g. `make("connect_four", rows=5, seed=0)`."""
    if name.startswith(TEXTARENA_PREFIX):
        from stlm_selfplay.envs.textarena_adapter import TextArenaGame

        return TextArenaGame(name[len(TEXTARENA_PREFIX):], **options)
    return _construct("game", name, GAMES.get(name), options)


def from_history(name: str, actions, *, deal=None, **options):
    """The game `name` after `actions` from the start (each must be legal), with `deal` if given."""
    return GAMES.get(name).from_history(actions, deal=deal, **options)


def list_games() -> list[str]:
    """The registered game names, sorted."""
    return GAMES.list()


def list_players(game: str) -> list[str]:
    """Scripted players available for `game` (every game has 'random')."""
    GAMES.get(game)  # unknown game -> UserError
    return sorted({**PLAYERS["*"], **PLAYERS.get(game, {})})


def make_player(game: str, player: str, **options):
    """A scripted player for `game`, e.g. `make_player("connect_four", "negamax", depth=2)`.

    `player` may also carry options as `name:key=value` (e.g. `"negamax:depth=2"`, `"nash:alpha=0.2"`).
    """
    name, _, spec = str(player).partition(":")
    for item in filter(None, spec.split(":")):
        key, eq, value = item.partition("=")
        if not eq:
            raise UserError(f"player option '{item}' in '{player}' is not key=value; e.g. negamax:depth=2")
        options.setdefault(key, _number(value))
    table = {**PLAYERS["*"], **PLAYERS.get(game, {})}
    if name not in table:
        raise unknown_name(f"{game} player", name, table)
    return _construct("player", name, table[name], options)


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text

