"""The optional value head (model/value_head.py) and the `value` objective (objectives/value.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _model_fixtures import small_config
from stlm_selfplay.model import STLMForCausalLM
from stlm_selfplay.model.value_head import state_values
from stlm_selfplay.objectives import Batch, build_objective
from stlm_selfplay.objectives.value import explained_variance
from stlm_selfplay.runs import load_model


def build(seed: int = 0, **overrides) -> STLMForCausalLM:
    torch.manual_seed(seed)
    return STLMForCausalLM(small_config(**overrides)).eval()


def ragged_batch():
    """Three prompts of lengths 11, 7 (right-padded) and 8 (left-padded) in one [3, 11] batch
    (the pad slots hold random bytes: only the mask says they are pads)."""
    ids = torch.randint(0, 256, (3, 11), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, :3] = 0
    return ids, mask


def randomize_head(model) -> None:
    with torch.no_grad():
        model.value_head.weight.normal_(generator=torch.Generator().manual_seed(2))
        model.value_head.bias.fill_(0.25)


def test_no_head_model_is_unchanged_and_the_head_draws_no_random_numbers():
    plain, with_head = build(), build(value_head=True)
    assert plain.value_head is None and not any(k.startswith("value_head") for k in plain.state_dict())
    extra = set(with_head.state_dict()) - set(plain.state_dict())
    assert extra == {"value_head.weight", "value_head.bias"}
    for key, tensor in plain.state_dict().items():  # same seed: every shared parameter equal
        assert torch.equal(tensor, with_head.state_dict()[key]), key
    ids, mask = ragged_batch()
    with torch.no_grad():
        assert torch.equal(plain(ids, attention_mask=mask).logits, with_head(ids, attention_mask=mask).logits)
    assert torch.equal(state_values(with_head, ids, mask), torch.zeros(3))  # zero-init: V = 0
    with pytest.raises(ValueError, match="value_head=True"):
        state_values(plain, ids, mask)
    with pytest.raises(ValueError, match="value_head"):
        small_config(value_head="yes")


@pytest.mark.parametrize("patching", ["fixed", "dynamic"])
def test_values_read_the_final_norm_state_of_the_last_prompt_patch(patching):
    model = build(value_head=True, patching=patching)
    randomize_head(model)
    ids, mask = ragged_batch()
    with torch.no_grad():
        values = state_values(model, ids, mask)
        for r, keep in enumerate(mask.bool()):  # each prompt alone, through the LM forward
            row = ids[r][keep][None]
            out = model(row, output_trunk_states=True)
            last = int(out.patch_ids.max())
            if patching == "fixed":  # trunk states are left-aligned: (len - 1) // P
                assert last == (row.shape[1] - 1) // 4
            state = model.trunk.norm(out.trunk_states[-1][0, last])
            expected = state @ model.value_head.weight[0] + model.value_head.bias[0]
            assert abs(float(values[r]) - float(expected)) < 1e-5, (r, values, expected)
    assert values.std() > 0  # not a constant


def test_save_load_round_trip_is_exact(tmp_path):
    model = build(value_head=True)
    randomize_head(model)
    model.save_pretrained(tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.config.value_head is True
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[key]), key
    ids, mask = ragged_batch()
    with torch.no_grad():
        assert torch.equal(state_values(model, ids, mask), state_values(loaded, ids, mask))


@pytest.mark.parametrize("epsilon", [0.2, 0.0, None])
def test_value_loss_equals_its_formula_on_a_hand_example(epsilon):
    values = torch.tensor([0.5, -0.2, 1.0], requires_grad=True)
    batch = Batch(input_ids=torch.zeros(3, 2, dtype=torch.long),
                  extras={"values": values, "returns": torch.tensor([1.0, -1.0, 0.0]),
                          "old_values": torch.tensor([0.0, 0.0, 0.9])})
    objective, weight = build_objective({"name": "value", "weight": 0.5, "epsilon": epsilon})
    assert weight == 0.5
    out = objective(None, batch)
    out.loss.backward()
    if epsilon:
        # unclipped (V - R)^2 = 0.25, 0.64, 1.0; V - V_old = 0.5, -0.2, 0.1 clipped to 0.2, -0.2, 0.1:
        # (V_old + clip - R)^2 = (0.2 - 1)^2 = 0.64, 0.64, 1.0; max = 0.64, 0.64, 1.0 -> 0.5 * 2.28 / 3
        assert out.loss.item() == pytest.approx(0.38, abs=1e-6)
        assert out.metrics["clip_frac"] == pytest.approx(1 / 3)
        # turn 0 is held by the clip (no gradient); the others: (V - R) / 3
        np.testing.assert_allclose(values.grad.numpy(), [0.0, 0.8 / 3, 1 / 3], atol=1e-6)
    else:
        assert out.loss.item() == pytest.approx(0.5 * 1.89 / 3, abs=1e-6)  # 0.5 mean (V - R)^2
        assert out.metrics["clip_frac"] == 0.0
        np.testing.assert_allclose(values.grad.numpy(), [-0.5 / 3, 0.8 / 3, 1 / 3], atol=1e-6)
    assert out.metrics["value_mean"] == pytest.approx(1.3 / 3)


def test_explained_variance_and_value_loss_needs_its_inputs():
    returns = torch.tensor([1.0, -1.0, 1.0, -1.0])
    assert explained_variance(returns, returns) == 1.0
    assert explained_variance(returns, torch.zeros(4)) == 0.0
    # R - V = 0.5, -0.5, 0.5, -0.5: Var 0.25 against Var(R) = 1
    assert explained_variance(returns, returns * 0.5) == pytest.approx(0.75)
    from stlm_selfplay.errors import UserError

    with pytest.raises(UserError, match="list it in selfplay.objectives"):
        build_objective({"name": "value"})[0](None, Batch(input_ids=torch.zeros(1, 2, dtype=torch.long)))


# ----------------------------------------------------------------------------- self-play wiring


def gae_overrides(tmp_path, name: str, value_head: bool = True, **selfplay):
    from _pretrain_helpers import TINY_MODEL
    from _selfplay_fixtures import selfplay_overrides

    values = dict(updates=3, games_per_update=8, eval__episodes=2, eval__games="[tictactoe]",
                  advantages__estimator="gae", advantages__options="{gamma: 1.0, lambda: 0.9}",
                  objectives="[{name: reinforce}, {name: value, weight: 1.0, epsilon: 0.2}]")
    values.update(selfplay)
    return TINY_MODEL + [f"model.overrides.value_head={str(value_head).lower()}"] + selfplay_overrides(
        "", tmp_path, name, **values)


def test_selfplay_with_gae_trains_the_value_head_and_logs_its_calibration(tmp_path):
    from stlm_selfplay.config import load_config
    from stlm_selfplay.runs import latest_checkpoint
    from stlm_selfplay.selfplay.loop import selfplay
    from stlm_selfplay.train.metrics import read_metrics

    selfplay(load_config(None, gae_overrides(tmp_path, "gae")))
    train = read_metrics(tmp_path / "gae" / "metrics.jsonl", "train")
    assert len(train) == 3
    for row in train:
        assert row["value/loss"] > 0 and 0 <= row["value/clip_frac"] <= 1
    # update 1: the zero-init head says V = 0 everywhere, so R - V = R: explained variance exactly 0
    assert train[0]["value/value_mean"] == 0.0 and train[0]["value/explained_variance"] == 0.0
    assert train[-1]["value/explained_variance"] != 0.0  # the head has moved
    model = load_model(latest_checkpoint(tmp_path / "gae"))
    assert model.value_head is not None and model.value_head.weight.abs().sum() > 0


def test_value_loss_falls_on_a_fixed_batch_through_the_update():
    from types import SimpleNamespace

    from stlm_selfplay.config import ScheduleConfig
    from stlm_selfplay.objectives.reinforce import Reinforce
    from stlm_selfplay.objectives.value import Value
    from stlm_selfplay.selfplay.advantages import Turns, build_estimator
    from stlm_selfplay.selfplay.batch import turn_values
    from stlm_selfplay.selfplay.policies import BotPolicy, ModelPolicy, RolloutRandom
    from stlm_selfplay.selfplay.rollout import EpisodeSpec, play
    from stlm_selfplay.selfplay.update import Learner, optimize_update, value_loss
    from stlm_selfplay.train.distributed import DistInfo

    model = build(value_head=True, patch_size=2)
    specs = [EpisodeSpec("tictactoe", seed, ["learner", "random"][::1 if seed % 2 else -1]) for seed in range(8)]
    policies = {"learner": ModelPolicy(model), "random": BotPolicy("tictactoe", "random")}
    with torch.no_grad():
        episodes = play(specs, policies, RolloutRandom(0))
    turns = [t for ep in episodes for t in ep.turns]
    values = turn_values(model, turns)
    for t, v in zip(turns, values):
        t.value = float(v)
    record = Turns(np.array([t.payoff for t in turns]), [t.game for t in turns], np.array([t.seat for t in turns]),
                   np.array([t.episode for t in turns]), payoff=np.array([t.payoff for t in turns]), value=values)
    gae = build_estimator("gae", {"gamma": 1.0, "lambda": 0.9})
    adv = gae(record)
    returns = gae.value_targets(record, adv)
    assert len(set(np.round(returns, 6))) > 1  # wins and losses: something to fit
    learner = Learner(model, model, torch.optim.AdamW([{"params": model.parameters(), "peak_lr": 3e-3}], weight_decay=0.0),
                      ScheduleConfig(steps=40, kind="constant", warmup_steps=0), Reinforce(), None, None, {},
                      (Value(Value.Options(epsilon=0.0)), 1.0))
    sp = SimpleNamespace(ppo_epochs=1, minibatches=1, micro_batch_turns=256, grad_clip=1.0)
    stage = SimpleNamespace(mode="constrained", temperature=1.0, lr_scale=1.0, warmup_updates=0)
    everything = np.arange(len(turns))

    def loss_now() -> float:
        with torch.no_grad():
            return value_loss(learner, turns, returns, len(turns), torch.device("cpu"))[0].item()

    before = loss_now()
    assert before == pytest.approx(0.5 * float(np.mean(returns ** 2)), rel=1e-5)  # V = 0 at init
    for step in range(40):  # A = 0: the RL term has no gradient, the value objective trains alone
        sums = optimize_update(learner, sp, stage, turns, np.zeros(len(turns), np.float32), [everything], episodes, step,
                               torch.device("cpu"), DistInfo(), returns)
        assert "value/loss" in sums
    # below half the loss of the best constant value 0.5 Var(R): V(s) tells the states apart
    assert loss_now() < 0.5 * (0.5 * float(np.var(returns)))


def test_gae_or_value_without_a_value_head_is_a_config_error(tmp_path):
    from stlm_selfplay.config import load_config
    from stlm_selfplay.errors import UserError
    from stlm_selfplay.selfplay.config import check_selfplay
    from stlm_selfplay.selfplay.loop import selfplay

    cfg = load_config(None, gae_overrides(tmp_path, "no-head", value_head=False))
    with pytest.raises(UserError, match="advantages.estimator=gae needs model value_head: true"):
        selfplay(cfg)
    assert not (tmp_path / "no-head").exists()  # refused before the run folder is written
    with pytest.raises(UserError, match="advantages.estimator=gae needs model value_head: true"):
        check_selfplay(cfg.selfplay, value_head=False)
    check_selfplay(cfg.selfplay, value_head=True)
    value_only = load_config(None, gae_overrides(tmp_path, "v", value_head=False, advantages__estimator="rae",
                                                 advantages__options="{}"))
    with pytest.raises(UserError, match="'value' trains the value head and needs model value_head: true"):
        check_selfplay(value_only.selfplay, value_head=False)
    no_value = load_config(None, gae_overrides(tmp_path, "nv", objectives="[{name: reinforce}]"))
    with pytest.raises(UserError, match="add \\{name: value\\} to selfplay.objectives"):
        check_selfplay(no_value.selfplay)


def test_rae_with_a_value_head_trains_it_on_the_reward_to_go(tmp_path):
    from stlm_selfplay.config import load_config
    from stlm_selfplay.selfplay.loop import selfplay
    from stlm_selfplay.train.metrics import read_metrics

    selfplay(load_config(None, gae_overrides(tmp_path, "rae-v", updates=1, advantages__estimator="rae",
                                             advantages__options="{}")))
    row = read_metrics(tmp_path / "rae-v" / "metrics.jsonl", "train")[0]
    # V = 0 at init and R = the payoff of each turn's seat (no shaping): loss = 0.5 mean(payoff^2)
    assert row["value/value_mean"] == 0.0 and row["value/explained_variance"] == 0.0
    assert row["value/return_mean"] == pytest.approx(row["reward_mean"], abs=1e-6)


@pytest.mark.slow
def test_value_head_trains_under_ddp(tmp_path):
    """torchrun, 2 CPU processes (gloo): the value loss's gradients (through the unwrapped model)
    reach DDP's all-reduce, so the run completes and logs the value metrics."""
    import os
    import subprocess
    import sys

    from stlm_selfplay.train.metrics import read_metrics

    (tmp_path / "none.yaml").write_text("{}\n")
    args = gae_overrides(tmp_path, "ddp", updates=2, micro_batch_turns=4,
                         objectives="[{name: ppo}, {name: value, weight: 0.5}]")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "stlm_selfplay", "selfplay", "none.yaml", *args], cwd=tmp_path,
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    train = read_metrics(tmp_path / "ddp" / "metrics.jsonl", "train")
    assert [r["value/value_mean"] == 0.0 for r in train] == [True, False]  # trained after the first update


def test_stlm_run_refuses_gae_without_a_value_head_before_pretraining(tmp_path):
    """`stlm run` checks the self-play stage against the model it will pretrain: exit 2 at once,
    no run folder; with model value_head: true the same command passes the check."""
    import subprocess
    import sys
    from pathlib import Path

    config = Path(__file__).resolve().parents[2] / "configs" / "micro.yaml"
    base = [sys.executable, "-m", "stlm_selfplay", "run", str(config), f"run.out_dir={tmp_path}",
            "logging.wandb=disabled", "selfplay.advantages.estimator=gae",
            "selfplay.objectives=[{name: reinforce}, {name: value, weight: 0.5}]"]
    done = subprocess.run(base, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "needs model value_head: true" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "micro").exists()
    from stlm_selfplay.config import load_config
    from stlm_selfplay.stages import check_staged

    ok = load_config(config, base[5:] + ["model.overrides.value_head=true"])
    check_staged(ok)  # no error
