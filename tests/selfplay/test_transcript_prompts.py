"""Append-only `transcript` prompts (envs/formats.py) and the policy's prompt cache that carries each
game's trunk caches from one move to the next (model/prompt_cache.py, selfplay/policies.py)."""

from __future__ import annotations

import json
import random

import pytest
import torch

from _model_fixtures import small_config
from _pretrain_helpers import TINY_MODEL
from conftest import tiny_model_overrides
from _selfplay_fixtures import selfplay_overrides
from stlm_selfplay.config import load_config
from stlm_selfplay.envs import make, make_player
from stlm_selfplay.envs.formats import format_prompt, style_for
from stlm_selfplay.envs.players import play_game
from stlm_selfplay.errors import UserError
from stlm_selfplay.model import STLMForCausalLM
from stlm_selfplay.model.prompt_cache import PromptCache
from stlm_selfplay.selfplay.policies import ModelPolicy, RolloutRandom
from stlm_selfplay.selfplay.rollout import EpisodeSpec, play


@pytest.mark.parametrize("game_name", ["tictactoe", "connect_four", "nim"])
def test_a_transcript_prompt_is_the_compact_transcript_so_far(game_name):
    """Each move's transcript prompt is the compact pretraining transcript of the same game up to
    that move's line, and so begins with the previous move's prompt + action + newline."""
    game = make(game_name)
    game.reset(seed=3)
    players = [make_player(game_name, "random")] * 2
    record = play_game(game, players, [random.Random(1), random.Random(2)], style="compact")
    text = record.transcript("compact")
    replay, before = make(game_name), None
    replay.reset(seed=3)
    for move in record.moves:
        prompt = format_prompt(replay, style="transcript")
        assert text.startswith(prompt) and prompt.endswith(move.prompt)
        if before is not None:
            assert prompt.startswith(before)
        before = prompt + f"[{move.result.applied}]\n"
        replay.step(move.result.applied)


def test_games_with_private_information_keep_compact_prompts():
    game = make("kuhn_poker")
    game.reset(seed=0)
    with pytest.raises(UserError, match="private information") as err:
        format_prompt(game, style="transcript")
    assert "\n" not in str(err.value)
    assert style_for(game, "transcript") == "compact" and style_for(make("tictactoe"), "transcript") == "transcript"
    with pytest.raises(UserError, match="prompt style"):
        ModelPolicy(STLMForCausalLM(small_config()), style="transcrpt")


def _rollout(model, cache: PromptCache, mode: str):
    # an illegal move is replaced by a random legal one, so the untrained model's games go on
    specs = [EpisodeSpec("tictactoe", seed=s, seats=["learner", "learner"], options={"illegal": "random"})
             for s in range(12)]
    policy = ModelPolicy(model, mode=mode, style="transcript", prompt_cache=cache)
    return play(specs, {"learner": policy}, RolloutRandom(0))


@pytest.mark.parametrize("mode", ["constrained", "free"])
def test_rollouts_with_the_carried_cache_equal_rollouts_without(mode):
    """The same games, moves and log-probs whether each move continues the game's previous trunk
    caches or reads its whole prompt (a cache that keeps nothing); the carried one really hits."""
    torch.manual_seed(0)
    model = STLMForCausalLM(small_config(max_seq_len=384)).eval()
    carried, none = PromptCache(), PromptCache(max_entries=0)
    with torch.no_grad():
        a, b = _rollout(model, carried, mode), _rollout(model, none, mode)
    turns_a = [t for e in a for t in e.turns]
    turns_b = [t for e in b for t in e.turns]
    assert [(t.prompt, t.action) for t in turns_a] == [(t.prompt, t.action) for t in turns_b]
    assert torch.allclose(torch.tensor([t.decision.logprob for t in turns_a]),
                          torch.tensor([t.decision.logprob for t in turns_b]), atol=1e-4)
    assert len(turns_a) > 5 * len(a)
    assert none.hits == 0 and carried.hits >= len(turns_a) - len(a)  # every move after a game's first
    assert carried.reused > 0
    # the auxiliary objectives' game text is the compact transcript, not the prompts laid end to end
    from stlm_selfplay.selfplay.batch import game_text

    for episode in a:
        last = episode.transcript[-1]
        assert game_text(episode.transcript) == last[1] + last[2] + b"\n"
        assert game_text(episode.transcript).count(b"ttt x ...|...|...") == 1


def test_selfplay_stage_with_transcript_prompts_trains_on_append_only_prompts(tmp_path):
    from stlm_selfplay.selfplay.loop import selfplay

    stage = "[{games: {tictactoe: 1.0}, opponents: {self: 0.5, random: 0.5}, prompt_style: transcript}]"
    cfg = load_config(None, tiny_model_overrides(max_seq_len=384) + selfplay_overrides(
        "", tmp_path, "tr", updates=2, games_per_update=8, stages=stage, eval__every=2, eval__episodes=2))
    selfplay(cfg)
    rows = [json.loads(line) for line in (tmp_path / "tr" / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("kind") == "eval" and "tictactoe/random/win_rate" in r for r in rows)
    bad = load_config(None, TINY_MODEL + selfplay_overrides("", tmp_path, "bad", stages=stage.replace(
        "transcript", "transcipt")))
    from stlm_selfplay.selfplay.config import check_selfplay

    with pytest.raises(UserError, match="prompt_style"):
        check_selfplay(bad.selfplay)
