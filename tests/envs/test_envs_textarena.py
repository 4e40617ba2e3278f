"""The TextArena adapter: TicTacToe-v0 and KuhnPoker-v0 offline, determinism, global RNGs untouched."""

from __future__ import annotations

import random

import numpy as np
import pytest

from stlm_selfplay.envs import make, make_player, play_game

textarena = pytest.importorskip("textarena", reason="textarena is not installed (pip install 'stlm-selfplay[textarena]')")


def _play(game_id: str, seed: int):
    game = make(f"textarena:{game_id}", seed=seed)
    bot = make_player("tictactoe", "random")  # uniform over the adapter's legal actions
    episode = play_game(game, [bot, bot], [random.Random(seed), random.Random(seed + 1)])
    return game, episode


@pytest.mark.parametrize("game_id", ["TicTacToe-v0", "KuhnPoker-v0"])
def test_textarena_games_play_to_the_end_deterministically(game_id):
    game, episode = _play(game_id, 5)
    assert game.done and sum(game.rewards) == 0 and game.outcome in {("win", "loss"), ("loss", "win"), ("draw", "draw")}
    assert all(m.result.legal for m in episode.moves)
    again, _ = _play(game_id, 5)
    assert again.history == game.history and again.rewards == game.rewards
    assert again.observation(0) == game.observation(0)


def test_textarena_tictactoe_text_legal_moves_and_invalid_moves():
    game = make("textarena:TicTacToe-v0", seed=0)
    assert game.legal_actions() == [str(i) for i in range(9)] and "Available Moves" in game.observation()
    assert game.step("I take [4]").legal and game.current_player == 1 and "4" not in game.legal_actions()
    first = game.step("[4]")  # occupied: TextArena gives one retry
    assert (first.legal, first.rule, first.done) == (False, "retry", False) and game.current_player == 1
    second = game.step(b"\xff")
    assert (second.rule, second.done, game.rewards) == ("lose", True, (1.0, -1.0))


def test_textarena_kuhn_lists_its_actions():
    game = make("textarena:KuhnPoker-v0", seed=1)
    assert game.legal_actions() == ["check", "bet"]
    game.step("bet")
    assert game.legal_actions() == ["fold", "call"]  # TextArena's order


def test_textarena_leaves_global_random_untouched():
    random.seed(2024)
    np.random.seed(7)
    before, before_np = random.getstate(), np.random.get_state()[1].copy()
    for game_id in ("TicTacToe-v0", "KuhnPoker-v0"):
        game, _ = _play(game_id, 11)
        game.clone().reset(3)
    assert random.getstate() == before and (np.random.get_state()[1] == before_np).all()
    # and the global state does not leak in: other draws between steps change nothing
    game_a, _ = _play("KuhnPoker-v0", 11)
    random.random()
    game_b, _ = _play("KuhnPoker-v0", 11)
    assert game_a.history == game_b.history and game_a.observation(1) == game_b.observation(1)


def test_textarena_reset_starts_a_clean_transcript():
    game, _ = _play("TicTacToe-v0", 2)
    game.reset(4)
    assert game.observation(0).count("You are Player 0 in Tic Tac Toe") == 1
    assert game.legal_actions() == [str(i) for i in range(9)] and game.history == [] and not game.done
