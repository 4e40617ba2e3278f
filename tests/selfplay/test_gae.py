"""The `gae` advantage estimator (selfplay/advantages.py) against a hand computation."""

from __future__ import annotations

import numpy as np
import pytest

from stlm_selfplay.errors import UserError
from stlm_selfplay.selfplay.advantages import Turns, build_estimator, shaped_reward

# One tic-tac-toe game (episode 0) that x (seat 0) wins on its 3rd move, o (seat 1) having made
# an illegal first move (penalty 0.5); and, listed in between, episode 1 where the learner
# (seat 0) moved once and lost to a bot. Order of the list = order of play within each game.
#          ep  seat payoff illegal  V
ROWS = [(0, 0, 1.0, False, 0.2),
        (0, 1, -1.0, True, -0.1),
        (1, 0, -1.0, False, 0.3),
        (0, 0, 1.0, False, 0.5),
        (0, 1, -1.0, False, -0.4),
        (0, 0, 1.0, False, 0.8)]


def turns(with_values: bool = True) -> Turns:
    episode, seat, payoff, illegal, value = (np.array(c) for c in zip(*ROWS))
    return Turns(reward=shaped_reward(payoff, illegal, 0.5), game=["tictactoe"] * len(ROWS), role=seat,
                 episode=episode, group=episode, payoff=payoff, value=value if with_values else None)


def test_gae_equals_the_hand_computation():
    # gamma = 0.9, lambda = 0.5, gamma * lambda = 0.45; delta_t = r_t + gamma V_{t+1} [t+1 < T] - V_t
    # x, episode 0: V = 0.2, 0.5, 0.8; r = 0, 0, 1 (the payoff on the last turn only)
    #   delta = 0.9*0.5 - 0.2 = 0.25,  0.9*0.8 - 0.5 = 0.22,  1 - 0.8 = 0.2
    #   A_2 = 0.2;  A_1 = 0.22 + 0.45*0.2 = 0.31;  A_0 = 0.25 + 0.45*0.31 = 0.3895
    # o, episode 0: V = -0.1, -0.4; r = -0.5 (illegal-move shaping), -1 (the payoff)
    #   delta = -0.5 + 0.9*(-0.4) + 0.1 = -0.76,  -1 + 0.4 = -0.6
    #   A_1 = -0.6;  A_0 = -0.76 + 0.45*(-0.6) = -1.03
    # x, episode 1: one turn, V = 0.3, r = -1: A = -1.3
    gae = build_estimator("gae", {"gamma": 0.9, "lambda": 0.5})
    t = turns()
    adv = gae(t)
    np.testing.assert_allclose(adv, [0.3895, -1.03, -1.3, 0.31, -0.6, 0.2], atol=1e-12)
    # returns R = A + V are the value targets
    np.testing.assert_allclose(gae.value_targets(t, adv), [0.5895, -1.13, -1.0, 0.81, -1.0, 1.0], atol=1e-12)


def test_gae_limits_and_other_estimators_value_targets():
    t = turns()
    reward_to_go = [1.0, -1.5, -1.0, 1.0, -1.0, 1.0]  # sum of r_k from t on, per seat and game
    mc = build_estimator("gae", {"gamma": 1.0, "lambda": 1.0})  # Monte Carlo: A = R - V
    np.testing.assert_allclose(mc(t), np.array(reward_to_go) - t.value, atol=1e-12)
    td = build_estimator("gae", {"gamma": 1.0, "lambda": 0.0})  # one-step TD: A = r + V' - V
    np.testing.assert_allclose(td(t), [0.5 - 0.2, -0.5 - 0.4 + 0.1, -1.3, 0.8 - 0.5, -0.6, 0.2], atol=1e-12)
    rae = build_estimator("rae")
    np.testing.assert_allclose(rae.value_targets(t, rae(t)), reward_to_go, atol=1e-12)


def test_gae_options_and_missing_values_are_user_errors():
    with pytest.raises(UserError, match="needs per-turn values: a model with value_head: true"):
        build_estimator("gae")(turns(with_values=False))
    with pytest.raises(UserError, match="valid options: gamma, lambda"):
        build_estimator("gae", {"lam": 0.9})
    with pytest.raises(UserError, match="must be in \\[0, 1\\]"):
        build_estimator("gae", {"lambda": 1.5})
    default = build_estimator("gae")
    assert (default.gamma, default.lam) == (1.0, 0.95)
