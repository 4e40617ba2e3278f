"""Exact action values (selfplay/action_values.py, mmd's `values: exact`): Q(h, b) equals a hand
computation on a Kuhn history, the learner's wrapped policy gives the enumeration's values under
its own probabilities, they reach the batch row by row, and games too big are one-line errors."""

from __future__ import annotations

import pytest
import torch

from _selfplay_fixtures import selfplay_config, tiny_random_model
from stlm_selfplay.envs import make
from stlm_selfplay.errors import UserError
from stlm_selfplay.selfplay.action_values import (ExactValuesPolicy, action_values, subtree_decisions,
                                                  with_exact_values)
from stlm_selfplay.selfplay.batch import turns_to_batch
from stlm_selfplay.selfplay.evaluate import constrained_probs
from stlm_selfplay.selfplay.policies import ModelPolicy, RolloutRandom
from stlm_selfplay.selfplay.rollout import Turn

# a fixed (not card-sensible) policy by information state: seat 1 with K bets 3/4 after a check and
# calls 1/2 facing a bet; seat 0 with Q calls 0.4 after check-bet
FIXED = {"Kp": {"check": 0.25, "bet": 0.75}, "Kb": {"call": 0.5, "fold": 0.5}, "Qpb": {"call": 0.4, "fold": 0.6}}


def _kuhn(deal=((1, 2),), moves=()):
    game = make("kuhn_poker").reset(seed=0, deal=deal)
    for move in moves:
        game.step(move)
    return game


def _fixed(node):
    return FIXED[node.info_state(node.current_player)]


def test_q_values_equal_a_hand_computation_on_a_kuhn_deal():
    """Seat 0 holds Q, seat 1 holds K (deal (1, 2)), payoffs in chips for the mover:

    root, seat 0:  Q(bet)   = 1/2 (call: -2) + 1/2 (fold: +1)                          = -0.5
                   Q(check) = 1/4 (check: -1) + 3/4 (bet: 0.4 (call: -2) + 0.6 (fold: -1)) = -1.3
    after check, seat 1:  Q(check) = +1 (K wins the showdown for 1)
                          Q(bet)   = 0.4 (Q calls: +2) + 0.6 (Q folds: +1)             = 1.4"""
    root = _kuhn()
    assert root.legal_actions() == ["check", "bet"]
    assert action_values(root, _fixed) == pytest.approx([-1.3, -0.5])
    after_check = _kuhn(moves=["check"])
    assert action_values(after_check, _fixed) == pytest.approx([1.0, 1.4])
    facing_bet = _kuhn(moves=["bet"])  # seat 1 with K facing a bet: call wins 2, fold loses 1
    assert facing_bet.legal_actions() == ["call", "fold"]
    assert action_values(facing_bet, _fixed) == pytest.approx([2.0, -1.0])
    assert len(subtree_decisions(root)) == 3  # after "check": seat 1; after "check, bet": seat 0; after "bet": seat 1


def test_the_wrapped_learner_values_its_turns_under_its_own_probabilities():
    model = tiny_random_model(0)
    policy = ExactValuesPolicy(ModelPolicy(model, temperature=1.0))
    games = [_kuhn(deal=((c0, c1),), moves=moves) for c0, c1 in ((0, 1), (2, 0)) for moves in ((), ("check",), ("bet",))]
    decisions = policy.act(games, [g.current_player for g in games], RolloutRandom(0))

    def model_policy(node):  # one constrained_probs call per node: no cache, no batching across nodes
        return constrained_probs(model, [node])[0]

    for game, decision in zip(games, decisions):
        assert decision.action_values == pytest.approx(action_values(game, model_policy), abs=1e-5)
        # the mover's probabilities are the ones the values were computed with
        assert decision.probs == pytest.approx(list(model_policy(game).values()), abs=1e-5)
    assert len(policy.cache) <= 12  # 3 cards x 4 public histories: each prompt scored once


def test_values_reach_the_batch_row_by_row_and_only_the_learner_is_wrapped():
    model = tiny_random_model(0)
    games = [_kuhn(deal=((0, 2),)), _kuhn(deal=((2, 1),), moves=("bet",))]
    decisions = ExactValuesPolicy(ModelPolicy(model)).act(games, [g.current_player for g in games], RolloutRandom(1))
    turns = [Turn("kuhn_poker", i, g.current_player, "learner", d) for i, (g, d) in enumerate(zip(games, decisions))]
    batch = turns_to_batch(turns, torch.zeros(2))
    expected = [q for d in decisions for q in d.action_values]
    assert batch.extras["action_values"].tolist() == pytest.approx(expected)
    assert batch.extras["groups"].tolist() == [0, 0, 1, 1]
    objective = type("O", (), {"options": type("Opt", (), {"values": "exact"})()})()
    policies = with_exact_values({"learner": ModelPolicy(model), "pool/step_0": ModelPolicy(model)}, objective, "learner")
    assert isinstance(policies["learner"], ExactValuesPolicy) and isinstance(policies["pool/step_0"], ModelPolicy)


def _exact_config(tmp_path, stages, **selfplay):
    return selfplay_config(None, tmp_path, "exact", stages=stages,
                           objectives=selfplay.pop("objectives", "[{name: mmd, values: exact, prox_coef: 1.0}]"),
                           **selfplay)


@pytest.mark.parametrize("stages, selfplay, message", [
    ("[{games: {tictactoe: 1.0}, opponents: {self: 1.0}}]", {}, "values: sampled"),
    ("[{games: {kuhn_poker: 1.0}, opponents: {self: 1.0}}]", {"advantages.drop_zero": True}, "drop_zero: false"),
    ("[{games: {kuhn_poker: 1.0}, opponents: {self: 1.0}}]",
     {"objectives": "[{name: mmd, values: exact, surrogate: ppo}]"}, "surrogate: pg"),
    ("[{games: {kuhn_poker: 1.0}, opponents: {self: 1.0}}]", {"objectives": "[{name: mmd, values: exakt}]"}, "exact"),
    ("[{games: {kuhn_poker: 1.0}, opponents: {self: 1.0}, temperature: 0}]", {}, "temperature > 0"),
])
def test_bad_exact_values_configs_are_one_line_user_errors(tmp_path, stages, selfplay, message):
    from stlm_selfplay.selfplay.config import check_selfplay

    with pytest.raises(UserError, match=message) as err:
        check_selfplay(_exact_config(tmp_path, stages, **selfplay).selfplay)
    assert "\n" not in str(err.value)


def test_kuhn_with_exact_values_passes_the_checks_and_a_big_tree_is_refused_mid_game(tmp_path):
    from stlm_selfplay.selfplay.config import check_selfplay

    check_selfplay(_exact_config(tmp_path, "[{games: {kuhn_poker: 1.0}, opponents: {self: 1.0}}]").selfplay)
    ttt = make("tictactoe")
    ttt.reset(seed=0)
    for move in ttt.legal_actions()[:3]:  # 6 empty squares left: 1,236 decision nodes below
        ttt.step(move)
    assert len(subtree_decisions(ttt)) < 2000
    with pytest.raises(UserError, match="small games") as err:
        subtree_decisions(ttt, max_nodes=100)
    assert "\n" not in str(err.value)
