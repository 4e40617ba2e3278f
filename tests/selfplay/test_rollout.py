"""The rollout engine: determinism, constrained-choice probabilities, illegal text."""

from __future__ import annotations

import math

import pytest
import torch

from stlm_selfplay.envs import make
from stlm_selfplay.envs.formats import format_action, format_prompt
from stlm_selfplay.model import score
from stlm_selfplay.selfplay.policies import BotPolicy, ModelPolicy, RolloutRandom
from stlm_selfplay.selfplay.rollout import EpisodeSpec, play


@pytest.fixture(scope="module")
def plain_gpt(tiny_model):
    """The tiny model (seed 0) as a plain byte-level GPT of width 32: 1-byte patches, no local
    layers, two trunk layers."""
    return tiny_model(n_layers=2, max_seq_len=128, patch_size=1, d_local=32, n_local_encoder_layers=0,
                      n_local_decoder_layers=0).eval()


def _specs(n, game="tictactoe", seats=("learner", "random")):
    return [EpisodeSpec(game=game, seed=100 + i, seats=seats if i % 2 == 0 else seats[::-1]) for i in range(n)]


def _policies(model, mode="constrained", game="tictactoe"):
    return {"learner": ModelPolicy(model, mode=mode, temperature=1.0), "random": BotPolicy(game, "random")}


def _summary(episodes):
    return [(e.rewards, [(s, p, a) for s, p, a in e.transcript], [t.decision.logprob for t in e.turns]) for e in episodes]


@pytest.mark.parametrize("mode", ["constrained", "free"])
def test_same_seed_same_games(plain_gpt, mode):
    a = play(_specs(6), _policies(plain_gpt, mode), RolloutRandom(7))
    b = play(_specs(6), _policies(plain_gpt, mode), RolloutRandom(7))
    assert _summary(a) == _summary(b)
    c = play(_specs(6), _policies(plain_gpt, mode), RolloutRandom(8))
    assert [e.transcript for e in a] != [e.transcript for e in c]


def test_constrained_probabilities_match_brute_force(plain_gpt):
    episodes = play(_specs(4), _policies(plain_gpt), RolloutRandom(1))
    turns = [t for e in episodes for t in e.turns][:10]
    assert turns
    for turn in turns:
        d = turn.decision
        assert math.isclose(sum(d.probs), 1.0, rel_tol=1e-9)
        # brute force: score each action string alone, softmax by hand
        sums = [float(score(plain_gpt, [turn.prompt], [c])[0].sum()) for c in d.candidates]
        z = max(sums)
        expected = [math.exp(s - z) / sum(math.exp(x - z) for x in sums) for s in sums]
        assert d.probs == pytest.approx(expected, abs=1e-5)
        assert d.logprob == pytest.approx(math.log(expected[d.chosen]), abs=1e-5)
        assert d.text == d.candidates[d.chosen]


def test_replaying_a_transcript_reproduces_its_prompts_and_payoffs(plain_gpt):
    episodes = play(_specs(4), _policies(plain_gpt), RolloutRandom(3))
    for ep in episodes:
        game = make(ep.spec.game)
        game.reset(seed=ep.spec.seed)
        for seat, prompt, action in ep.transcript:
            assert game.current_player == seat
            if prompt:
                assert prompt == format_prompt(game, seat).encode()
                assert action in [format_action(a).encode() for a in game.legal_actions(seat)]
            game.step(action)
        assert game.done and list(game.rewards) == ep.rewards


def test_illegal_model_text_is_counted_not_raised(plain_gpt):
    # an untrained model writing free text produces mostly illegal moves: none may crash
    episodes = play(_specs(8), _policies(plain_gpt, "free"), RolloutRandom(5))
    turns = [t for e in episodes for t in e.turns]
    illegal = [t for t in turns if not t.legal]
    assert illegal, "an untrained model should write some illegal text"
    for e in episodes:
        for t in e.turns:
            assert t.payoff == e.rewards[t.seat]
        assert sum(e.illegal) == sum(1 for t in e.turns if not t.legal)  # bots never play illegal


@pytest.mark.parametrize("mode", ["constrained", "free"])
def test_rollout_logprobs_equal_the_training_forward(plain_gpt, mode):
    from stlm_selfplay.objectives.rl import policy_logprobs
    from stlm_selfplay.selfplay.batch import turns_to_batch

    episodes = play(_specs(4), _policies(plain_gpt, mode), RolloutRandom(11))
    turns = [t for e in episodes for t in e.turns]
    batch = turns_to_batch(turns, torch.ones(len(turns)), temperature=1.0)
    with torch.no_grad():
        out = plain_gpt(batch.input_ids, attention_mask=batch.attention_mask)
    logp, mask = policy_logprobs(out, batch)
    if mode == "constrained":
        torch.testing.assert_close(logp[:, 0], batch.old_logprobs, atol=1e-4, rtol=0)
    else:
        expected = batch.old_logprobs[:, 1:]
        torch.testing.assert_close(logp * mask, expected * mask, atol=1e-4, rtol=0)
        assert mask.sum() == sum(len(t.action) for t in turns)


def test_random_opening_moves_come_from_the_game_seed_and_are_no_ones_turns():
    """opening N: k ~ U{0..N} random moves (seeded by the game) before any policy moves; they are in
    the transcript, not in the turns; no opening move ends the game; same seed, same opening."""
    bots = {"a": BotPolicy("tictactoe", "random"), "b": BotPolicy("tictactoe", "minimax")}

    def run(opening, seeds=range(40)):
        specs = [EpisodeSpec("tictactoe", s, ["a", "b"], opening=opening) for s in seeds]
        return play(specs, bots, RolloutRandom(0))

    plain, opened = run(0), run(6)
    lengths = [len(o.transcript) - len(p.transcript) for p, o in zip(plain, opened)]
    assert any(n != 0 for n in lengths)
    for ep in opened:
        game = make("tictactoe")
        game.reset(seed=ep.spec.seed)
        for _, _, action in ep.transcript:
            assert not game.done  # no opening move ended the game early
            game.step(action)
        assert game.done and list(game.rewards) == ep.rewards  # the transcript replays, openings included
    again = run(6)
    assert [e.transcript for e in again] == [e.transcript for e in opened]
    # the first moves differ from the plain games' in some seeds (random, not the bots' choice)
    assert any(o.transcript[0] != p.transcript[0] for p, o in zip(plain, opened))


def test_random_opening_moves_are_not_trained_on(plain_gpt):
    """A model in both seats: every Turn's prompt is a position after the opening, and the turns
    plus the opening moves make up the whole transcript."""
    policy = ModelPolicy(plain_gpt, mode="constrained")
    specs = [EpisodeSpec("tictactoe", s, ["m", "m"], opening=4) for s in range(16)]
    episodes = play(specs, {"m": policy}, RolloutRandom(1))
    openings = []
    for ep in episodes:
        k = len(ep.transcript) - len(ep.turns)
        openings.append(k)
        assert [t.prompt for t in ep.turns] == [p for _, p, _ in ep.transcript[k:]]
    assert 0 <= min(openings) and max(openings) <= 4 and len(set(openings)) > 1
