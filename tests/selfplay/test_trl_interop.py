"""TRL interop: GRPOTrainer drives an STLM through our game rollout (two real steps on CPU)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("trl")

from stlm_selfplay.envs import make  # noqa: E402
from stlm_selfplay.envs.formats import format_prompt  # noqa: E402
from stlm_selfplay.errors import UserError  # noqa: E402
from stlm_selfplay.integrations.trl import (  # noqa: E402
    STLMGRPOTrainer, completion_logprobs, game_dataset, game_reward_func, grpo_config, make_game_rollout_func,
    train_grpo_on_game,
)
from stlm_selfplay.model import ByteTokenizer  # noqa: E402
from stlm_selfplay.model.tokenizer import EOS_ID, PAD_ID, bytes_to_text  # noqa: E402

RANDOM_ILLEGAL = {"illegal": "random"}  # an untrained model's illegal text still ends in a varied game


TRL_SIZE = dict(d_model=16, d_ff=32, local_d_ff=32)  # the tiny model at width 16: a few thousand parameters


def fake_trainer(model, temperature=1.0, max_completion_length=8):
    """What the rollout reads from a trainer, for tests that need no training."""
    return SimpleNamespace(model=model, accelerator=SimpleNamespace(unwrap_model=lambda m: m),
                           args=SimpleNamespace(temperature=temperature, max_completion_length=max_completion_length))


def padded(prompts, completions):
    """TRL's layout: prompts left-padded, completions right-padded, concatenated."""
    p_len, c_len = max(map(len, prompts)), max(map(len, completions))
    ids, mask = [], []
    for p, c in zip(prompts, completions):
        ids.append([PAD_ID] * (p_len - len(p)) + p + c + [PAD_ID] * (c_len - len(c)))
        mask.append([0] * (p_len - len(p)) + [1] * (len(p) + len(c)) + [0] * (c_len - len(c)))
    return torch.tensor(ids), torch.tensor(mask), c_len


def test_grpo_trainer_takes_two_steps_on_game_payoffs(tmp_path, tiny_model):
    model = tiny_model(**TRL_SIZE)
    assert sum(p.numel() for p in model.parameters()) < 20_000
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rollout = make_game_rollout_func("tictactoe", "random", options=RANDOM_ILLEGAL, seed=3)
    rollouts, scored = [], []

    def recording_rollout(prompts, trainer):
        out = rollout(prompts, trainer)
        rollouts.append((list(prompts), out))
        return out

    def recorded_reward(completions, completion_ids, payoff, **kwargs):
        scored.append((list(completions), [list(c) for c in completion_ids], list(payoff)))
        return game_reward_func(completions=completions, payoff=payoff)

    args = grpo_config(str(tmp_path), max_steps=2, seed=0, learning_rate=1e-2)
    trainer = STLMGRPOTrainer(model, reward_funcs=recorded_reward, args=args, processing_class=ByteTokenizer(),
                              train_dataset=game_dataset(16, seat="both"), rollout_func=recording_rollout)
    assert "forward" not in vars(model)  # TRL's fused-head patch is off the model again
    trainer.train()

    assert len(rollouts) == 2 and len(scored) == 2  # one generation per step, 4 games each
    for (prompts, out), (completions, completion_ids, payoff) in zip(rollouts, scored):
        assert len(prompts) == 4 and prompts[0::2] == prompts[1::2]  # GRPO groups of 2 copies of a start
        assert completion_ids == out["completion_ids"]  # TRL trained on exactly the rollout's bytes
        for text, ids, lps in zip(completions, out["completion_ids"], out["logprobs"]):
            action = bytes(ids[:-1] if ids[-1] == EOS_ID else ids)
            assert text == bytes_to_text(action) and len(lps) == len(ids) >= 1
        for prompt, prompt_ids, seat in zip(prompts, out["prompt_ids"], out["seat"]):
            assert f"seat={seat}" in prompt
            if seat == 0:  # the model opens: its prompt is the game's first position
                game = make("tictactoe")
                game.reset(seed=int(prompt.split("seed=")[1].split()[0]))
                assert bytes(prompt_ids) == format_prompt(game, 0).encode()
        assert payoff == out["payoff"] and set(payoff) <= {-1.0, 0.0, 1.0}
    assert {s for _, out in rollouts for s in out["seat"]} == {0, 1}  # seat="both" reached both seats
    logged = [h["rewards/recorded_reward/mean"] for h in trainer.state.log_history if "rewards/recorded_reward/mean" in h]
    assert logged == pytest.approx([sum(p) / len(p) for _, _, p in scored])
    groups = [tuple(p[i:i + 2]) for _, _, p in scored for i in (0, 2)]
    assert any(a != b for a, b in groups)  # some group has a nonzero advantage, so GRPO must move the model
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_rollout_logprobs_equal_the_training_forward(temperature, tiny_model):
    # TRL's loss scores the completions with completion_logprobs: on the rollout's own bytes it must
    # give the sampler's log-probs, so GRPO's ratio starts at 1
    model = tiny_model(**TRL_SIZE).eval()
    rollout = make_game_rollout_func("tictactoe", "random", seed=1)
    prompts = [p for p in game_dataset(3, seat="both")["prompt"] for _ in range(2)]
    out = rollout(prompts, fake_trainer(model, temperature))
    ids, mask, n = padded(out["prompt_ids"], out["completion_ids"])
    with torch.no_grad():
        logps, entropy = completion_logprobs(model, ids, mask, n, temperature)
    for row, lps in enumerate(out["logprobs"]):
        assert logps[row, :len(lps)].tolist() == pytest.approx(lps, abs=1e-4)
        assert bool((logps[row, len(lps):] == 0).all()) and bool((entropy[row, :len(lps)] > 0).all())
    again = make_game_rollout_func("tictactoe", "random", seed=1)(prompts, fake_trainer(model, temperature))
    assert again == out  # own RNG: the same seed plays the same games


def test_train_grpo_on_game_wrapper_updates_the_model(tiny_model):
    model = tiny_model(**TRL_SIZE)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = train_grpo_on_game(model, seat="both", options=RANDOM_ILLEGAL, seed=5, max_steps=1,
                                 per_device_train_batch_size=8, learning_rate=1e-2)
    rewards = [h["rewards/game_reward_func/mean"] for h in trainer.state.log_history
               if "rewards/game_reward_func/mean" in h]
    assert len(rewards) == 1 and -1.0 <= rewards[0] <= 1.0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert "forward" not in vars(model)


def test_bad_inputs_are_user_errors(tmp_path, tiny_model):
    model = tiny_model(**TRL_SIZE)
    rollout = make_game_rollout_func("tictactoe")
    with pytest.raises(UserError, match="not a tictactoe game start"):
        rollout(["What is 2+2?"], fake_trainer(model))
    with pytest.raises(UserError, match="seat 2 is invalid"):
        game_dataset(4, seat=2)
    with pytest.raises(UserError, match="did you mean 'random'"):
        make_game_rollout_func("tictactoe", "rnd")
    with pytest.raises(UserError, match="unknown game"):
        make_game_rollout_func("tictac")
    with pytest.raises(UserError, match="did you mean 'num_generations'"):
        grpo_config(str(tmp_path), num_generation=4)
    with pytest.raises(UserError, match="payoff"):
        game_reward_func(completions=["[4]"])
    with pytest.raises(UserError, match="use_vllm"):
        STLMGRPOTrainer(model, reward_funcs=game_reward_func, args=grpo_config(str(tmp_path), use_vllm=True))
    with pytest.raises(UserError, match="temperature only"):
        STLMGRPOTrainer(model, reward_funcs=game_reward_func, args=grpo_config(str(tmp_path), top_p=0.9))


def test_kl_reference_of_an_in_memory_model_is_its_initial_weights(tmp_path, tiny_model):
    """beta != 0: TRL builds its reference model from the policy's path; an STLM built in memory
    has none, so its initial weights are saved under output_dir and loaded back as the reference."""
    model = tiny_model(**TRL_SIZE)
    args = grpo_config(str(tmp_path), max_steps=1, beta=0.04)
    trainer = STLMGRPOTrainer(model, reward_funcs=game_reward_func, args=args, processing_class=ByteTokenizer(),
                              train_dataset=game_dataset(4))
    reference = trainer.accelerator.unwrap_model(trainer.ref_model)
    assert reference is not model and not hasattr(model.config, "auto_map")
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        assert torch.equal(p.detach(), q.detach()), name
