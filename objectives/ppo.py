"""`ppo`: PPO's clipped surrogate (Schulman et al. 2017), value-free (advantages are given).

    r_t = exp(log pi(a_t|s_t) - log pi_old(a_t|s_t))
    l_t = -min(r_t A_t, clip(r_t, 1 - epsilon, 1 + epsilon_high) A_t)

reduced over action tokens by `loss_type`, plus the shared k3 KL and entropy bonus
(objectives/rl.py documents the batch it reads). The self-play loop runs several epochs of
minibatches over one collection of turns, so `batch.old_logprobs` (the log-probs recorded at
sampling time) is required. Metrics: clip_frac (tokens whose gradient the clip removed),
clip_low, clip_high, ratio_mean, approx_kl (k3 of KL(pi_old || pi)).
"""

from __future__ import annotations

from dataclasses import dataclass

from stlm_selfplay.errors import UserError
from stlm_selfplay.objectives.registry import register
from stlm_selfplay.objectives.rl import PolicyGradientObjective, RLOptions, clipped_surrogate
from stlm_selfplay.options import option


@register("ppo")
class PPO(PolicyGradientObjective):
    """loss = reduce(-min(r A, clip(r) A)) (+ beta * KL) - entropy_coef * H."""

    needs_old_logprobs = True

    @dataclass
    class Options(RLOptions):
        epsilon: float = option(0.2, "lower clip range: ratios below 1 - epsilon stop pushing down")
        epsilon_high: float | None = option(None, "upper clip range (None = epsilon); DAPO's clip-higher uses 0.28 to "
                                            "keep exploration alive")

        def __post_init__(self):
            super().__post_init__()
            if self.epsilon <= 0 or (self.epsilon_high is not None and self.epsilon_high <= 0):
                raise UserError("RL options epsilon and epsilon_high must be > 0")

    def clip_range(self) -> tuple[float, float, float | None]:
        """(epsilon_low, epsilon_high, delta) for `clipped_surrogate`."""
        o = self.options
        return o.epsilon, o.epsilon if o.epsilon_high is None else o.epsilon_high, None

    def policy_loss(self, logp, ratio, adv):
        return clipped_surrogate(ratio, adv, *self.clip_range())
