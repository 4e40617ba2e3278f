"""`stlm eval --search N`: the model's moves chosen by PUCT around it (selfplay/search.py)."""

from __future__ import annotations

import torch
from conftest import make_tiny_model

from stlm_selfplay.cli import main
from stlm_selfplay.selfplay.config import EvalConfig
from stlm_selfplay.selfplay.evaluate import evaluate
from stlm_selfplay.selfplay.search import SearchConfig, SearchPolicy

torch.set_num_threads(1)


def _loss_rate(evaluation, bot: str) -> float:
    return evaluation.metrics[f"tictactoe/{bot}/loss_rate"]


def test_search_around_an_untrained_model_plays_far_better_than_the_model_alone():
    model = make_tiny_model(seed=0).eval()
    spec = EvalConfig(bots=["random", "minimax"], episodes=8, temperature=0.0, sample_games=0)
    alone = evaluate(model, ["tictactoe"], spec, seed=0, exact=False)
    searched = evaluate(model, ["tictactoe"], spec, seed=0, exact=False, player=SearchPolicy(
        model, SearchConfig(simulations=128, dirichlet_epsilon=0.0, temperature=0.0, temperature_moves=0, playouts=4)))
    # the same 16 seeded games per bot: the bare random-init policy loses most games to minimax and
    # many to random play; 128 simulations with play-out values win or draw nearly all of them
    assert _loss_rate(alone, "minimax") > 0.5 and _loss_rate(searched, "minimax") <= 0.25
    assert _loss_rate(searched, "random") < _loss_rate(alone, "random") and _loss_rate(searched, "random") <= 0.1
    assert searched.metrics["tictactoe/random/win_rate"] >= 0.75


def test_stlm_eval_search_prints_the_search_and_refuses_games_it_cannot_search(tmp_path, capsys):
    make_tiny_model(seed=0).save_pretrained(tmp_path / "model")
    argv = ["eval", str(tmp_path / "model"), "--game", "tictactoe", "--opponent", "random", "--episodes", "2"]
    assert main(argv + ["--search", "8"]) == 0
    assert "search 8 simulations" in capsys.readouterr().out
    for extra, message in ((["--search", "8", "--game", "kuhn_poker"], "perfect information"),
                           (["--search", "8", "--mode", "free"], "--mode constrained"),
                           (["--search", "-1"], "--search must be >= 0")):
        assert main(argv + extra) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
