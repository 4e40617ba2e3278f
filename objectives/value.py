"""`value`: PPO's clipped value loss for the value head (model/value_head.py).

    L = 0.5 * mean_t max((V_t - R_t)^2, (V_old,t + clip(V_t - V_old,t, -eps, eps) - R_t)^2)

(eps = `epsilon`; eps <= 0 or None, or no V_old: the plain L = 0.5 * mean_t (V_t - R_t)^2).
V_t is the current model's value of turn t's prompt, V_old,t its value at rollout time and R_t
the turn's return (the `gae` estimator's R_t = A_t + V_old,t; other estimators: the reward-to-go).

Batch fields read (one entry per turn; the self-play update fills them, selfplay/update.py):
  extras['values']      [N] V_t, with gradient (`state_values` of the turns' prompts)
  extras['returns']     [N] R_t
  extras['old_values']  [N] V_old,t (optional; needed for the clip)

Metrics: loss, value_mean, return_mean, clip_frac (turns where the clipped term is the larger).
Value calibration, `explained_variance` (below), is logged by the self-play loop once per update.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stlm_selfplay.errors import UserError
from stlm_selfplay.objectives.base import Batch, Objective, ObjectiveOutput
from stlm_selfplay.objectives.registry import register
from stlm_selfplay.options import option


def clipped_value_loss(values, returns, old_values=None, epsilon: float | None = 0.2):
    """(L of the module docstring, per-turn bool: the clipped term was the larger)."""
    unclipped = (values - returns) ** 2
    if old_values is None or epsilon is None or epsilon <= 0:
        return 0.5 * unclipped.mean(), torch.zeros_like(unclipped, dtype=torch.bool)
    clipped = (old_values + (values - old_values).clamp(-epsilon, epsilon) - returns) ** 2
    return 0.5 * torch.maximum(unclipped, clipped).mean(), clipped > unclipped


def explained_variance(returns, values) -> float:
    """1 - Var(R - V) / Var(R) (1 = perfect values, 0 = no better than a constant; NaN when Var(R) = 0)."""
    returns = torch.as_tensor(returns, dtype=torch.float64)
    values = torch.as_tensor(values, dtype=torch.float64)
    var = returns.var(unbiased=False)
    return float("nan") if returns.numel() == 0 or var == 0 else float(1 - (returns - values).var(unbiased=False) / var)


@register("value")
class Value(Objective):
    """loss = 0.5 * mean(max((V - R)^2, (V_old + clip(V - V_old) - R)^2))."""

    @dataclass
    class Options:
        epsilon: float | None = option(0.2, "clip range of V - V_old (PPO, CleanRL's clip_vloss); <= 0 or None = "
                                       "unclipped")

    def forward(self, output, batch: Batch) -> ObjectiveOutput:
        if "values" not in batch.extras or "returns" not in batch.extras:
            raise UserError("objective 'value' trains a value head on self-play turns (batch.extras['values'] and "
                            "['returns']); list it in selfplay.objectives with a model that has value_head: true")
        values = batch.extras["values"].float()
        returns = batch.extras["returns"].to(values.device, torch.float32)
        old = batch.extras.get("old_values")
        old = None if old is None else old.to(values.device, torch.float32)
        loss, clipped = clipped_value_loss(values, returns, old, self.options.epsilon)
        with torch.no_grad():
            metrics = {"loss": float(loss), "value_mean": float(values.mean()), "return_mean": float(returns.mean()),
                       "clip_frac": float(clipped.float().mean())}
        return ObjectiveOutput(loss, metrics)
