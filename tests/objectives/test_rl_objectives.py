"""RL objectives: policy log-probs by hand, and `grpo` against TRL's own `_compute_loss`."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from stlm_selfplay.errors import UserError
from stlm_selfplay.objectives import Batch, build_objective
from stlm_selfplay.objectives.rl import policy_entropy, policy_logprobs

V = 259


def _free_batch(temperature=1.0):
    """3 rows of 7 ids; action bytes at the end of each row; row 2 right-padded by 2."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, V, generator=g, requires_grad=True)
    input_ids = torch.randint(0, 256, (3, 7), generator=g)
    loss_mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1, 1], [0, 0, 1, 1, 1, 0, 0]])
    attention_mask = torch.tensor([[1] * 7, [1] * 7, [1, 1, 1, 1, 1, 0, 0]])
    batch = Batch(input_ids=input_ids, attention_mask=attention_mask, loss_mask=loss_mask)
    batch.extras["temperature"] = temperature
    return SimpleNamespace(logits=logits), batch


def _constrained_batch(temperature=1.0):
    """Two turns: turn 1 has 2 legal actions (rows 0-1), turn 0 has 3 (rows 2-4)."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 5, V, generator=g, requires_grad=True)
    input_ids = torch.randint(0, 256, (5, 5), generator=g)
    loss_mask = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0]])
    batch = Batch(input_ids=input_ids, loss_mask=loss_mask)
    batch.extras.update(
        temperature=temperature,
        groups=torch.tensor([1, 1, 0, 0, 0]),
        chosen=torch.tensor([False, True, False, False, True]),
    )
    return SimpleNamespace(logits=logits), batch


def test_free_logprobs_are_tempered_byte_logprobs_of_action_bytes():
    out, batch = _free_batch(temperature=0.7)
    logp, mask = policy_logprobs(out, batch)
    assert logp.shape == mask.shape == (3, 6)
    for i in range(3):
        for t in range(6):
            lp = torch.log_softmax(out.logits[i, t] / 0.7, -1)[batch.input_ids[i, t + 1]]
            assert logp[i, t].item() == pytest.approx(lp.item(), abs=1e-5)
            expected_mask = batch.loss_mask[i, t + 1] * batch.attention_mask[i, t + 1]
            assert mask[i, t].item() == expected_mask.item()
    ent = policy_entropy(out, batch)
    p = torch.softmax(out.logits[1, 4] / 0.7, -1)
    assert ent[1, 4].item() == pytest.approx(-(p * p.log()).sum().item(), rel=1e-5)


def _row_score(out, batch, b):
    """Summed byte log-probs (tau = 1) of row b's action bytes, by a plain loop."""
    lp = torch.log_softmax(out.logits[b].detach(), -1)
    return sum(lp[t - 1, batch.input_ids[b, t]].item() for t in range(1, 5) if batch.loss_mask[b, t])


def test_constrained_logprob_is_softmax_over_legal_actions_in_turn_order():
    tau = 5.0  # spreads the policy, so its entropy is far from 0
    out, batch = _constrained_batch(temperature=tau)
    logp, mask = policy_logprobs(out, batch)
    s = [_row_score(out, batch, b) / tau for b in range(5)]
    turn0 = s[4] - math.log(sum(math.exp(x) for x in s[2:5]))  # chosen row 4
    turn1 = s[1] - math.log(sum(math.exp(x) for x in s[0:2]))  # chosen row 1
    assert logp.shape == mask.shape == (2, 1) and mask.eq(1).all()
    torch.testing.assert_close(logp.detach().squeeze(1), torch.tensor([turn0, turn1]), rtol=0, atol=1e-5)
    q = [math.exp(x - math.log(sum(math.exp(y) for y in s[2:5]))) for x in s[2:5]]
    assert sum(q) == pytest.approx(1.0)
    ent = policy_entropy(out, batch)
    assert ent[0, 0].item() == pytest.approx(-sum(x * math.log(x) for x in q), rel=1e-5)


def test_constrained_needs_exactly_one_chosen_row_per_turn():
    out, batch = _constrained_batch()
    batch.extras["chosen"] = torch.tensor([True, True, False, False, True])
    with pytest.raises(ValueError, match="exactly one row"):
        policy_logprobs(out, batch)


# ------------------------------------------------------------------ TRL's own loss


def _trl_loss(tmp_path, logp, mask, entropy, adv, old, ref, *, loss_type, epsilon, epsilon_high, beta, entropy_coef,
              delta, max_len):
    """TRL 1.16's `GRPOTrainer._compute_loss` on a real trainer (`STLMGRPOTrainer`), built from a
    real `GRPOConfig` with these settings: every attribute the loss reads comes from TRL's own
    __init__. Only its per-token log-prob function is replaced, to return our log-probs."""
    from stlm_selfplay.integrations.trl import STLMGRPOTrainer, game_dataset, grpo_config
    from stlm_selfplay.model import ByteTokenizer, STLMConfig, STLMForCausalLM

    args = grpo_config(str(tmp_path), loss_type=loss_type, epsilon=epsilon, epsilon_high=epsilon_high, beta=beta,
                       entropy_coef=entropy_coef, delta=delta, max_completion_length=max_len)
    model = STLMForCausalLM(STLMConfig(d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, d_ff=32, d_local=16,
                                       local_heads=2, patch_size=2, max_seq_len=64))
    trainer = STLMGRPOTrainer(model, reward_funcs=lambda completions, **kw: [0.0] * len(completions), args=args,
                              processing_class=ByteTokenizer(), train_dataset=game_dataset(4))
    trainer._get_per_token_logps_and_entropies = lambda *args, **kwargs: (logp, entropy, None)
    trainer.current_gradient_accumulation_steps = args.gradient_accumulation_steps  # what training_step sets
    trainer.model.train()
    n, length = logp.shape
    inputs = {
        "prompt_ids": torch.zeros(n, 0, dtype=torch.long),
        "prompt_mask": torch.zeros(n, 0, dtype=torch.long),
        "completion_ids": torch.zeros(n, length, dtype=torch.long),
        "completion_mask": mask,
        "advantages": adv,
        "ref_per_token_logps": ref,
        "num_items_in_batch": mask.sum(),
    }
    if old is not None:
        inputs["old_per_token_logps"] = old
    loss = trainer._compute_loss(trainer.model, inputs)
    return loss, trainer._metrics["train"]


CASES = [
    # loss_type, epsilon_high, beta, entropy_coef, delta, old log-probs given, constrained mode
    ("grpo", None, 0.04, 0.01, None, True, False),
    ("grpo", 0.28, 0.0, 0.0, 1.5, True, False),
    ("dr_grpo", 0.28, 0.04, 0.01, None, True, False),
    ("dr_grpo", None, 0.0, 0.0, None, False, False),
    ("dapo", 0.28, 0.04, 0.01, 1.5, True, False),
    ("dapo", None, 0.0, 0.0, None, False, False),
    ("grpo", 0.28, 0.04, 0.01, None, True, True),
    ("dapo", None, 0.04, 0.0, None, True, True),
]


@pytest.mark.parametrize("loss_type,epsilon_high,beta,entropy_coef,delta,with_old,constrained", CASES)
def test_grpo_loss_and_gradient_equal_trl(loss_type, epsilon_high, beta, entropy_coef, delta, with_old, constrained,
                                          tmp_path):
    out, batch = _constrained_batch(0.8) if constrained else _free_batch(0.9)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        logp, mask = policy_logprobs(out, batch)
        entropy = policy_entropy(out, batch)
    n = logp.shape[0]
    adv = torch.randn(n, generator=g)
    # old/ref log-probs far enough from logp that ratios fall on both sides of the clip range
    old = (logp + 0.4 * torch.randn(logp.shape, generator=g)) if with_old else None
    ref = logp + 0.3 * torch.randn(logp.shape, generator=g)
    batch.advantages, batch.old_logprobs, batch.ref_logprobs = adv, old, ref

    options = {"loss_type": loss_type, "epsilon_high": epsilon_high, "beta": beta, "entropy_coef": entropy_coef, "delta": delta}
    ours = build_objective({"name": "grpo", **options})[0](out, batch)
    (grad_ours,) = torch.autograd.grad(ours.loss, out.logits)

    logp_trl, _ = policy_logprobs(out, batch)
    entropy_trl = policy_entropy(out, batch)
    max_len = logp.shape[1]  # our default dr_grpo constant: the log-prob width
    theirs, trl_metrics = _trl_loss(
        tmp_path, logp_trl, mask, entropy_trl, adv, old, ref, loss_type=loss_type, epsilon=0.2, epsilon_high=epsilon_high,
        beta=beta, entropy_coef=entropy_coef, delta=delta, max_len=max_len,
    )
    (grad_trl,) = torch.autograd.grad(theirs, out.logits)

    torch.testing.assert_close(ours.loss, theirs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_ours, grad_trl, rtol=1e-4, atol=1e-7)
    if with_old and not constrained:
        assert 0 < ours.metrics["clip_frac"] < 1  # the case exercises the clip
    assert ours.metrics["clip_frac"] == pytest.approx(trl_metrics["clip_ratio/region_mean"][0], abs=1e-6)
    assert ours.metrics["clip_high"] == pytest.approx(trl_metrics["clip_ratio/high_mean"][0], abs=1e-6)
    if beta:
        assert ours.metrics["kl"] == pytest.approx(trl_metrics["kl"][0], rel=1e-5)
    if entropy_coef:
        assert ours.metrics["entropy"] == pytest.approx(trl_metrics["entropy"][0], rel=1e-5)


def test_dr_grpo_constant_and_dapo_num_items_override():
    out, batch = _free_batch()
    logp, mask = (x.detach() for x in policy_logprobs(out, batch))
    batch.advantages = torch.tensor([1.0, -2.0, 0.5])
    pg = -(batch.advantages[:, None] * logp * mask).sum()  # summed REINFORCE terms -A logp
    on_policy = -(batch.advantages[:, None] * mask).sum()  # summed -min(rA, clip(r)A) at r = 1
    dr = build_objective({"name": "grpo", "loss_type": "dr_grpo", "max_completion_length": 10})[0](out, batch)
    assert dr.loss.item() == pytest.approx(on_policy.item() / (3 * 10))
    batch.extras["num_items"] = 40.0
    dapo = build_objective({"name": "grpo", "loss_type": "dapo"})[0](out, batch)
    assert dapo.loss.item() == pytest.approx(on_policy.item() / 40)
    rf = build_objective({"name": "reinforce", "loss_type": "dapo"})[0](out, batch)
    assert rf.loss.item() == pytest.approx(pg.item() / 40, rel=1e-5)


def test_reinforce_hand_computed_per_byte_advantages_aligned_with_input_ids():
    out, batch = _free_batch()
    g = torch.Generator().manual_seed(3)
    adv_ids = torch.randn(3, 7, generator=g)  # [N, T]: column t belongs to byte t
    batch.advantages = adv_ids
    result = build_objective({"name": "reinforce", "loss_type": "grpo"})[0](out, batch)
    lp = torch.log_softmax(out.logits.detach(), -1)
    rows = []
    for i in range(3):
        terms = [
            -adv_ids[i, t].item() * lp[i, t - 1, batch.input_ids[i, t]].item()
            for t in range(1, 7)
            if batch.loss_mask[i, t] and batch.attention_mask[i, t]
        ]
        rows.append(sum(terms) / len(terms))
    assert result.loss.item() == pytest.approx(sum(rows) / 3, rel=1e-5)


def test_ppo_at_ratio_one_has_the_reinforce_gradient_and_needs_old_logprobs():
    out, batch = _constrained_batch()
    batch.advantages = torch.tensor([0.7, -1.3])
    with pytest.raises(ValueError, match="old_logprobs"):
        build_objective({"name": "ppo"})[0](out, batch)
    batch.old_logprobs = policy_logprobs(out, batch)[0].detach().squeeze(1)  # [N_turns]
    ppo = build_objective({"name": "ppo"})[0](out, batch)
    assert ppo.metrics["ratio_mean"] == pytest.approx(1.0) and ppo.metrics["clip_frac"] == 0.0
    (grad_ppo,) = torch.autograd.grad(ppo.loss, out.logits)
    rf = build_objective({"name": "reinforce"})[0](out, batch)
    (grad_rf,) = torch.autograd.grad(rf.loss, out.logits)
    torch.testing.assert_close(grad_ppo, grad_rf)


def test_old_and_ref_values_outside_the_mask_are_ignored():
    out, batch = _free_batch()
    logp, mask = (x.detach() for x in policy_logprobs(out, batch))
    batch.advantages = torch.tensor([1.0, -1.0, 0.5])
    batch.old_logprobs = torch.where(mask > 0, logp - 0.1, torch.full_like(logp, float("nan")))
    batch.ref_logprobs = torch.where(mask > 0, logp + 0.2, torch.full_like(logp, float("nan")))
    result = build_objective({"name": "ppo", "beta": 0.1})[0](out, batch)
    (grad,) = torch.autograd.grad(result.loss, out.logits)
    assert torch.isfinite(result.loss) and torch.isfinite(grad).all()
    k3_times_ratio = (math.exp(0.2) - 0.2 - 1) * math.exp(0.1)  # ratio pi/pi_old = e^0.1
    assert result.metrics["kl"] == pytest.approx(k3_times_ratio, rel=1e-4)


def test_bad_rl_options_are_one_line_user_errors():
    with pytest.raises(UserError, match="objective 'grpo': loss_type must be one of grpo, dr_grpo, dapo, got 'bnpo2'") as err:
        build_objective({"name": "grpo", "loss_type": "bnpo2"})
    assert "\n" not in str(err.value) and "dr_grpo" in str(err.value)
    with pytest.raises(UserError, match="has no option 'epsilon'"):
        build_objective({"name": "reinforce", "epsilon": 0.2})
    with pytest.raises(UserError, match="delta must be > 1"):
        build_objective({"name": "grpo", "delta": 0.5})
    with pytest.raises(UserError, match="epsilon"):
        build_objective({"name": "ppo", "epsilon": 0})
