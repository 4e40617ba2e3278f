"""Exact action values (selfplay/action_values.py, mmd's `values: exact` and `infostate`): Q(h, b)
and Q(I, b) equal hand computations on Kuhn histories, Q(I, b) is Q(h, b) where one history carries
the weight, the learner's wrapped policy gives the enumeration's values under its own probabilities,
they reach the batch row by row, and games too big or without information states are one-line errors."""

from __future__ import annotations

import pytest
import torch

from _selfplay_fixtures import selfplay_config, tiny_random_model
from stlm_selfplay.envs import make
from stlm_selfplay.errors import UserError
from stlm_selfplay.envs.kuhn_poker import KuhnPoker
from stlm_selfplay.selfplay.action_values import (ExactValuesPolicy, action_values, infostate_action_values,
                                                  information_histories, subtree_decisions, with_exact_values)
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


# both seats, every information state a hand can reach from the deals below (not card-sensible either)
FULL = dict(FIXED, J={"check": 0.8, "bet": 0.2}, K={"check": 0.7, "bet": 0.3}, Q={"check": 0.5, "bet": 0.5},
            Jp={"check": 0.9, "bet": 0.1}, Qp={"check": 0.6, "bet": 0.4}, Jb={"call": 0.1, "fold": 0.9},
            Qb={"call": 0.3, "fold": 0.7}, Jpb={"call": 0.0, "fold": 1.0}, Kpb={"call": 1.0, "fold": 0.0})


def _full(node):
    return FULL[node.info_state(node.current_player)]


def test_infostate_q_equals_a_hand_computation_on_kuhn_information_states():
    """Q(I, b) = sum_h w(h) Q(h, b) / sum_h w(h), w(h) = chance 1/2 x the opponent's reach (FULL).

    Seat 1 holds Q facing a bet: seat 0 holds J (bets 0.2) or K (bets 0.3):
        w(JQ) = 1/2 x 0.2 = 0.10: Q(call) = +2, Q(fold) = -1
        w(KQ) = 1/2 x 0.3 = 0.15: Q(call) = -2, Q(fold) = -1
        Q(I, call) = (0.10 x 2 - 0.15 x 2) / 0.25 = -0.4;  Q(I, fold) = -1
    Seat 1 holds K after a check: seat 0 checked with J (0.8) or Q (0.5); check wins 1; bet:
        vs J (folds Jpb): +1;  vs Q (calls Qpb 0.4): 0.4 x 2 + 0.6 x 1 = 1.4
        Q(I, check) = 1;  Q(I, bet) = (0.4 x 1 + 0.25 x 1.4) / 0.65 = 0.75 / 0.65
    Seat 0 holds Q at the root: no decision before it, chance 1/2 each (seat 1: J or K):
        vs J: Q(check) = 0.9 (Jp checks: +1) + 0.1 (Jp bets: 0.4 x 2 + 0.6 x -1) = 0.92
              Q(bet)   = 0.1 (Jb calls: +2) + 0.9 (Jb folds: +1) = 1.1
        vs K: Q(check) = -1.3, Q(bet) = -0.5 (test_q_values_equal_a_hand_computation_on_a_kuhn_deal)
        Q(I, check) = (0.92 - 1.3) / 2 = -0.19;  Q(I, bet) = (1.1 - 0.5) / 2 = 0.3"""
    facing_bet = _kuhn(deal=((0, 1),), moves=["bet"])
    assert infostate_action_values(facing_bet, _full) == pytest.approx([-0.4, -1.0])
    assert action_values(facing_bet, _full) == pytest.approx([2.0, -1.0])  # exact: the true deal only (J vs Q)
    histories = information_histories(facing_bet)
    assert sorted((node.deal, chance, [(p.info_state(p.current_player), a) for p, a in path])
                  for node, chance, path in histories) == [(((0, 1),), 0.5, [("J", "bet")]),
                                                           (((2, 1),), 0.5, [("K", "bet")])]
    assert infostate_action_values(_kuhn(deal=((1, 2),), moves=["check"]), _full) == pytest.approx([1.0, 0.75 / 0.65])
    assert infostate_action_values(_kuhn(deal=((1, 0),)), _full) == pytest.approx([-0.19, 0.3])
    assert infostate_action_values(_kuhn(deal=((1, 2),)), _full) == pytest.approx([-0.19, 0.3])  # same state


def test_at_the_kuhn_equilibrium_infostate_q_makes_every_mixed_choice_indifferent():
    """At a Nash equilibrium every action played with positive probability has the best Q(I, .):
    the two actions of each mixed information state (J and K at the root, Q facing a bet, Q after
    check-bet, J after a check) are worth the same, and a pure state's action is no worse. Q(h, b)
    of one deal is not: Q facing a bet calls for +2 against J and -2 against K."""
    from stlm_selfplay.envs.kuhn_poker import nash_policy

    nash = lambda node: nash_policy(node.info_state(node.current_player), 1 / 6)  # noqa: E731
    mixed = 0
    for c0, c1 in [(c0, c1) for c0 in range(3) for c1 in range(3) if c0 != c1]:
        for moves in ((), ("check",), ("bet",), ("check", "bet")):
            game = _kuhn(deal=((c0, c1),), moves=moves)
            probs, q = nash(game), infostate_action_values(game, nash)
            played = [value for action, value in zip(game.legal_actions(), q) if probs[action] > 0]
            assert min(played) == pytest.approx(max(q), abs=1e-9), (game.info_state(game.current_player), q)
            mixed += len(played) == 2
    assert mixed == 10  # 5 mixed information states x the 2 deals behind each
    assert action_values(_kuhn(deal=((0, 1),), moves=["bet"]), nash) == pytest.approx([2.0, -1.0])


class _FaceUpKuhn(KuhnPoker):
    """Kuhn poker whose information states hold one history each (both cards face up)."""

    def information_deals(self, player):
        return [(self.deal, 1.0)]


def test_infostate_q_equals_exact_q_where_one_history_carries_the_information_state():
    deals = [((c0, c1),) for c0 in range(3) for c1 in range(3) if c0 != c1]
    for deal in deals:
        for moves in ((), ("check",), ("bet",), ("check", "bet")):
            game = _FaceUpKuhn().reset(seed=0, deal=deal)
            for move in moves:
                game.step(move)
            assert infostate_action_values(game, _full) == pytest.approx(action_values(game, _full))
    # the opponent's reach is 0 for one of the two deals: never bets with J, so a bet means K
    never_bluffs = dict(FULL, J={"check": 1.0, "bet": 0.0})
    facing_bet = _kuhn(deal=((0, 1),), moves=["bet"])
    k_bets = action_values(_kuhn(deal=((2, 1),), moves=["bet"]), _full)
    assert k_bets == pytest.approx([-2.0, -1.0])
    assert infostate_action_values(facing_bet, lambda n: never_bluffs[n.info_state(n.current_player)]) == \
        pytest.approx(k_bets)


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
    infostate = ExactValuesPolicy(ModelPolicy(model, temperature=1.0), values="infostate")
    games += [_kuhn(deal=((1, 0),), moves=("check", "bet"))]
    decisions = infostate.act(games, [g.current_player for g in games], RolloutRandom(0))
    for game, decision in zip(games, decisions):
        assert decision.action_values == pytest.approx(infostate_action_values(game, model_policy), abs=1e-5)
    assert decisions[1].action_values != pytest.approx(action_values(games[1], model_policy), abs=1e-3)
    assert len(infostate.cache) <= 12


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
    ("[{games: {kuhn_poker: 1.0}, opponents: {self: 1.0}}]",
     {"objectives": "[{name: mmd, values: infostate, surrogate: ppo}]"}, "surrogate: pg"),
    ("[{games: {tictactoe: 1.0}, opponents: {self: 1.0}}]", {"objectives": "[{name: mmd, values: infostate}]"},
     "information_deals"),
    ("[{games: {kuhn_poker: 1.0}, opponents: {self: 1.0}, game_options: {kuhn_poker: {rounds: 2}}}]",
     {"objectives": "[{name: mmd, values: infostate}]"}, "rounds: 1"),
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
