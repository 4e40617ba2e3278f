"""Game symmetries (`Game.symmetries`): images of a state are the same game, moves mapped."""

from __future__ import annotations

import random

from stlm_selfplay.envs import make
from stlm_selfplay.envs.evaluation import tictactoe_positions
from stlm_selfplay.envs.tictactoe import SYMMETRIES, solve


def test_the_eight_tictactoe_symmetries_are_distinct_permutations_that_form_a_group():
    maps = {tuple(range(9))} | set(SYMMETRIES)
    assert len(maps) == 8 and all(sorted(m) == list(range(9)) for m in maps)
    assert {tuple(b[a[i]] for i in range(9)) for a in maps for b in maps} == maps  # closed under composition
    assert (2, 5, 8, 1, 4, 7, 0, 3, 6) in maps  # rot90 by hand: the top-left corner goes to the top-right


def test_every_tictactoe_image_has_the_same_value_and_the_mapped_optimal_moves_in_all_positions():
    for position in tictactoe_positions():
        game = position.game
        value, best = solve("".join(game.board))
        images = game.symmetries()
        assert len(images) == 7
        for image, moved in images:
            assert image.current_player == game.current_player and image.turn == game.turn
            assert sorted(image.legal_actions()) == sorted(moved[a] for a in game.legal_actions())
            image_value, image_best = solve("".join(image.board))
            assert image_value == value
            assert sorted(image_best) == sorted(int(moved[str(c)]) for c in best)


def test_a_tictactoe_image_plays_on_like_the_original_and_leaves_it_unchanged():
    game = make("tictactoe")
    game.reset(seed=0)
    for action in ("4", "0", "8"):
        game.step(action)
    before = list(game.board)
    for image, moved in game.symmetries():
        original = game.clone()
        original.step("2")
        image.step(moved["2"])
        assert original.done == image.done and original.rewards == image.rewards  # o completes no line either way
    assert game.board == before and game.history == ["4", "0", "8"]


def test_the_connect_four_mirror_commutes_with_every_move_along_random_games():
    rng = random.Random(0)
    for _ in range(20):
        game = make("connect_four")
        game.reset(seed=0)
        while not game.done:
            [(image, moved)] = game.symmetries()
            assert image.board_text(0) == "|".join(row[::-1] for row in game.board_text(0).split("|"))
            action = rng.choice(game.legal_actions())
            image.step(moved[action])
            game.step(action)
            assert image.done == game.done and image.rewards == game.rewards
            assert image.board_text(0) == game.symmetries()[0][0].board_text(0)


def test_games_without_symmetries_declare_none():
    game = make("nim")
    game.reset(seed=0)
    assert game.symmetries() == []
