"""`legal_mass` (objectives/legal_mass.py): -mean_t log sum_{a legal} p(a | prompt_t), on hand examples."""

from __future__ import annotations

import math

import pytest
import torch

from _selfplay_fixtures import tiny_random_model
from stlm_selfplay.envs import make
from stlm_selfplay.errors import UserError
from stlm_selfplay.model import score
from stlm_selfplay.objectives import build_objective
from stlm_selfplay.objectives.base import Batch
from stlm_selfplay.selfplay.batch import legal_batch
from stlm_selfplay.selfplay.policies import ModelPolicy, RolloutRandom
from stlm_selfplay.selfplay.rollout import Turn

PROMPTS = [b"ttt x x.o|...|... ?1345678>", b"ttt o xx.|.o.|... ?235678>"]
LEGAL = [[b"[1]", b"[4]", b"[8]"], [b"[2]", b"[3]"]]


def turns(prompts=PROMPTS, legal=LEGAL):
    from stlm_selfplay.selfplay.policies import Decision

    return [Turn("tictactoe", i, 0, "learner", Decision(text=b"[0]", prompt=p, legal=list(a)))
            for i, (p, a) in enumerate(zip(prompts, legal))]


def test_loss_is_minus_mean_log_legal_mass():
    model = tiny_random_model(0)
    objective, _ = build_objective({"name": "legal_mass"})
    batch = legal_batch(turns())
    with torch.no_grad():
        out = objective(model(batch.input_ids, attention_mask=batch.attention_mask), batch)
    # by hand: p(a | prompt) = exp(sum of the per-byte log-probs of `score`)
    mass = [sum(math.exp(float(score(model, [p], [a])[0].sum())) for a in legal) for p, legal in zip(PROMPTS, LEGAL)]
    assert out.loss.item() == pytest.approx(-(math.log(mass[0]) + math.log(mass[1])) / 2, rel=1e-4)
    assert out.metrics["legal_mass"] == pytest.approx(sum(mass) / 2, rel=1e-4)


def test_a_step_on_it_raises_the_legal_mass_and_keeps_the_legal_moves_ratio():
    model = tiny_random_model(1)
    objective, _ = build_objective({"name": "legal_mass"})
    batch = legal_batch(turns())

    def probs():
        with torch.no_grad():
            return [[math.exp(float(score(model, [p], [a])[0].sum())) for a in legal] for p, legal in zip(PROMPTS, LEGAL)]

    before = probs()
    loss = objective(model(batch.input_ids, attention_mask=batch.attention_mask), batch).loss
    loss.backward()
    with torch.no_grad():
        for param in model.parameters():
            param -= 0.05 * param.grad
    after = probs()
    for b, a in zip(before, after):
        assert sum(a) > sum(b)  # more mass on the legal moves
        assert all(y > x for x, y in zip(b, a))  # each legal move gains: the gradient weights them by q(a) > 0


def test_needs_candidate_rows():
    objective, _ = build_objective({"name": "legal_mass"})
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(UserError, match="mode: free") as err:
        objective(type("Out", (), {"logits": torch.zeros(1, 3, 259)})(), Batch(ids, loss_mask=torch.ones_like(ids)))
    assert "\n" not in str(err.value)


def test_free_decisions_carry_the_legal_moves():
    game = make("tictactoe")
    game.reset(seed=0)
    game.step("4")
    policy = ModelPolicy(tiny_random_model(0), mode="free")
    decision = policy.act([game], [game.current_player], RolloutRandom(0))[0]
    assert decision.legal == [f"[{c}]".encode() for c in "01235678"]
    assert decision.candidates is None  # free mode: turns_to_batch keeps its one-row-per-turn layout


def test_greedy_hinge_by_hand():
    from stlm_selfplay.objectives.legal_mass import greedy_hinge

    m = math.log(2)
    lse = torch.tensor([math.log(0.9), math.log(0.6), 0.0], requires_grad=True)
    best = torch.tensor([math.log(0.5), math.log(0.25), math.log(0.5)], requires_grad=True)
    hinge = greedy_hinge(lse, best, m)
    # safe: 0.5 >= 2 * 0.1; at risk: 0.25 < 2 * 0.4, hinge = log(2 * 0.4 / 0.25); M = 1 in float: safe, finite
    assert hinge.tolist() == pytest.approx([0.0, math.log(3.2), 0.0], abs=1e-6)
    hinge.sum().backward()
    assert torch.isfinite(lse.grad).all() and torch.isfinite(best.grad).all()
    # d/d log M of log(1 - M) = -M / (1 - M) = -1.5 on the turn at risk, zero elsewhere
    assert lse.grad.tolist() == pytest.approx([0.0, -1.5, 0.0], abs=1e-5)
    assert best.grad.tolist() == pytest.approx([0.0, -1.0, 0.0])


def test_greedy_term_equals_its_formula_and_is_off_by_default():
    model = tiny_random_model(0)
    batch = legal_batch(turns())
    probs = [[math.exp(float(score(model, [p], [a])[0].sum())) for a in legal] for p, legal in zip(PROMPTS, LEGAL)]
    m, w = 3.0, 0.5  # a wide margin: the random model's turns are at risk
    hinge = [max(0.0, m + math.log(1 - sum(p)) - math.log(max(p))) for p in probs]
    assert min(hinge) > 0
    mass_loss = -sum(math.log(sum(p)) for p in probs) / 2
    with torch.no_grad():
        output = model(batch.input_ids, attention_mask=batch.attention_mask)
        plain = build_objective({"name": "legal_mass"})[0](output, batch)
        greedy = build_objective({"name": "legal_mass", "greedy_weight": w, "greedy_margin": m})[0](output, batch)
    assert plain.loss.item() == pytest.approx(mass_loss, rel=1e-4)
    assert "greedy_risk" not in plain.metrics
    assert greedy.loss.item() == pytest.approx(mass_loss + w * sum(hinge) / 2, rel=1e-4)
    assert greedy.metrics["greedy_risk"] == 1.0


def test_a_step_on_the_greedy_term_raises_the_favourite_legal_move_over_the_rest():
    model = tiny_random_model(2)
    batch = legal_batch(turns())

    def probs():
        with torch.no_grad():
            return [[math.exp(float(score(model, [p], [a])[0].sum())) for a in legal] for p, legal in zip(PROMPTS, LEGAL)]

    before = probs()
    objective = build_objective({"name": "legal_mass", "greedy_weight": 10.0, "greedy_margin": 3.0})[0]
    objective(model(batch.input_ids, attention_mask=batch.attention_mask), batch).loss.backward()
    with torch.no_grad():
        for param in model.parameters():
            param -= 0.02 * param.grad
    after = probs()
    for b, a in zip(before, after):
        top = max(range(len(b)), key=b.__getitem__)
        # the favourite gains against everything that is not a legal move: p(best) / (1 - M) rises
        assert a[top] / (1 - sum(a)) > b[top] / (1 - sum(b))
