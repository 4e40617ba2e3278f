"""configs/selfplay/kuhn.yaml, the Kuhn self-play recipe bench_selfplay runs, loads and keeps the
pieces that moved the exploitability below the card-blind floor of 1/3 (benchmarks/RESULTS.md);
so do kuhn-exact.yaml and kuhn-infostate.yaml (mmd on exact / information-state action values)."""

from __future__ import annotations

from stlm_selfplay.config import load_config
from stlm_selfplay.selfplay.config import check_selfplay


def test_kuhn_recipe_loads_with_entropy_bonus_and_no_bot_in_the_mix(repo_root):
    cfg = load_config(repo_root / "configs" / "selfplay" / "kuhn.yaml", ["selfplay.init_from=somewhere"])
    check_selfplay(cfg.selfplay)
    (stage,) = cfg.selfplay.stages
    assert stage.games == {"kuhn_poker": 1.0} and set(stage.opponents) == {"self", "pool"}
    assert stage.temperature == 1.0  # kuhn_table measures the policy at temperature 1
    (objective,) = cfg.selfplay.objectives
    assert objective["name"] == "reinforce" and objective["entropy_coef"] > 0


def test_kuhn_exact_recipe_loads_and_uses_exact_values_on_a_schedule_laid_out_over_its_updates(repo_root):
    cfg = load_config(repo_root / "configs" / "selfplay" / "kuhn-exact.yaml", ["selfplay.init_from=somewhere"])
    check_selfplay(cfg.selfplay)
    (objective,) = cfg.selfplay.objectives
    assert objective["name"] == "mmd" and objective["values"] == "exact" and objective["surrogate"] == "pg"
    assert objective["entropy_coef"] > 0  # without it the policy saturates card-blind (RESULTS.md)
    assert objective["entropy_decay_steps"] == cfg.selfplay.updates * cfg.selfplay.ppo_epochs * cfg.selfplay.minibatches
    (stage,) = cfg.selfplay.stages
    assert stage.games == {"kuhn_poker": 1.0} and stage.mode == "constrained" and stage.temperature == 1.0


def test_kuhn_infostate_recipe_loads_and_anneals_its_entropy_bonus_to_zero_over_its_updates(repo_root):
    cfg = load_config(repo_root / "configs" / "selfplay" / "kuhn-infostate.yaml", ["selfplay.init_from=somewhere"])
    check_selfplay(cfg.selfplay)
    (objective,) = cfg.selfplay.objectives
    assert objective["name"] == "mmd" and objective["values"] == "infostate" and objective["surrogate"] == "pg"
    assert objective["entropy_coef"] > 0 and objective["entropy_coef_final"] == 0.0
    assert objective["entropy_decay_steps"] == cfg.selfplay.updates * cfg.selfplay.ppo_epochs * cfg.selfplay.minibatches
    (stage,) = cfg.selfplay.stages
    assert stage.games == {"kuhn_poker": 1.0} and stage.mode == "constrained" and stage.temperature == 1.0


def test_entropy_bonus_anneals_linearly_over_optimizer_steps():
    """c(step) = c_final + (c0 - c_final) * max(0, 1 - step / decay): with c0 = 0.5, c_final = 0.1
    and decay = 100, c = 0.5, 0.3, 0.1, 0.1 at steps 0, 50, 100, 500. With zero advantages the
    reinforce loss is -c(step) * mean entropy: entropies 0.6 and 0.2 per turn -> -0.4 c(step)."""
    import pytest
    import torch

    from stlm_selfplay.objectives.base import Batch
    from stlm_selfplay.objectives.registry import build_objective

    objective, _ = build_objective({"name": "reinforce", "entropy_coef": 0.5, "entropy_coef_final": 0.1,
                                    "entropy_decay_steps": 100})
    logp, mask = torch.log(torch.tensor([[0.5], [0.25]])), torch.ones(2, 1)
    entropy = torch.tensor([[0.6], [0.2]])
    for step, coef in ((0, 0.5), (50, 0.3), (100, 0.1), (500, 0.1)):
        batch = Batch(input_ids=torch.zeros(2, 3, dtype=torch.long), step=step, advantages=torch.zeros(2))
        out = objective.loss_from_logprobs(logp, mask, batch, entropy)
        assert float(out.loss) == pytest.approx(-0.4 * coef, abs=1e-7)
    plain, _ = build_objective({"name": "reinforce", "entropy_coef": 0.5})  # no decay: constant
    batch = Batch(input_ids=torch.zeros(2, 3, dtype=torch.long), step=10_000, advantages=torch.zeros(2))
    assert float(plain.loss_from_logprobs(logp, mask, batch, entropy).loss) == pytest.approx(-0.2, abs=1e-7)
