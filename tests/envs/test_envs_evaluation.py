"""Exact evaluators: Kuhn NashConv, tic-tac-toe optimal-move rate, match play, Wilson intervals."""

from __future__ import annotations

import math

import pytest

from stlm_selfplay.envs import make_player
from stlm_selfplay.envs.evaluation import (
    KUHN_INFO_STATES,
    kuhn_exploitability,
    kuhn_nash_conv,
    kuhn_policy_table,
    kuhn_value,
    optimal_move_rate,
    play_match,
    rate_from_probabilities,
    tictactoe_positions,
    wilson_interval,
)


def _uniform_table():
    return {s: ({"check": 0.5, "bet": 0.5} if s[1:] in ("", "p") else {"call": 0.5, "fold": 0.5}) for s in KUHN_INFO_STATES}


def test_kuhn_information_states_are_the_12_classic_ones():
    assert sorted(KUHN_INFO_STATES) == sorted(c + h for c in "JQK" for h in ("", "p", "b", "pb"))


def test_kuhn_uniform_policy_nash_conv():
    assert kuhn_nash_conv(_uniform_table()) == pytest.approx(0.9167, abs=1e-3)
    assert kuhn_nash_conv(_uniform_table()) == pytest.approx(11 / 12, abs=1e-12)
    assert kuhn_exploitability(_uniform_table()) == pytest.approx(11 / 24, abs=1e-12)
    assert kuhn_nash_conv(kuhn_policy_table(make_player("kuhn_poker", "random"))) == pytest.approx(11 / 12)


@pytest.mark.parametrize("alpha", [0.0, 0.1, 1 / 6, 0.25, 1 / 3])
def test_kuhn_nash_family_has_zero_nash_conv_and_value_minus_one_18th(alpha):
    table = kuhn_policy_table(make_player("kuhn_poker", "nash", alpha=alpha))
    assert abs(kuhn_nash_conv(table)) < 1e-9
    assert kuhn_value(table, table) == pytest.approx(-1 / 18, abs=1e-12)
    assert table["K"]["bet"] == pytest.approx(3 * alpha) and table["Qpb"]["call"] == pytest.approx(alpha + 1 / 3)


def test_kuhn_always_bet_and_call_by_hand():
    """pi: bet when no bet is out, call when facing one: every hand is a showdown for 2, v = 0.
    Seat 0's best response: J check-fold (-1), Q either (0), K bet (+2): max v = 1/3.
    Seat 1's best response facing a bet: J fold (seat 0 +1), Q call (0), K call (seat 0 -2):
    min v = -1/3. NashConv = 1/3 - (-1/3) = 2/3."""
    always = {s: ({"check": 0.0, "bet": 1.0} if s[1:] in ("", "p") else {"call": 1.0, "fold": 0.0}) for s in KUHN_INFO_STATES}
    assert kuhn_value(always, always) == pytest.approx(0.0, abs=1e-12)
    fold_j = dict(always, Jb={"fold": 1.0})
    assert kuhn_value(always, fold_j) == pytest.approx(-1 / 3, abs=1e-12)
    assert kuhn_nash_conv(always) == pytest.approx(2 / 3, abs=1e-12)


def test_tictactoe_optimal_move_rate_minimax_one_uniform_058():
    minimax = optimal_move_rate(make_player("tictactoe", "minimax"))
    assert minimax["rate"] == 1.0 and minimax["greedy"] == 1.0 and minimax["positions"] == 4520
    uniform = optimal_move_rate(make_player("tictactoe", "random"))
    assert uniform["rate"] == pytest.approx(0.58, abs=0.01)
    assert uniform["greedy"] == pytest.approx(uniform["rate"])  # all moves tie: split evenly


def test_batched_rate_matches_callable_and_greedy_differs_from_mass():
    positions = tictactoe_positions()
    assert len(positions) == 4520 and all(p.optimal <= set(p.legal) and p.optimal for p in positions)
    # a policy with 0.6 on the first legal move and the rest spread evenly
    def skewed(game):
        legal = game.legal_actions()
        rest = (0.4 / (len(legal) - 1)) if len(legal) > 1 else 0.0
        return {a: (0.6 if i == 0 or len(legal) == 1 else rest) for i, a in enumerate(legal)}

    batched = rate_from_probabilities([skewed(p.game) for p in positions])
    assert batched == optimal_move_rate(skewed)
    first_optimal = sum(p.legal[0] in p.optimal for p in positions) / len(positions)
    assert batched["greedy"] == pytest.approx(first_optimal)
    def mass_on_optimal(p):
        if len(p.legal) == 1:
            return 1.0  # a forced move is optimal
        rest = 0.4 / (len(p.legal) - 1)
        return sum(0.6 if a == p.legal[0] else rest for a in p.optimal)

    expected_mass = sum(mass_on_optimal(p) for p in positions) / len(positions)
    assert batched["rate"] == pytest.approx(expected_mass)


def test_minimax_never_loses_to_random_over_2000_games():
    result = play_match("tictactoe", make_player("tictactoe", "minimax"), make_player("tictactoe", "random"), 2000, seed=0)
    first, second = result.seats
    assert first.games == second.games == 1000
    assert first.losses == 0 and second.losses == 0
    assert first.wins / first.games >= 0.95
    assert first.illegal == second.illegal == 0
    again = play_match("tictactoe", make_player("tictactoe", "minimax"), make_player("tictactoe", "random"), 2000, seed=0)
    assert again.as_dict() == result.as_dict()
    row = result.as_dict()["by_seat"][0]["wins"]
    assert row["ci95"] == list(wilson_interval(first.wins, 1000))


def test_match_counts_illegal_moves_by_seat():
    class Babbler:
        name = "babbler"

        def act(self, game, rng):
            return "no idea"

    result = play_match("nim", Babbler(), make_player("nim", "optimal"), 10, seed=1, illegal="lose")
    for rec in result.seats:
        assert rec.games == 5 and rec.losses == 5 and rec.illegal == 5 and rec.opponent_illegal == 0
    assert "babbler vs optimal" in result.table()


def test_wilson_interval_by_hand():
    z = 1.959963984540054
    lo, hi = wilson_interval(5, 10)
    centre, half = (0.5 + z * z / 20) / (1 + z * z / 10), z / (1 + z * z / 10) * math.sqrt(0.025 + z * z / 400)
    assert (lo, hi) == pytest.approx((centre - half, centre + half)) and lo == pytest.approx(0.2366, abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0) and wilson_interval(0, 0) == (0.0, 1.0)
