"""`reinforce`: the score-function policy gradient (Williams 1992) with any advantage.

    l_t = -A_t * log pi(a_t | s_t)

reduced over action tokens by `loss_type`, plus the optional k3 KL to a reference policy and
entropy bonus shared by every RL objective (objectives/rl.py documents the batch it reads).
The advantage A carries the baseline (RAE, RLOO, group: stlm_selfplay/selfplay/advantages.py);
old log-probs are not used by the policy term (only for the approx_kl and ratio metrics).
"""

from __future__ import annotations

from stlm_selfplay.objectives.registry import register
from stlm_selfplay.objectives.rl import PolicyGradientObjective


@register("reinforce")
class Reinforce(PolicyGradientObjective):
    """loss = reduce(-A * logp) (+ beta * KL) - entropy_coef * H."""

    def policy_loss(self, logp, ratio, adv):
        return -adv * logp, {}
