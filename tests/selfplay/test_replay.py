"""Symmetry images of search targets and the replay buffer (selfplay/replay.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_search import _rows, search_overrides

from stlm_selfplay.envs import make
from stlm_selfplay.errors import UserError
from stlm_selfplay.selfplay.policies import Decision
from stlm_selfplay.selfplay.replay import ReplayBuffer, with_images
from stlm_selfplay.selfplay.rollout import Turn
from stlm_selfplay.selfplay.search import image_decisions
from stlm_selfplay.selfplay.update import minibatch_plan, training_plan

torch.set_num_threads(1)


def _turn(i: int, images: list | None = None) -> Turn:
    cands = [b"[0]", b"[1]", b"[2]"]
    d = Decision(text=cands[i % 3], prompt=b"p%d" % i, candidates=cands, chosen=i % 3,
                 search_probs=[0.5, 0.25, 0.25], images=images)
    return Turn(game="tictactoe", episode=i, seat=i % 2, policy="learner", decision=d, payoff=1.0)


def test_image_decisions_carry_the_visit_target_to_the_mapped_moves():
    game = make("tictactoe")
    game.reset(seed=0)
    game.step("4")  # o to move; legal: every cell but the centre
    actions = game.legal_actions()
    target = [0.3, 0.0, 0.1, 0.05, 0.05, 0.2, 0.0, 0.3]  # cells 0 1 2 3 5 6 7 8
    d = Decision(text=b"[1]", candidates=[b"[%s]" % a.encode() for a in actions], chosen=1, search_probs=target)
    images = image_decisions(game, actions, d)
    assert len(images) == 7
    rot90 = images[0]  # cell 0 -> 2, 1 -> 5, 2 -> 8, 3 -> 1, 5 -> 7, 6 -> 0, 7 -> 3, 8 -> 6
    assert rot90.prompt.startswith(b"ttt") and b"....x...." not in rot90.prompt
    share = dict(zip(rot90.candidates, rot90.search_probs))
    assert share == {b"[2]": 0.3, b"[5]": 0.0, b"[8]": 0.1, b"[1]": 0.05, b"[7]": 0.05, b"[0]": 0.2, b"[3]": 0.0,
                     b"[6]": 0.3}
    assert rot90.candidates[rot90.chosen] == b"[5]" == rot90.text  # the played cell 1, rotated
    assert all(abs(sum(i.search_probs) - 1.0) < 1e-12 for i in images)


def test_with_images_appends_each_image_after_the_turns_and_points_back_to_its_source():
    image = Decision(text=b"[9]", prompt=b"image", candidates=[b"[9]"], chosen=0, search_probs=[1.0])
    turns = [_turn(0, [image, image]), _turn(1), _turn(2, [image])]
    out, source = with_images(turns)
    assert out[:3] == turns and [t.decision.prompt for t in out[3:]] == [b"image"] * 3
    assert source.tolist() == [0, 1, 2, 0, 0, 2]
    assert all(out[k].seat == turns[s].seat and out[k].payoff == turns[s].payoff for k, s in enumerate(source))


def test_the_replay_buffer_keeps_the_newest_turns_and_round_trips_exactly():
    buffer = ReplayBuffer(capacity=5)
    buffer.add([_turn(i) for i in range(3)])
    buffer.add([_turn(i) for i in range(3, 7)])
    assert [t.decision.prompt for t in buffer.turns] == [b"p2", b"p3", b"p4", b"p5", b"p6"]
    again = ReplayBuffer(capacity=5)
    again.load_state_dict(torch.load(_saved(buffer.state_dict()), weights_only=True))
    assert again.turns == buffer.turns
    a = buffer.plan(4, 3, torch.Generator().manual_seed(0))
    b = again.plan(4, 3, torch.Generator().manual_seed(0))
    assert len(a) == 4 and all(len(m) == 3 and m.max() < 5 for m in a) and all(np.array_equal(x, y) for x, y in zip(a, b))


def _saved(obj):
    import io

    out = io.BytesIO()
    torch.save(obj, out)
    out.seek(0)
    return out


def _sp(symmetries: bool, capacity: int = 0):
    from stlm_selfplay.selfplay.config import SelfPlayConfig

    sp = SelfPlayConfig(ppo_epochs=2, minibatches=2)
    sp.search.symmetries = symmetries
    sp.replay.capacity, sp.replay.batch_turns, sp.replay.steps_per_update = capacity, 4, 3
    return sp


def test_the_training_plan_without_replay_is_the_shuffled_epochs_and_images_share_their_source_advantage():
    image = Decision(text=b"[9]", prompt=b"image", candidates=[b"[9]"], chosen=0, search_probs=[1.0])
    turns = [_turn(0, [image]), _turn(1, [image]), _turn(2, [image])]
    adv, keep = np.array([0.5, -1.0, 2.0]), np.array([True, False, True])
    plain = training_plan(_sp(False), turns, adv, keep, None, None, torch.Generator().manual_seed(3))
    assert plain[0] == turns and all(np.array_equal(x, y) for x, y in zip(
        plain[3], minibatch_plan(np.array([0, 2]), 2, 2, torch.Generator().manual_seed(3))))
    out, out_adv, returns, plan = training_plan(_sp(True), turns, adv, keep, np.array([1.0, 0.0, -1.0]), None,
                                                torch.Generator().manual_seed(3))
    assert len(out) == 6 and out_adv.tolist() == [0.5, -1.0, 2.0, 0.5, -1.0, 2.0]
    assert returns.tolist() == [1.0, 0.0, -1.0, 1.0, 0.0, -1.0]
    assert sorted(np.concatenate(plan[:2]).tolist()) == [0, 2, 3, 5]  # kept turns and their images, one epoch


def test_the_training_plan_with_replay_draws_steps_from_the_buffer_of_kept_turns():
    buffer = ReplayBuffer(capacity=10)
    turns = [_turn(i) for i in range(4)]
    out, adv, returns, plan = training_plan(_sp(False, capacity=10), turns, np.ones(4), np.array([1, 1, 0, 1], bool),
                                            None, buffer, torch.Generator().manual_seed(0))
    assert [t.decision.prompt for t in out] == [b"p0", b"p1", b"p3"] and returns is None and not adv.any()
    assert len(plan) == 3 and all(len(m) == 4 for m in plan)


@pytest.mark.parametrize("overrides, message", [
    (dict(objectives="[{name: reinforce}]", search="{simulations: 0}", replay="{capacity: 8}"), "on-policy"),
    (dict(objectives="[{name: search_policy}, {name: value}]", replay="{capacity: 8}"), "does not keep the value"),
    (dict(objectives="[{name: search_policy}]", replay="{capacity: 8, batch_turns: 0}"), "batch_turns >= 1"),
    (dict(objectives="[{name: reinforce}]", search="{simulations: 0, symmetries: true}"), "set selfplay.search.sim"),
])
def test_replay_and_symmetry_misconfigurations_are_one_line_user_errors(tmp_path, overrides, message):
    from stlm_selfplay.config import load_config
    from stlm_selfplay.selfplay.config import check_selfplay

    cfg = load_config(None, search_overrides(tmp_path, "bad", **overrides))
    with pytest.raises(UserError, match=message) as info:
        check_selfplay(cfg.selfplay)
    assert "\n" not in str(info.value)


def test_selfplay_with_replay_and_symmetries_trains_on_buffer_draws_and_resumes_exactly(tmp_path, monkeypatch):
    from stlm_selfplay.config import load_config
    from stlm_selfplay.runs import latest_checkpoint, load_model
    from stlm_selfplay.selfplay import update as U
    from stlm_selfplay.selfplay.loop import selfplay

    seen = []
    original = U.turns_to_batch

    def recording(*args, **kwargs):
        batch = original(*args, **kwargs)
        seen.append(int(batch.extras["groups"].max()) + 1)
        return batch

    options = dict(updates=3, objectives="[{name: search_policy}]", replay="{capacity: 300, batch_turns: 6, steps_per_update: 2}",
                   search="{simulations: 4, playouts: 1, symmetries: true}")
    monkeypatch.setattr(U, "turns_to_batch", recording)
    selfplay(load_config(None, search_overrides(tmp_path, "whole", **options)))
    assert seen == [6] * 6  # 3 updates x 2 steps of 6 buffer draws
    whole = _rows(tmp_path / "whole" / "metrics.jsonl")
    played = np.cumsum([8 * r["turns"] for r in whole])  # every learner turn and its 7 images
    assert [r["replay_turns"] for r in whole] == np.minimum(played, 300).tolist() and played[-1] > 300

    cfg = load_config(None, search_overrides(tmp_path, "split", **options))
    selfplay(cfg, max_updates=2)
    selfplay(cfg)
    assert _rows(tmp_path / "split" / "metrics.jsonl") == whole
    a, b = (load_model(latest_checkpoint(tmp_path / n)).state_dict() for n in ("whole", "split"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_replay_recipe_loads_and_passes_the_checks():
    """configs/selfplay/tictactoe-replay.yaml (the recipe that meets issue 13's tic-tac-toe floors,
    benchmarks/RESULTS.md): a fixed uniform-prior teacher, symmetries, replay, a cosine lr."""
    from stlm_selfplay.config import load_config
    from stlm_selfplay.selfplay.config import check_selfplay, steps_per_update

    cfg = load_config(str(Path(__file__).resolve().parents[2] / "configs/selfplay/tictactoe-replay.yaml"))
    sp = cfg.selfplay
    assert sp.search.prior == "uniform" and sp.search.simulations == 256 and sp.search.symmetries
    assert sp.replay.capacity == 30000 and steps_per_update(sp) == 32 and sp.lr_schedule == "cosine"
    assert sp.updates * sp.games_per_update == 6400
    check_selfplay(sp, value_head=False)
