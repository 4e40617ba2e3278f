"""One eval config class for `selfplay.eval` and the root `evaluation`: each section's options
are read where declared, and an option the section ignores is refused with a one-line error."""

from __future__ import annotations

import pytest

from stlm_selfplay.before_after import action_mode, evaluation_games
from stlm_selfplay.config import load_config
from stlm_selfplay.errors import UserError
from stlm_selfplay.selfplay.config import EvalConfig, check_selfplay, evaluation_defaults


def test_both_sections_are_one_class_with_their_own_defaults():
    cfg = load_config(None)
    assert type(cfg.evaluation) is type(cfg.selfplay.eval) is EvalConfig
    assert cfg.evaluation == evaluation_defaults() and cfg.selfplay.eval == EvalConfig()
    assert (cfg.evaluation.episodes, cfg.evaluation.sample_games) == (400, 1)
    assert (cfg.selfplay.eval.episodes, cfg.selfplay.eval.sample_games) == (50, 0)


def test_evaluation_games_and_mode_are_read_by_the_before_after_evaluation():
    base = ["stages=[pretrain,selfplay]", "selfplay.stages=[{games: {tictactoe: 1.0}, opponents: {self: 1.0}}]"]
    cfg = load_config(None, base)
    assert evaluation_games(cfg) == ["tictactoe"] and action_mode(cfg) == "constrained"
    cfg = load_config(None, base + ["evaluation.games=[kuhn_poker]", "evaluation.mode=free"])
    assert evaluation_games(cfg) == ["kuhn_poker"] and action_mode(cfg) == "free"


@pytest.mark.parametrize("override, message", [
    ("evaluation.every=5", "config key 'evaluation.every' is not read there (only selfplay.eval reads it)"),
    ("evaluation.ratings=false", "config key 'evaluation.ratings' is not read there"),
    ("evaluation.mode=fre", "config key 'evaluation.mode' must be one of constrained, free or empty"),
])
def test_an_option_the_evaluation_section_ignores_is_refused(override, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, [override])


def test_an_option_selfplay_eval_ignores_is_refused():
    cfg = load_config(None, ["selfplay.eval.sample_games=2"])
    with pytest.raises(UserError, match="'selfplay.eval.sample_games' is not read there"):
        check_selfplay(cfg.selfplay)
