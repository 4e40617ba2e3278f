"""Fuzz: 20,000 random byte strings per game as actions never raise and follow the illegal rule."""

from __future__ import annotations

import random
import re

import pytest

from stlm_selfplay.envs import make

EVERY_GAME = ["connect_four", "kuhn_poker", "nim", "simple_negotiation", "tictactoe"]
RULES = ["lose", "retry:2", "random"]
_FIRST_BRACKETED = re.compile(rb"\[([^\]]*)\]")


def _reference_parse(data: bytes) -> str | None:
    """An independent reading of the parsing rule: first "[...]" token, stripped, lower-cased."""
    match = _FIRST_BRACKETED.search(data)
    return match.group(1).decode("utf-8", "replace").strip().lower() if match else None


def _fuzz_inputs(rng: random.Random, legal_hint: list[str], count: int) -> list[bytes]:
    specials = [
        b"", b"[", b"]", b"[]", b"[ ]", b"\xff\xfe\xfd", b"[\xff]", b"\xc3[", b"[" * 1000,
        rng.randbytes(1 << 20), b"x" * (1 << 20) + b"[0]", b"[" + rng.randbytes(1 << 20) + b"]",
    ]
    out = list(specials)
    while len(out) < count:
        kind = rng.random()
        if kind < 0.6:  # raw random bytes, mostly short
            out.append(rng.randbytes(rng.choice([0, 1, 2, 3, 5, 8, 16, 64, 300])))
        elif kind < 0.8:  # brackets with junk
            junk = rng.randbytes(rng.randrange(6))
            out.append(rng.randbytes(rng.randrange(4)) + b"[" + junk + b"]" + rng.randbytes(rng.randrange(4)))
        else:  # a (maybe) legal action with noise and case changes
            action = rng.choice(legal_hint).upper() if rng.random() < 0.5 else rng.choice(legal_hint)
            out.append(rng.randbytes(rng.randrange(3)).replace(b"[", b"") + b"[ " + action.encode() + b" ]" + rng.randbytes(rng.randrange(3)))
    return out


@pytest.mark.parametrize("name", EVERY_GAME)
def test_random_bytes_never_raise_and_follow_the_rule(name):
    rng = random.Random(EVERY_GAME.index(name))
    hint = make(name).legal_actions() + ["accept", "pass", "call", "fold", "0:1"]
    inputs = _fuzz_inputs(rng, hint, 20_000)
    seen = {"ok": 0, "lose": 0, "retry": 0, "random": 0}
    game = None
    for i, data in enumerate(inputs):
        if game is None or game.done:
            rule = RULES[(i // 7) % 3]
            game = make(name, illegal=rule, seed=i)
            strikes = 0
        player, legal, turn = game.current_player, game.legal_actions(), game.turn
        result = game.step(data)
        expected_legal = _reference_parse(data) in legal
        assert result.legal == expected_legal and result.player == player
        if expected_legal:
            assert result.rule == "ok" and result.applied == _reference_parse(data) and game.turn == turn + 1
            strikes = 0
        elif rule == "random":
            assert result.rule == "random" and result.applied in legal and game.turn == turn + 1
        elif rule == "retry:2" and strikes < 2:
            assert result.rule == "retry" and not result.done and game.current_player == player and game.turn == turn
            strikes += 1
        else:
            assert result.rule == "lose" and result.done and game.rewards[player] < 0
            assert sum(game.rewards) == pytest.approx(0.0)
        seen[result.rule] += 1
        if game.done:
            assert sum(game.rewards) == pytest.approx(0.0) and game.outcome is not None
    assert all(count > 0 for count in seen.values()), seen


class _BadStr:
    def __str__(self):
        raise ValueError("no text")


ODD_TEXTS = ["", "\x00", "\ud800", "[" + "é" * 10 + "]", "4" * 100_000, " [ PASS ] ", "[0]"]
ODD_VALUES = [4, -1, 0, 10**100, 1.5, float("nan"), float("-inf"), None, True, 1 + 2j, b"[4]", b"\xff\xfe",
              bytearray(b"[0]"), memoryview(b"[ 1 ]"), ["[4]"], [4], (1, 2), {"a": 1}, {}, set(), object(), _BadStr(),
              Exception("[pass]")]


def _reference_parse_any(action) -> str | None:
    """The documented reading of a non-`str` action: bytes-like by its bytes, anything else by the
    text of `str(action)` (None when that raises); the first bracketed token either way."""
    if isinstance(action, (bytes, bytearray, memoryview)):
        return _reference_parse(bytes(action))
    try:
        text = str(action)
    except Exception:  # noqa: BLE001
        return None
    return _reference_parse(text.encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("name", EVERY_GAME)
def test_text_strings_and_odd_types_never_raise(name, rule):
    """Strings and non-strings (ints, floats, None, bytes, lists, dicts, objects whose str()
    raises) under every illegal-move rule: no exception, and the rule's exact outcome."""
    game, strikes, seen = make(name, illegal=rule, seed=0), 0, set()
    for i, action in enumerate(ODD_TEXTS + ODD_VALUES):
        if game.done:
            game.reset(i)
            strikes = 0
        player, legal, turn = game.current_player, game.legal_actions(), game.turn
        result = game.step(action)
        parsed = action if action.__class__ is str and action in legal else _reference_parse_any(action)
        seen.add(result.rule)
        assert result.player == player
        if parsed in legal:
            assert (result.legal, result.rule, result.applied, game.turn) == (True, "ok", parsed, turn + 1), action
            strikes = 0
        elif rule == "random":
            assert not result.legal and result.rule == "random" and result.applied in legal and game.turn == turn + 1
        elif rule == "retry:2" and strikes < 2:
            assert (result.legal, result.rule, result.done, game.turn) == (False, "retry", False, turn), action
            assert isinstance(game.feedback, str) and len(game.feedback) <= 11
            assert all(" " <= c <= "~" for c in game.feedback)
            strikes += 1
        else:
            assert (result.legal, result.rule, result.done) == (False, "lose", True), action
            assert game.rewards[player] < 0 and sum(game.rewards) == pytest.approx(0.0)
    assert {"random": {"random"}, "retry:2": {"retry", "lose"}, "lose": {"lose"}}[rule] <= seen, seen
