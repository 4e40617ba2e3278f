"""Batched PUCT search (selfplay/search.py), the `search_policy` objective and search self-play."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from stlm_selfplay.envs.evaluation import tictactoe_positions
from stlm_selfplay.envs.tictactoe import solve
from stlm_selfplay.errors import UserError
from stlm_selfplay.objectives import build_objective
from stlm_selfplay.objectives.base import Batch
from stlm_selfplay.selfplay.policies import Decision, RolloutRandom
from stlm_selfplay.selfplay.search import (SearchConfig, SearchPolicy, pick, random_evaluator, search, uniform_priors,
                                           visit_distribution)

torch.set_num_threads(1)
NO_NOISE = dict(dirichlet_epsilon=0.0)


def oracle(games, gen):
    """Uniform priors and the exact minimax value for the player to move."""
    return uniform_priors(games), [float(solve("".join(g.board))[0]) for g in games]


def test_puct_with_a_perfect_value_oracle_plays_only_optimal_moves_in_all_4520_positions():
    positions = tictactoe_positions()
    roots = search([p.game for p in positions], oracle, SearchConfig(simulations=16, **NO_NOISE), RolloutRandom(0))
    assert len(roots) == 4520
    wrong = [p.game.board for p, r in zip(positions, roots) if r.actions[pick(r, 0.0, None)] not in p.optimal]
    assert wrong == []
    assert all(sum(r.visits) == 16 for r in roots)  # every simulation adds one root visit


def immediate_wins(game) -> list[str]:
    out = []
    for action in game.legal_actions():
        child = game.clone()
        mover = child.current_player
        child.step(action)
        if child.done and child.rewards[mover] > 0:
            out.append(action)
    return out


def test_puct_with_uniform_priors_and_random_playouts_finds_every_mate_in_one():
    mates = [(p.game, w) for p in tictactoe_positions() if (w := immediate_wins(p.game))]
    assert len(mates) > 2000
    roots = search([g for g, _ in mates], random_evaluator(2), SearchConfig(simulations=32, **NO_NOISE),
                   RolloutRandom(1))
    missed = [g.board for (g, wins), r in zip(mates, roots) if r.actions[pick(r, 0.0, None)] not in wins]
    assert missed == []


class Chain:
    """A fake two-player game: `depth` plies of "l" or "r", the players alternating, a draw at the end."""

    num_players = 2
    deal = None

    def __init__(self, depth: int = 3):
        self.depth, self.turn, self.history = depth, 0, []

    @property
    def done(self):
        return self.turn >= self.depth

    @property
    def current_player(self):
        return self.turn % 2

    @property
    def rewards(self):
        return (0.0, 0.0)

    def legal_actions(self, player=None):
        return [] if self.done else ["l", "r"]

    def step(self, action):
        self.history, self.turn = self.history + [action], self.turn + 1

    def clone(self):
        new = Chain(self.depth)
        new.turn, new.history = self.turn, list(self.history)
        return new


def chain_evaluator(games, gen):
    """Root priors (0.75, 0.25), else (0.5, 0.5); V = +0.5 for the player to move everywhere."""
    return [[0.75, 0.25] if g.turn == 0 else [0.5, 0.5] for g in games], [0.5] * len(games)


def test_puct_visits_and_values_equal_a_hand_computation():
    (root,) = search([Chain()], chain_evaluator, SearchConfig(simulations=3, c_puct=1.0, **NO_NOISE), RolloutRandom(0))
    # sim 1: N(s)=0 (read as 1): U = 0.75, 0.25 -> l; its leaf is worth +0.5 to player 1: W(l) = -0.5
    # sim 2: Q+U = -0.5 + 0.75/2 = -0.125 against 0 + 0.25 = 0.25 -> r; W(r) = -0.5
    # sim 3: sqrt 2: -0.5 + 0.75*1.414/2 = 0.030 against -0.5 + 0.25*1.414/2 = -0.323 -> l, then in
    #        l's node (player 1, N = 0, priors 0.5/0.5, first on ties) l; leaf worth +0.5 to player 0
    assert root.visits == [2, 1] and root.total == pytest.approx([0.0, -0.5])
    assert root.children[0].visits == [1, 0] and root.children[0].total == pytest.approx([-0.5, 0.0])
    assert visit_distribution(root) == pytest.approx([2 / 3, 1 / 3])
    assert visit_distribution(root, 0.5) == pytest.approx([4 / 5, 1 / 5])  # N^2 / sum N^2 = 4/5, 1/5
    assert pick(root, 0.0, None) == 0


def test_root_noise_and_visit_sampling_use_only_the_rollout_generator():
    cfg = SearchConfig(simulations=8, dirichlet_epsilon=0.5, temperature_moves=9)
    policy = SearchPolicy(None, cfg, evaluator=random_evaluator(1))
    game = tictactoe_positions()[0].game

    def run(seed):
        gen = RolloutRandom(seed)
        return [(d.chosen, d.search_probs) for d in policy.act([game, game.clone()], [0, 0], gen)], gen.py.getstate()

    first, state = run(3)
    assert run(3) == (first, state)  # same generator state, same search, same generator afterwards
    assert any(run(seed)[0] != first for seed in range(4, 12))  # the noise and draws come from it
    assert all(math.isclose(sum(p), 1.0) for _, p in first) and game.turn == 0  # roots never stepped


def search_batch(scores: list[list[float]], targets: list[list[float]]):
    """A constrained batch whose candidate row b has summed log-prob scores[turn][k]: each row is one
    prompt byte and one action byte, logits chosen so log p(action byte) = the score."""
    rows = [(s, p) for turn_s, turn_p in zip(scores, targets) for s, p in zip(turn_s, turn_p)]
    n = len(rows)
    ids = torch.tensor([[65, 66]] * n)
    logits = torch.full((n, 2, 256), -1e4)
    for b, (s, _) in enumerate(rows):  # two live bytes: p(66) = e^s, p(67) = 1 - e^s
        logits[b, 0, 66], logits[b, 0, 67] = s, math.log1p(-math.exp(s))
    groups = torch.tensor([i for i, t in enumerate(scores) for _ in t])
    extras = {"groups": groups, "search_probs": torch.tensor([p for _, p in rows]), "temperature": 1.0,
              "chosen": torch.tensor([k == 0 for t in scores for k in range(len(t))])}
    loss_mask = torch.tensor([[0.0, 1.0]] * n)
    return type("Out", (), {"logits": logits})(), Batch(ids, attention_mask=torch.ones(n, 2, dtype=torch.long),
                                                        loss_mask=loss_mask, extras=extras)


def test_search_policy_loss_equals_a_hand_value():
    # turn 0: scores log(0.5), log(0.25) -> pi = (2/3, 1/3), target (0.5, 0.5):
    #   CE = -(0.5 log 2/3 + 0.5 log 1/3) = 0.752039;  H(target) = log 2
    # turn 1: scores log(0.1) x 3 -> pi uniform 1/3, target (1, 0, 0): CE = log 3 = 1.098612, H = 0
    output, batch = search_batch([[math.log(0.5), math.log(0.25)], [math.log(0.1)] * 3], [[0.5, 0.5], [1.0, 0.0, 0.0]])
    objective, _ = build_objective({"name": "search_policy"})
    out = objective(output, batch)
    ce0, ce1 = -(0.5 * math.log(2 / 3) + 0.5 * math.log(1 / 3)), math.log(3)
    assert out.loss.item() == pytest.approx((ce0 + ce1) / 2, abs=1e-5)
    assert out.metrics["target_entropy"] == pytest.approx(math.log(2) / 2, abs=1e-6)
    assert out.metrics["kl"] == pytest.approx((ce0 - math.log(2) + ce1) / 2, abs=1e-5)
    with pytest.raises(UserError, match="selfplay.search.simulations"):
        del batch.extras["search_probs"]
        objective(output, batch)


def test_turns_to_batch_carries_the_visit_targets_row_by_row():
    from stlm_selfplay.selfplay.batch import turns_to_batch
    from stlm_selfplay.selfplay.rollout import Turn

    decisions = [Decision(b"[0]", b"p", -0.5, [b"[0]", b"[1]"], 0, search_probs=[0.25, 0.75]),
                 Decision(b"[2]", b"q", -1.0, [b"[1]", b"[2]", b"[3]"], 1, search_probs=[0.0, 1.0, 0.0])]
    batch = turns_to_batch([Turn("tictactoe", 0, 0, "learner", d) for d in decisions], torch.zeros(2))
    assert batch.extras["search_probs"].tolist() == [0.25, 0.75, 0.0, 1.0, 0.0]
    assert batch.extras["groups"].tolist() == [0, 0, 1, 1, 1]


# ----------------------------------------------------------------------------- self-play wiring


def search_overrides(tmp_path, name: str, **selfplay):
    from _pretrain_helpers import TINY_MODEL
    from _selfplay_fixtures import selfplay_overrides

    values = dict(updates=2, games_per_update=4, eval__episodes=1, eval__games="[tictactoe]",
                  stages="[{games: {tictactoe: 1.0}, opponents: {self: 0.5, random: 0.5}}]",
                  search="{simulations: 4, playouts: 1}",
                  objectives="[{name: search_policy}, {name: value, weight: 1.0}]")
    values.update(selfplay)
    return TINY_MODEL + ["model.overrides.value_head=true", "run.checkpoint_every=1"] + selfplay_overrides(
        "", tmp_path, name, **values)


TIMING = ("games_per_s", "rollout_s", "update_s", "update_cpu_s", "eval_s", "time", "wall_time", "elapsed")


def _rows(path):
    from stlm_selfplay.train.metrics import read_metrics

    return [{k: v for k, v in row.items() if k not in TIMING} for row in read_metrics(path, "train")]


def test_selfplay_with_search_trains_on_visit_targets_and_resumes_exactly(tmp_path, monkeypatch):
    from stlm_selfplay.config import load_config
    from stlm_selfplay.runs import latest_checkpoint, load_model
    from stlm_selfplay.selfplay import update as U
    from stlm_selfplay.selfplay.loop import selfplay

    seen = []
    original = U.turns_to_batch

    def recording(*args, **kwargs):
        batch = original(*args, **kwargs)
        seen.append(batch.extras)
        return batch

    monkeypatch.setattr(U, "turns_to_batch", recording)
    selfplay(load_config(None, search_overrides(tmp_path, "whole")))
    assert len(seen) == 2
    for extras in seen:
        sums = torch.zeros(int(extras["groups"].max()) + 1).index_add(0, extras["groups"], extras["search_probs"])
        assert torch.allclose(sums, torch.ones_like(sums), atol=1e-6)
        assert not bool((extras["search_probs"] == 1.0).all())  # 4 simulations over 2+ moves: spread targets
    whole = _rows(tmp_path / "whole" / "metrics.jsonl")
    assert len(whole) == 2 and all(np.isfinite(r["search_policy/loss"]) and r["search_policy/loss"] > 0 for r in whole)
    assert all(np.isfinite(r["value/loss"]) for r in whole)

    cfg = load_config(None, search_overrides(tmp_path, "split"))
    selfplay(cfg, max_updates=1)
    selfplay(cfg)
    assert _rows(tmp_path / "split" / "metrics.jsonl") == whole
    a, b = (load_model(latest_checkpoint(tmp_path / n)).state_dict() for n in ("whole", "split"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("overrides, message", [
    (dict(stages="[{games: {tictactoe: 1.0}, opponents: {self: 1.0}, mode: free}]"), "needs constrained mode"),
    (dict(stages="[{games: {kuhn_poker: 1.0}, opponents: {self: 1.0}}]"), "perfect information"),
    (dict(objectives="[{name: reinforce}]"), "search_policy"),
    (dict(search="{simulations: 0}"), "search_policy"),
    (dict(search="{simulations: 4, c_puct: 0}"), "c_puct > 0"),
    (dict(search="{simulations: 4, prior: uniformm}"), "config key 'selfplay.search.prior' must be one of model, uniform, got 'uniformm'"),
    (dict(search="{simulations: 4, target_temperature: 0}"), "target_temperature must be > 0"),
])
def test_search_misconfigurations_are_one_line_user_errors(tmp_path, overrides, message):
    from stlm_selfplay.config import load_config
    from stlm_selfplay.selfplay.config import check_selfplay

    cfg = load_config(None, search_overrides(tmp_path, "bad", **overrides))
    with pytest.raises(UserError, match=message) as info:
        check_selfplay(cfg.selfplay)
    assert "\n" not in str(info.value)


def test_model_evaluator_priors_are_the_policy_and_values_the_head_or_playouts():
    from _selfplay_fixtures import tiny_random_model

    from stlm_selfplay.model.value_head import ValueHead, state_values
    from stlm_selfplay.selfplay.batch import prompt_batch
    from stlm_selfplay.selfplay.policies import ModelPolicy
    from stlm_selfplay.selfplay.rollout import Turn
    from stlm_selfplay.selfplay.search import ModelEvaluator, random_playout_values

    games = [p.game for p in tictactoe_positions()[:40:7]]
    model = tiny_random_model(5)
    decisions = ModelPolicy(model).act(games, [g.current_player for g in games], RolloutRandom(0))
    priors, values = ModelEvaluator(model, playouts=3)(games, RolloutRandom(9))
    for d, prior in zip(decisions, priors):
        assert prior == pytest.approx(d.probs, abs=1e-9)
    assert values == random_playout_values(games, 3, RolloutRandom(9).py)  # same generator, same play-outs

    head = tiny_random_model(5)
    head.value_head = ValueHead(32)  # a head with non-zero weights on the same trunk
    with torch.no_grad():
        head.value_head.bias.fill_(0.3)
        head.value_head.weight.normal_(generator=torch.Generator().manual_seed(1))
    _, values = ModelEvaluator(head)(games, RolloutRandom(0))
    ids, attn = prompt_batch([Turn("tictactoe", 0, 0, "learner", d) for d in decisions])
    with torch.no_grad():
        assert values == pytest.approx(state_values(head, ids, attn).tolist(), abs=1e-6)


def test_uniform_prior_searches_without_the_model_and_reports_the_model_policy():
    """prior: uniform = the same tree as `random_evaluator` from the same generator state; the
    Decision's probs / logprob stay the model's own constrained policy at the root."""
    from _selfplay_fixtures import tiny_random_model

    from stlm_selfplay.selfplay.policies import ModelPolicy

    games = [p.game for p in tictactoe_positions()[3:400:37]]
    model = tiny_random_model(5)
    cfg = SearchConfig(simulations=12, dirichlet_epsilon=0.25, temperature_moves=9, playouts=2, prior="uniform")
    got = SearchPolicy(model, cfg).act(games, [g.current_player for g in games], RolloutRandom(4))
    want = SearchPolicy(None, replace(cfg, prior="model"), evaluator=random_evaluator(2)).act(games, [0] * len(games), RolloutRandom(4))
    own = ModelPolicy(model).act(games, [g.current_player for g in games], RolloutRandom(0))
    for g, w, o in zip(got, want, own):
        assert (g.chosen, g.search_probs) == (w.chosen, w.search_probs)
        assert g.probs == pytest.approx(o.probs, abs=1e-9)
        assert g.logprob == pytest.approx(math.log(o.probs[g.chosen]), abs=1e-9)
    assert any(g.search_probs != pytest.approx(g.probs, abs=0.05) for g in got)  # the model did not steer it


def test_the_search_recipe_loads_and_passes_the_checks():
    from pathlib import Path

    from stlm_selfplay.config import load_config
    from stlm_selfplay.selfplay.config import check_selfplay

    cfg = load_config(str(Path(__file__).resolve().parents[2] / "configs/selfplay/tictactoe-search.yaml"))
    assert cfg.selfplay.search.simulations == 32 and cfg.selfplay.objectives[0]["name"] == "search_policy"
    check_selfplay(cfg.selfplay, value_head=True)
    with pytest.raises(UserError, match="value_head: true"):
        check_selfplay(cfg.selfplay, value_head=False)


def test_the_distill_recipe_loads_and_passes_the_checks():
    from pathlib import Path

    from stlm_selfplay.config import load_config
    from stlm_selfplay.selfplay.config import check_selfplay

    cfg = load_config(str(Path(__file__).resolve().parents[2] / "configs/selfplay/tictactoe-distill.yaml"))
    sp = cfg.selfplay
    assert sp.search.simulations == 64 and sp.search.prior == "model" and sp.ppo_epochs * sp.minibatches == 16
    assert [o["name"] for o in sp.objectives] == ["search_policy"]
    check_selfplay(sp, value_head=False)  # no value head: play-outs score the leaves
