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
