"""gymnasium ids pass check_env and play games against scripted opponents."""

from __future__ import annotations

import warnings

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import stlm_selfplay.envs  # noqa: F401  (registers the gymnasium ids)
from stlm_selfplay.envs.gym_env import GYM_IDS

IDS = [f"stlm_selfplay/{v}" for v in GYM_IDS.values()]


def test_every_game_has_a_registered_id():
    assert sorted(GYM_IDS) == stlm_selfplay.envs.list_games()
    assert all(env_id in gymnasium.registry for env_id in IDS)


@pytest.mark.parametrize("env_id", IDS)
def test_check_env_passes(env_id):
    env = gymnasium.make(env_id, opponent="random", seat=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gymnasium reports API problems as warnings
        check_env(env.unwrapped)


def test_gym_episode_against_minimax():
    env = gymnasium.make("stlm_selfplay/TicTacToe-v0", opponent="minimax", seat=0)
    obs, _ = env.reset(seed=0)
    assert obs == "ttt x ...|...|... ?012345678>"
    total, done = 0.0, False
    while not done:
        legal = obs.split("?")[1].rstrip(">")
        obs, reward, done, truncated, info = env.step(f"[{legal[0]}]")
        total += reward
        assert info["legal"] and not truncated
    assert total <= 0.0 and obs.startswith("ttt end")  # nobody beats minimax
    obs, _ = env.reset(seed=1)
    obs, reward, done, _, info = env.step(b"\xff not a move")
    assert done and reward == -1.0 and info["rule"] == "lose"


def test_gym_seat_one_sees_the_opponent_move_first():
    env = gymnasium.make("stlm_selfplay/ConnectFour-v0", opponent="heuristic", seat=1, style="verbose")
    obs, _ = env.reset(seed=3)
    assert obs.endswith("Your move: ") and obs.count("x") >= 1
