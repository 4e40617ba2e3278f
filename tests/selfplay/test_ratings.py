"""Bradley-Terry ratings: known win rates, ordering, anchor, bootstrap, ratings.jsonl."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stlm_selfplay.errors import UserError
from stlm_selfplay.selfplay.ratings import (
    ELO_PER_NAT,
    append_rows,
    bootstrap_intervals,
    fit_ratings,
    rating_rows,
    read_rows,
)


def _games(a, b, wins, draws, losses):
    return [(a, b, 1.0)] * wins + [(a, b, 0.5)] * draws + [(a, b, 0.0)] * losses


@pytest.mark.parametrize("wins,draws,losses", [(225, 0, 75), (50, 100, 0), (10, 0, 90)])
def test_two_players_rating_difference_is_400_log10_odds(wins, draws, losses):
    p = (wins + 0.5 * draws) / (wins + draws + losses)
    # the learner sits in seat b in half of the games: a result seen from the other seat
    games = _games("learner", "random", wins // 2, draws // 2, losses // 2)
    games += [(b, a, 1.0 - s) for a, b, s in _games("learner", "random", wins - wins // 2, draws - draws // 2, losses - losses // 2)]
    elo = fit_ratings(games)
    assert elo["random"] == 0.0
    assert elo["learner"] == pytest.approx(400 * math.log10(p / (1 - p)), abs=0.05)


def test_transitive_three_players_order_and_anchor_zero():
    games = _games("strong", "mid", 14, 0, 6) + _games("mid", "random", 14, 0, 6) + _games("strong", "random", 17, 2, 1)
    elo = fit_ratings(games, anchor="random")
    assert elo["strong"] > elo["mid"] > elo["random"] == 0.0
    assert fit_ratings(games, anchor="mid")["mid"] == 0.0


def test_fit_is_a_stationary_point_of_the_penalized_likelihood():
    rng = np.random.default_rng(0)
    names = ["random", "a", "b", "c"]
    games = [(names[i], names[j], float(rng.choice([0.0, 0.5, 1.0]))) for i, j in rng.integers(0, 4, (60, 2)) if i != j]
    prior = 1e-3
    elo = fit_ratings(games, prior=prior)

    def loglik(theta):  # written from the definition, one game at a time
        total = -0.5 * prior * sum(t * t for t in theta.values())
        for a, b, s in games:
            d = theta[a] - theta[b]
            total += s * math.log(1 / (1 + math.exp(-d))) + (1 - s) * math.log(1 / (1 + math.exp(d)))
        return total

    # the fit is reported shifted so random = 0; the penalized optimum itself has mean 0 (the
    # likelihood's gradient sums to 0 over players, so prior * sum(theta) = 0): undo the shift
    theta = {p: e / ELO_PER_NAT for p, e in elo.items()}
    mean = sum(theta.values()) / len(theta)
    theta = {p: t - mean for p, t in theta.items()}
    for p in names:
        up, down = dict(theta), dict(theta)
        up[p] += 1e-5
        down[p] -= 1e-5
        assert (loglik(up) - loglik(down)) / 2e-5 == pytest.approx(0.0, abs=1e-5)


def test_unbeaten_player_stays_finite():
    elo = fit_ratings(_games("bot", "random", 10, 0, 0))
    assert 400 < elo["bot"] < 3000


def test_missing_anchor_is_a_user_error():
    with pytest.raises(UserError, match="rating anchor 'random' played no games"):
        fit_ratings(_games("a", "b", 1, 0, 1))


def test_bootstrap_is_deterministic_for_a_seed_and_brackets_the_fit():
    games = _games("strong", "mid", 14, 0, 6) + _games("mid", "random", 12, 2, 6)
    first = bootstrap_intervals(games, n_boot=50, seed=3)
    assert first == bootstrap_intervals(games, n_boot=50, seed=3)
    assert first != bootstrap_intervals(games, n_boot=50, seed=4)
    elo = fit_ratings(games)
    for p in ("strong", "mid"):
        assert first[p][0] < elo[p] < first[p][1]
    assert first["random"] == (0.0, 0.0)


def test_rating_rows_append_and_read_back_skipping_a_torn_line(tmp_path):
    path = tmp_path / "ratings.jsonl"
    games = _games("snap", "random", 7, 1, 2)
    rows = rating_rows(games, step=100, n_boot=20, seed=0)
    assert [r["player"] for r in rows] == ["snap", "random"]
    assert rows[0]["games"] == 10 and rows[0]["anchor"] == "random" and rows[0]["lo"] < rows[0]["elo"] < rows[0]["hi"]
    append_rows(path, rows)
    append_rows(path, rating_rows(games, step=200, n_boot=0))
    with open(path, "a") as f:
        f.write('{"step": 300, "pla')  # a write cut short by a hard kill
    back = read_rows(path)
    assert [(r["step"], r["player"]) for r in back] == [(100, "snap"), (100, "random"), (200, "snap"), (200, "random")]
    assert back[0] == rows[0]
    assert read_rows(tmp_path / "missing.jsonl") == []
