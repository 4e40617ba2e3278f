"""Advantage estimators against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stlm_selfplay.errors import UserError
from stlm_selfplay.selfplay.advantages import Turns, build_estimator, finalize, shaped_reward


def _turns(rows, group=None):
    """rows: (game, episode, role, reward)."""
    game, episode, role, reward = zip(*rows)
    return Turns(
        reward=np.array(reward, dtype=float), game=list(game), role=np.array(role), episode=np.array(episode),
        group=None if group is None else np.array(group),
    )


def test_shaped_reward_subtracts_the_illegal_penalty_per_turn():
    np.testing.assert_allclose(shaped_reward([1, 1, -1], [False, True, True], 0.5), [1.0, 0.5, -1.5])


def test_rae_reads_baseline_before_update_per_game_and_role():
    rae = build_estimator("rae", {"decay": 0.5})
    reward = shaped_reward([1, -1, 1, 1, -1, 2], [False, False, True, False, False, False], 0.5)
    batch1 = _turns([
        ("ttt", 0, 0, reward[0]),  # episode 0, role 0: turns r = 1, 0.5 (illegal) -> R = 0.75
        ("ttt", 0, 1, reward[1]),  # episode 0, role 1: R = -1
        ("ttt", 0, 0, reward[2]),
        ("ttt", 1, 1, reward[3]),  # episode 1, role 1: R = 1
        ("ttt", 1, 0, reward[4]),  # episode 1, role 0: R = -1
        ("kuhn", 2, 0, reward[5]),  # another game: its own baseline
    ])
    # ttt/0: reads 0 -> A = 1, 0.5; b = 0.5*0 + 0.5*0.75 = 0.375; reads 0.375 -> A = -1.375; b = -0.3125
    # ttt/1: reads 0 -> A = -1; b = -0.5; reads -0.5 -> A = 1.5; b = 0.25
    # kuhn/0: reads 0 -> A = 2; b = 1
    np.testing.assert_allclose(rae(batch1), [1.0, -1.0, 0.5, 1.5, -1.375, 2.0])
    state = rae.state_dict()
    assert state == {"baselines": [["kuhn", 0, 1.0], ["ttt", 0, -0.3125], ["ttt", 1, 0.25]]}
    batch2 = _turns([("ttt", 3, 0, 1.0), ("ttt", 3, 1, -1.0)])
    resumed = build_estimator("rae", {"decay": 0.5})
    resumed.load_state_dict(state)
    np.testing.assert_allclose(resumed(batch2), [1.3125, -1.25])
    np.testing.assert_allclose(rae(batch2), [1.3125, -1.25])


def test_rae_default_decay_is_095():
    rae = build_estimator("rae")
    adv = [rae(_turns([("g", e, 0, 1.0)]))[0] for e in range(3)]
    np.testing.assert_allclose(adv, [1.0, 0.95, 0.9025])  # b: 0 -> 0.05 -> 0.0975


def test_rloo_leaves_one_out_within_seed_group_and_role():
    rows = [
        ("ttt", 0, 0, 1.0), ("ttt", 0, 1, -1.0),
        ("ttt", 1, 0, 0.0), ("ttt", 1, 1, 0.0),
        ("ttt", 2, 0, -1.0), ("ttt", 2, 0, -0.5), ("ttt", 2, 1, 1.0),  # role 0 of episode 2: R = -0.75
        ("ttt", 3, 0, 1.0),  # alone in its seed group
    ]
    adv = build_estimator("rloo")(_turns(rows, group=[7, 7, 7, 7, 7, 7, 7, 8]))
    # role 0: R = 1, 0, -0.75 -> b = -0.375, 0.125, 0.5 ; role 1: R = -1, 0, 1 -> b = 0.5, 0, -0.5
    np.testing.assert_allclose(adv, [1.375, -1.5, -0.125, 0.0, -1.5, -1.0, 1.5, 0.0])


def test_group_baseline_mean_and_bessel_std():
    rows = [("ttt", 0, 0, 1.0), ("ttt", 1, 0, 1.0), ("ttt", 2, 0, 0.0), ("ttt", 3, 0, 5.0)]
    turns = _turns(rows, group=[0, 0, 0, 1])
    std = math.sqrt(((1 / 3) ** 2 * 2 + (2 / 3) ** 2) / 2)
    expected = np.array([1 / 3, 1 / 3, -2 / 3, 0.0])
    np.testing.assert_allclose(build_estimator("group")(turns), expected / np.array([std + 1e-4] * 3 + [1e-4]))
    np.testing.assert_allclose(build_estimator("group", {"scale_std": False})(turns), expected, atol=1e-12)
    np.testing.assert_allclose(build_estimator("none")(turns), [1.0, 1.0, 0.0, 5.0])


def test_finalize_drops_zero_advantages_then_normalizes_the_rest():
    adv, keep = finalize(np.array([0.0, 2.0, -2.0, 0.0, 1.0]), normalize=True, drop_zero=True)
    assert keep.tolist() == [False, True, True, False, True]
    std = math.sqrt((25 + 49 + 4) / 27)  # deviations 5/3, -7/3, 2/3 from the mean 1/3
    np.testing.assert_allclose(adv[keep], [5 / 3 / std, -7 / 3 / std, 2 / 3 / std], rtol=1e-6)
    adv, keep = finalize(np.array([0.0, 2.0]))
    assert keep.all() and adv.tolist() == [0.0, 2.0] and adv.dtype == np.float32


def test_estimator_errors():
    with pytest.raises(UserError, match="unknown advantage estimator 'ra' \\(did you mean 'rae'\\?\\)"):
        build_estimator("ra")
    with pytest.raises(UserError, match="has no option 'decy'.*did you mean 'decay'"):
        build_estimator("rae", {"decy": 0.9})
    with pytest.raises(UserError, match="has no option 'baselines'"):
        build_estimator("rae", {"baselines": {}})
    with pytest.raises(UserError, match="decay must be in"):
        build_estimator("rae", {"decay": 1.0})
    with pytest.raises(ValueError, match="needs Turns.group"):
        build_estimator("rloo")(_turns([("g", 0, 0, 1.0)]))
