"""`mmd` (objectives/mmd.py): the loss equals a hand computation, the magnet moves by its formula,
bad options are one-line errors, a run with a magnet resumes exactly, and on Kuhn poker it takes a
small model below the card-blind exploitability of 1/3."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from _selfplay_fixtures import selfplay_config, selfplay_overrides, tiny_random_model
from conftest import tiny_model_overrides
from stlm_selfplay.errors import UserError
from stlm_selfplay.objectives.base import Batch
from stlm_selfplay.objectives.mmd import update_magnet
from stlm_selfplay.objectives.registry import build_objective

# two turns: turn 0 has 2 legal actions, turn 1 has 3; row b's score s_b = log p_b (one action byte)
P = [0.2, 0.6, 0.1, 0.1, 0.2]  # -> q = [0.25, 0.75] and [0.25, 0.25, 0.5]
GROUPS, CHOSEN = [0, 0, 1, 1, 1], [False, True, True, False, False]  # played: q = 0.75 and 0.25
MAGNET = [0.5, 0.5, 0.5, 0.25, 0.25]
OLD = [0.5, 0.5, 1 / 3, 1 / 3, 1 / 3]
ADV = [1.0, -0.5]


def _two_turns(step: int = 0):
    """(output, batch): logits [5, 2, 2] whose row b puts probability p_b on byte 1 after byte 0."""
    p = torch.tensor(P, dtype=torch.float64)
    logits = torch.zeros(5, 2, 2, dtype=torch.float64)
    logits[:, 0, 1] = torch.log(p / (1 - p))  # softmax([0, x])[1] = sigmoid(x) = p
    logits.requires_grad_(True)
    ids = torch.tensor([[0, 1]] * 5)
    old_chosen = torch.tensor([math.log(0.5), math.log(1 / 3)])
    batch = Batch(input_ids=ids, attention_mask=torch.ones_like(ids), loss_mask=torch.tensor([[0.0, 1.0]] * 5),
                  step=step, old_logprobs=old_chosen, advantages=torch.tensor(ADV),
                  extras={"groups": torch.tensor(GROUPS), "chosen": torch.tensor(CHOSEN),
                          "ref_logq": torch.log(torch.tensor(MAGNET)), "old_probs": torch.tensor(OLD)})
    return SimpleNamespace(logits=logits), batch


def _kl(q, r):
    return sum(a * math.log(a / b) for a, b in zip(q, r))


def _hand(alpha: float, prox: float, policy_terms) -> float:
    """mean over the 2 turns of policy term + alpha KL(q || rho) + prox KL(q || o)."""
    q = [[0.25, 0.75], [0.25, 0.25, 0.5]]
    rho, old = [MAGNET[:2], MAGNET[2:]], [OLD[:2], OLD[2:]]
    return sum(policy_terms[t] + alpha * _kl(q[t], rho[t]) + prox * _kl(q[t], old[t]) for t in range(2)) / 2


def test_pg_loss_equals_hand_computation_on_two_turns():
    objective, _ = build_objective({"name": "mmd", "alpha": 0.2, "prox_coef": 0.1})
    output, batch = _two_turns()
    out = objective(output, batch)
    pg = [-1.0 * math.log(0.75), 0.5 * math.log(0.25)]  # -A log q(a)
    assert float(out.loss.detach()) == pytest.approx(_hand(0.2, 0.1, pg), abs=1e-6)
    assert out.metrics["kl_magnet"] == pytest.approx((_kl([.25, .75], [.5, .5]) + _kl([.25, .25, .5], [.5, .25, .25])) / 2)
    out.loss.backward()
    assert torch.isfinite(output.logits.grad).all() and output.logits.grad.abs().sum() > 0


def test_ppo_surrogate_and_uniform_magnet_equal_hand_computation():
    objective, _ = build_objective({"name": "mmd", "alpha": 0.3, "surrogate": "ppo", "epsilon": 0.2,
                                    "magnet": "uniform"})
    output, batch = _two_turns()
    # r = q(a) / o(a): 0.75 / 0.5 = 1.5 (A = 1, clipped to 1.2) and 0.25 / (1/3) = 0.75 (A = -0.5, clipped to 0.8)
    ppo = [-1.2, 0.4]
    q = [[0.25, 0.75], [0.25, 0.25, 0.5]]
    uniform_kl = [_kl(q[0], [0.5, 0.5]), _kl(q[1], [1 / 3] * 3)]
    expected = sum(ppo[t] + 0.3 * uniform_kl[t] for t in range(2)) / 2
    assert float(objective(output, batch).loss.detach()) == pytest.approx(expected, abs=1e-6)


Q = [1.0, -1.0, 2.0, 0.0, -1.0]  # exact action values of the 5 rows (values: exact)


def test_exact_values_loss_equals_hand_computation_and_its_baseline_leaves_the_gradient_unchanged():
    """l_t = -sum_b q_b (Q_b - V_t), V_t = sum_b o_b Q_b: turn 0 V = 0, l = -(0.25 - 0.75) = 0.5;
    turn 1 V = 1/3, l = -(0.25 (5/3) + 0.25 (-1/3) + 0.5 (-4/3)) = 1/3; the played actions and the
    sampled advantages play no part."""
    objective, _ = build_objective({"name": "mmd", "values": "exact", "alpha": 0.2, "prox_coef": 0.1})
    output, batch = _two_turns()
    batch.extras["action_values"] = torch.tensor(Q)
    out = objective(output, batch)
    assert float(out.loss.detach()) == pytest.approx(_hand(0.2, 0.1, [0.5, 1 / 3]), abs=1e-6)
    assert out.metrics["q_spread"] == pytest.approx((1.0 + (5 / 3 + 1 / 3 + 4 / 3) / 3) / 2)
    out.loss.backward()
    grad = output.logits.grad.clone()
    output2, batch2 = _two_turns()
    batch2.extras["action_values"] = torch.tensor(Q) + torch.tensor([5.0, 5.0, -3.0, -3.0, -3.0])  # + c_t per turn
    batch2.advantages, batch2.extras["chosen"] = -batch2.advantages, torch.tensor([True, False, False, True, False])
    out2 = objective(output2, batch2)
    out2.loss.backward()
    assert torch.allclose(output2.logits.grad, grad, atol=1e-12)  # sum_b dq_b = 0: Q_b + c_t, same gradient
    assert float(out2.loss.detach()) == pytest.approx(float(out.loss.detach()))  # Q_b - V_t is unchanged too
    sampled, _ = build_objective({"name": "mmd", "alpha": 0.2, "prox_coef": 0.1})
    output3, batch3 = _two_turns()
    sampled(output3, batch3).loss.backward()
    assert not torch.allclose(output3.logits.grad, grad)


def test_alpha_anneals_linearly_and_the_loss_uses_it():
    objective, _ = build_objective({"name": "mmd", "alpha": 0.5, "alpha_final": 0.1, "alpha_decay_steps": 100})
    assert [objective.options.alpha_weight(s) for s in (0, 50, 100, 400)] == pytest.approx([0.5, 0.3, 0.1, 0.1])
    output, batch = _two_turns(step=50)
    pg = [-1.0 * math.log(0.75), 0.5 * math.log(0.25)]
    assert float(objective(output, batch).loss.detach()) == pytest.approx(_hand(0.3, 0.0, pg), abs=1e-6)


def test_magnet_update_equals_its_formula_and_runs_every_magnet_every_updates():
    magnet, model = tiny_random_model(0), tiny_random_model(1)
    before = {k: v.clone() for k, v in magnet.state_dict().items()}
    update_magnet(magnet, model, 0.25)  # theta_rho <- 0.75 theta_rho + 0.25 theta
    after, theta = magnet.state_dict(), model.state_dict()
    for name, value in after.items():
        if value.is_floating_point():
            assert torch.allclose(value, 0.75 * before[name] + 0.25 * theta[name], atol=1e-7), name
    assert any(not torch.equal(after[k], before[k]) for k in after)
    objective, _ = build_objective({"name": "mmd", "magnet_every": 3})
    moved = [objective.maybe_update_magnet(magnet, model, u) for u in range(1, 7)]
    assert moved == [False, False, True, False, False, True]
    assert all(torch.equal(v, theta[k]) for k, v in magnet.state_dict().items())  # rate 1: a copy
    fixed, _ = build_objective({"name": "mmd", "magnet_every": 0})
    assert not any(fixed.maybe_update_magnet(magnet, model, u) for u in range(1, 10))


def test_cover_term_equals_its_formula_anneals_and_moves_a_saturated_policy():
    """l_t += cover(step) KL(u || q): turn 0 q = [0.25, 0.75] (u = 1/2), turn 1 q = [0.25, 0.25, 0.5] (u = 1/3);
    at step 30 of 60 the weight is half of cover_coef; on a saturated turn (q ~ [1, 1e-20]) the entropy
    bonus's gradient is ~0 but the cover term's is ~1/2 on each logit."""
    objective, _ = build_objective({"name": "mmd", "alpha": 0.2, "prox_coef": 0.1, "cover_coef": 0.4,
                                    "cover_decay_steps": 60})
    assert [objective.options.cover_weight(s) for s in (0, 30, 60, 90)] == pytest.approx([0.4, 0.2, 0.0, 0.0])
    output, batch = _two_turns(step=30)
    out = objective(output, batch)
    pg = [-1.0 * math.log(0.75), 0.5 * math.log(0.25)]
    q = [[0.25, 0.75], [0.25, 0.25, 0.5]]
    cover = [_kl([1 / len(t)] * len(t), t) for t in q]
    assert float(out.loss.detach()) == pytest.approx(_hand(0.2, 0.1, pg) + 0.2 * sum(cover) / 2, abs=1e-6)
    assert out.metrics["kl_cover"] == pytest.approx(sum(cover) / 2)
    assert "kl_cover" not in objective(*_two_turns(step=60)).metrics  # annealed away: the term is off

    def saturated_grad(spec):
        one_hot, _ = build_objective({"name": "mmd", "magnet": "uniform", "alpha": 0.0, **spec})
        output, batch = _two_turns()
        with torch.no_grad():  # turn 0: p = [1 - 1e-20, 1e-20] on the action byte -> q ~ [1, 1e-20]
            output.logits[0, 0, 1], output.logits[1, 0, 1] = 46.0, -46.0
        batch.advantages = torch.zeros(2)
        objective_out = one_hot(output, batch)
        objective_out.loss.backward()
        return output.logits.grad[:2, 0, 1].abs().max().item()

    assert saturated_grad({"entropy_coef": 1.0}) < 1e-15
    assert saturated_grad({"cover_coef": 1.0}) == pytest.approx(0.25, rel=1e-6)  # mean over 2 turns of ~1/2


@pytest.mark.parametrize("spec, message", [
    ({"magnet": "unifrom"}, "uniform"),
    ({"surrogate": "ppo2"}, "ppo"),
    ({"alpha": -0.1}, ">= 0"),
    ({"magnet_rate": 0.0}, "magnet_rate"),
    ({"beta": 0.1}, "beta"),
    ({"cover_coef": -1.0}, ">= 0"),
    ({"alhpa": 0.1}, "alpha"),
])
def test_bad_options_are_one_line_user_errors(spec, message):
    with pytest.raises(UserError, match=message) as err:
        build_objective({"name": "mmd", **spec})
    assert "\n" not in str(err.value)


def test_free_mode_is_a_one_line_user_error(tmp_path):
    from stlm_selfplay.selfplay.config import check_selfplay

    cfg = selfplay_config(None, tmp_path, "free", objectives="[{name: mmd}]",
                          stages="[{games: {tictactoe: 1.0}, opponents: {random: 1.0}, mode: free}]")
    with pytest.raises(UserError, match="constrained") as err:
        check_selfplay(cfg.selfplay)
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- in the loop

# a fresh ~20k-parameter STLM (no pretraining: init seeded by run.seed)
TINY = tiny_model_overrides()
KUHN = "[{games: {kuhn_poker: 1.0}, opponents: {self: 0.7, pool: 0.3}}]"


def _kuhn_config(out_dir, name, seed=0, **selfplay):
    from stlm_selfplay.config import load_config

    return load_config(None, selfplay_overrides(None, out_dir, name, stages=KUHN, **selfplay) + TINY + [f"run.seed={seed}"])


MMD_RUN = dict(updates=3, games_per_update=8, ppo_epochs=2, minibatches=2, micro_batch_turns=8,
               objectives="[{name: mmd, alpha: 0.5, magnet_every: 2, magnet_rate: 0.5, prox_coef: 0.1}]")


@pytest.mark.parametrize("values", ["sampled", "exact", "infostate"])
def test_magnet_reaches_the_batch_and_a_split_run_equals_a_whole_one(tmp_path, values):
    from _pretrain_helpers import final_weights
    from stlm_selfplay.selfplay.loop import selfplay
    from stlm_selfplay.train.metrics import read_metrics

    run = dict(MMD_RUN, objectives=MMD_RUN["objectives"].replace("}]", f", values: {values}}}]"))
    selfplay(_kuhn_config(tmp_path, "whole", **run))
    split = _kuhn_config(tmp_path, "split", **run)
    assert selfplay(split, max_updates=1)["update"] == 1  # checkpoint after update 1 (magnet included), resume
    assert selfplay(split)["update"] == 3
    rows = {name: read_metrics(tmp_path / name / "metrics.jsonl", "train") for name in ("whole", "split")}
    key = lambda r: (r["step"], r["games_digest"], r["mmd/loss"], r["mmd/kl_magnet"], r["mmd/kl_old"])  # noqa: E731
    assert [key(r) for r in rows["whole"]] == [key(r) for r in rows["split"]]
    assert min(r["mmd/kl_magnet"] for r in rows["whole"]) > 0  # the magnet's log-probs reach the batch
    # enumerated values reach the batch (the objective would raise without them); sampled runs have none
    assert all(("mmd/q_spread" in r) == (values != "sampled") for r in rows["whole"])
    if values != "sampled":
        assert min(r["mmd/q_spread"] for r in rows["whole"]) > 0
    a, b = final_weights(tmp_path / "whole"), final_weights(tmp_path / "split")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


LEARN = dict(updates=150, games_per_update=16, lr=3e-3, ppo_epochs=4, minibatches=2, eval__every=10, eval__bots="[]",
             eval__episodes=0, pool__snapshot_every=5, **{"advantages.normalize": True},
             objectives="[{name: mmd, surrogate: ppo, prox_coef: 1.0, alpha: 0.5, magnet_every: 10, entropy_coef: 0.5}]")
FLOOR = 1 / 3  # no card-blind policy is exploitable by less (Kuhn poker, chips per hand)


def kuhn_run_until(cfg, threshold: float, chunk: int = 10) -> list[float]:
    """Run `cfg` in chunks of `chunk` updates (each resumes the last) until the loop's exact
    exploitability (evaluate.py, kuhn_exploitability of the policy at temperature 1) is below
    `threshold` or the run's updates are done; returns the evaluations' exploitabilities."""
    from stlm_selfplay.runs import run_dir
    from stlm_selfplay.selfplay.loop import selfplay
    from stlm_selfplay.train.metrics import read_metrics

    done = 0
    while True:
        done = selfplay(cfg, max_updates=chunk)["update"]
        curve = [r["kuhn_poker/exploitability"] for r in read_metrics(run_dir(cfg) / "metrics.jsonl", "eval")]
        if curve[-1] < threshold or done >= cfg.selfplay.updates:
            return curve


def test_mmd_takes_a_fresh_tiny_model_below_the_card_blind_floor_on_kuhn(tmp_path):
    """A fresh ~20k-parameter model starts near uniform play (exploitability 0.42-0.51) and, like the
    pretrained ones, first settles near a card-blind policy (1/3); mmd with 8 optimizer steps per
    update (ppo surrogate, KL to the behaviour policy and to a magnet moved every 10 updates, entropy
    bonus 0.5) learns to read its card. Measured (2-core box, core 0 shared with a benchmark): below
    0.293 after 40 / 50 / 130 / 40 updates for seeds 0 / 1 / 2 / 3 (46 / 50 / 117 / 39 s); with
    entropy 0.2 seed 2 stayed at 1/3 for 150 updates. The run stops once it is below the floor with
    a margin (seed 0: ~40 updates, 15 s on an unshared core)."""
    curve = kuhn_run_until(_kuhn_config(tmp_path, "learn", seed=0, **LEARN), FLOOR - 0.04)
    assert curve[0] > FLOOR + 0.05  # the fresh model plays near uniformly: far above the floor
    assert curve[-1] < FLOOR - 0.04, curve


EXACT = dict(LEARN, objectives="[{name: mmd, values: exact, prox_coef: 1.0, alpha: 0.5, magnet_every: 10, "
                                "entropy_coef: 0.5}]")


def test_exact_values_take_a_fresh_tiny_model_below_the_card_blind_floor_on_kuhn(tmp_path):
    """The same run with values: exact (the all-action term on enumerated Q, no sampled advantage).
    Measured (2-core box, core 0 shared with 4-6 other processes): below 0.293 after 50 updates for
    seed 0 (0.421 0.333 0.344 0.321 0.304 0.254 every 10 updates), 268 s contended where the sampled
    test above took 191 s in the same pytest run (~1.4x: an exact update enumerates the rest of each
    game and does not escape the floor sooner on this fresh model). Without the entropy bonus it sat
    at exactly 1/3 for 90 updates."""
    curve = kuhn_run_until(_kuhn_config(tmp_path, "exact", seed=0, **EXACT), FLOOR - 0.04)
    assert curve[0] > FLOOR + 0.05
    assert curve[-1] < FLOOR - 0.04, curve


def test_kuhn_mmd_recipe_loads_and_passes_the_checks(repo_root):
    from stlm_selfplay.config import load_config
    from stlm_selfplay.selfplay.config import check_selfplay

    cfg = load_config(repo_root / "configs" / "selfplay" / "kuhn-mmd.yaml", ["selfplay.init_from=somewhere"])
    check_selfplay(cfg.selfplay)
    (objective,) = cfg.selfplay.objectives
    assert objective["name"] == "mmd" and objective["magnet"] == "policy" and cfg.selfplay.stages[0].mode == "constrained"
    assert objective["entropy_decay_steps"] == cfg.selfplay.updates * cfg.selfplay.ppo_epochs * cfg.selfplay.minibatches
