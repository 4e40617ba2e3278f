"""`Registry`: config names -> swappable parts (games, players, objectives, data sources, model
presets, exact game metrics), one class for all of them.

    GAMES = Registry("game")

    @GAMES.register("tictactoe")       # or GAMES.register("tictactoe", TicTacToe)
    class TicTacToe(Game): ...

    GAMES.get("tictactoe")             # the class
    GAMES.get("tictactoe2")            # UserError: unknown game 'tictactoe2' (did you mean
                                       #   'tictactoe'?); valid: connect_four, ..., tictactoe
    GAMES.list()                       # the names, sorted

A registry is also a plain mapping (`name in GAMES`, `GAMES[name]`, iteration in registration
order), so a test can add an entry with `monkeypatch.setitem`.

The plugin pattern, the same in every package that has plugins: the registry lives in a module
that imports none of its plugins; each plugin module imports the registry and registers itself;
the package's `__init__.py` imports the plugin modules (one line per plugin), so importing the
package (or anything in it) fills the registry.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, Callable, Iterator

from stlm_selfplay.errors import unknown_name

_MISSING = object()


class Registry(MutableMapping):
    """Names -> entries of one `kind` (the word its error messages use: "game", "objective")."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Any] = {}

    def register(self, name: str, entry: Any = None) -> Any:
        """Add `entry` under `name` (returns it), or with no entry a decorator that adds what it
        decorates. A second, different entry under a taken name is a `ValueError` (a bug, not input)."""
        def add(obj: Any) -> Any:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._entries[name] = obj
            return obj

        return add if entry is None else add(entry)

    def get(self, name: str, default: Any = _MISSING) -> Any:
        """The entry of `name`; a missing name is a `UserError` naming the closest registered name
        and all valid ones (with a `default`, the plain mapping `get`)."""
        if name not in self._entries:
            if default is not _MISSING:
                return default
            raise unknown_name(self.kind, name, self._entries)
        return self._entries[name]

    def list(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def __getitem__(self, name: str) -> Any:
        return self._entries[name]

    def __setitem__(self, name: str, entry: Any) -> None:
        self._entries[name] = entry

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"


def named(registry: Registry, name: str) -> Callable[[type], type]:
    """Class decorator: register the class under `name` and set its `name` attribute."""
    def wrap(cls: type) -> type:
        registry.register(name, cls)
        cls.name = name
        return cls

    return wrap
