"""`Registry`: register, get with the closest-name error, list; every plugin registry uses it."""

from __future__ import annotations

import pytest

from stlm_selfplay.errors import UserError
from stlm_selfplay.registry import Registry, named


def test_register_get_list_and_closest_name_error():
    colours = Registry("colour")
    colours.register("red", 1)

    @colours.register("green")
    def green():
        return 2

    assert colours.get("red") == 1 and colours.get("green") is green and colours.get("blue", None) is None
    assert colours.list() == ["green", "red"] and list(colours) == ["red", "green"]  # sorted / registration order
    with pytest.raises(UserError, match=r"unknown colour 'gren' \(did you mean 'green'\?\); valid: green, red"):
        colours.get("gren")
    colours.register("red", 1)  # the same entry again: harmless (a module imported twice)
    with pytest.raises(ValueError, match="colour 'red' registered twice"):
        colours.register("red", 3)


def test_named_sets_the_class_name():
    shapes = Registry("shape")

    @named(shapes, "square")
    class Square:
        pass

    assert Square.name == "square" and shapes.get("square") is Square


def test_every_plugin_registry_is_a_registry_filled_by_its_package():
    from stlm_selfplay.data.sources import SOURCES
    from stlm_selfplay.envs import GAMES, PLAYERS
    from stlm_selfplay.model.config import PRESETS
    from stlm_selfplay.objectives import REGISTRY

    for registry, some in ((GAMES, "tictactoe"), (PLAYERS["kuhn_poker"], "nash"), (PLAYERS["*"], "random"),
                           (SOURCES, "games"), (PRESETS, "tiny"), (REGISTRY, "ce")):
        assert isinstance(registry, Registry) and some in registry.list()
    with pytest.raises(UserError, match="unknown objective 'c' .*valid: .*ce"):
        REGISTRY.get("c")
    with pytest.raises(UserError, match=r"unknown model preset 'tiny2' \(did you mean 'tiny'\?\)"):
        PRESETS.get("tiny2")
