"""Scripted players are as strong as they claim, measured by match play (and, for Kuhn, against
the exact expected value)."""

from __future__ import annotations

import math

import pytest

from stlm_selfplay.envs import make_player
from stlm_selfplay.envs.evaluation import kuhn_policy_table, kuhn_value, play_match


@pytest.mark.parametrize(
    "game, strong, weak, games, unbeaten_first",
    [
        ("connect_four", "heuristic", "random", 60, True),
        ("connect_four", "negamax:depth=2", "random", 20, True),
        ("connect_four", "negamax:depth=3", "heuristic", 10, True),
        ("nim", "optimal", "random", 100, True),  # (3,4,5) is a first-player win
        ("simple_negotiation", "heuristic", "random", 200, False),  # deals can favour either side
    ],
)
def test_bot_beats_weaker_player_in_both_seats(game, strong, weak, games, unbeaten_first):
    result = play_match(game, make_player(game, strong), make_player(game, weak), games, seed=0)
    for rec in result.seats:
        assert rec.wins > 2 * rec.losses, (game, strong, result.table())
    if unbeaten_first:
        assert result.seats[0].losses == 0


def test_kuhn_nash_vs_uniform_match_agrees_with_the_exact_value():
    """Nash (alpha=1/6) against uniform: exact chips per hand by seat from the policy tables;
    the mean over 1,000 seeded hands per seat lies within 4 standard errors of it."""
    nash, uniform = (kuhn_policy_table(make_player("kuhn_poker", p)) for p in ("nash", "random"))
    exact = (kuhn_value(nash, uniform), -kuhn_value(uniform, nash))
    assert exact == pytest.approx((1 / 9, 1 / 6))
    result = play_match("kuhn_poker", make_player("kuhn_poker", "nash"), make_player("kuhn_poker", "random"), 2000, seed=0)
    for seat, rec in enumerate(result.seats):
        standard_error = 2.0 / math.sqrt(rec.games)  # payoffs lie in [-2, 2]
        assert abs(rec.payoff / rec.games - exact[seat]) < 4 * standard_error
