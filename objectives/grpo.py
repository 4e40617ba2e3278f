"""`grpo`: the GRPO loss exactly as TRL 1.16's `GRPOTrainer` computes it (Shao et al. 2024).

    r_t = exp(log pi - log pi_old)            (pi_old = pi, detached, when old_logprobs is None)
    l_t = -min(r'_t A, clip(r_t, 1 - epsilon, 1 + epsilon_high) A) + beta * r_t * KL3_t
    r'_t = min(r_t, delta) if delta is set (two-sided clipping, INTELLECT-2), else r_t
    KL3_t = exp(log pi_ref - log pi) - (log pi_ref - log pi) - 1

reduced by `loss_type` (grpo | dr_grpo | dapo; formulas in objectives/rl.py), then
loss -= entropy_coef * mean entropy. It is `ppo` with TRL's extra option (`delta`), with
old log-probs optional (a single on-policy step), and with TRL's defaults. The advantages are
usually group-relative (`group` estimator in stlm_selfplay/selfplay/advantages.py).
tests/objectives/test_rl_objectives.py checks equality with TRL's own `_compute_loss` for each loss type.
"""

from __future__ import annotations

from dataclasses import dataclass

from stlm_selfplay.errors import UserError
from stlm_selfplay.objectives.ppo import PPO
from stlm_selfplay.objectives.registry import register
from stlm_selfplay.options import option


@register("grpo")
class GRPO(PPO):
    """TRL-equivalent GRPO / Dr. GRPO / DAPO loss."""

    needs_old_logprobs = False

    @dataclass
    class Options(PPO.Options):
        delta: float | None = option(None, "upper bound on the unclipped ratio (two-sided clipping, INTELLECT-2); "
                                     "None = standard clipping; use > 1 + epsilon")

        def __post_init__(self):
            super().__post_init__()
            if self.delta is not None and self.delta <= 1.0:
                raise UserError(f"objective 'grpo': delta must be > 1 (got {self.delta})")

    def clip_range(self):
        low, high, _ = super().clip_range()
        return low, high, self.options.delta
