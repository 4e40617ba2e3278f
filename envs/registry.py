"""Registries: game names -> classes, and per game, scripted-player names -> classes.

A new game is one file defining `@register_game("name") class ...(Game)` (and its players with
`@register_player("name", "bot")`), plus one import line at the bottom of this file.
`make("textarena:TicTacToe-v0")` wraps a TextArena env instead (see `textarena_adapter`).
"""

from __future__ import annotations

import inspect
from typing import Any

from stlm_selfplay.errors import UserError, closest, unknown_name

GAMES: dict[str, type] = {}
PLAYERS: dict[str, dict[str, type]] = {"*": {}}  # game -> player name -> class; "*": every game
TEXTARENA_PREFIX = "textarena:"


def register_game(name: str):
    """Class decorator: `@register_game("tictactoe")` makes `make("tictactoe")` build it."""

    def wrap(cls):
        if name in GAMES and GAMES[name] is not cls:
            raise ValueError(f"game '{name}' registered twice")
        cls.name = name
        GAMES[name] = cls
        return cls

    return wrap


def register_player(game: str, name: str):
    """Class decorator: a scripted player `name` for `game` ("*": for every game)."""

    def wrap(cls):
        PLAYERS.setdefault(game, {})[name] = cls
        cls.name = name
        return cls

    return wrap


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
    if name not in GAMES:
        raise unknown_name("game", name, GAMES)
    return _construct("game", name, GAMES[name], options)


def from_history(name: str, actions, *, deal=None, **options):
    """The game `name` after `actions` from the start (each must be legal), with `deal` if given."""
    if name not in GAMES:
        raise unknown_name("game", name, GAMES)
    return GAMES[name].from_history(actions, deal=deal, **options)


def list_games() -> list[str]:
    """The registered game names, sorted."""
    return sorted(GAMES)


def list_players(game: str) -> list[str]:
    """Scripted players available for `game` (every game has 'random')."""
    if game not in GAMES:
        raise unknown_name("game", game, GAMES)
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


from stlm_selfplay.envs import players, tictactoe, connect_four, nim, kuhn_poker, simple_negotiation  # noqa: E402,F401
