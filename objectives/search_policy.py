"""`search_policy`: distil a search's root visit distribution into the policy (AlphaZero).

    L = mean over turns t of  -sum_a pi_search(a | s_t) log pi_theta(a | s_t)

pi_theta is the constrained softmax over the turn's legal actions, log q_b = s_b / tau -
logsumexp_{b' in turn(b)} s_b' / tau with s_b the summed byte log-probs of candidate row b
(the same `_turn_log_policy` the RL objectives use, objectives/rl.py); pi_search is the root
visit distribution N(s,a) / sum_b N(s,b) of the PUCT search that chose the move
(selfplay/search.py). The value head is trained on the game outcome by the `value` objective.

Batch fields read (constrained self-play batches, selfplay/batch.py):
  extras['groups']        [B] the turn of each candidate row
  extras['search_probs']  [B] pi_search of each candidate row (each turn's rows sum to 1)
  extras['temperature']   tau (optional, default 1)

Metrics: loss, kl (KL(pi_search || pi_theta) = loss - H(pi_search)), target_entropy, turns.
"""

from __future__ import annotations

import torch

from stlm_selfplay.errors import UserError
from stlm_selfplay.objectives.base import Batch, Objective, ObjectiveOutput
from stlm_selfplay.objectives.registry import register
from stlm_selfplay.objectives.rl import _turn_log_policy


def search_cross_entropy(logq: torch.Tensor, target: torch.Tensor, groups: torch.Tensor, n_turns: int):
    """(mean over turns of -sum_b target_b log q_b, mean over turns of H(target)) from per-row tensors."""
    per_turn = torch.zeros(n_turns, device=logq.device, dtype=logq.dtype).index_add(0, groups, -target * logq)
    plogp = torch.where(target > 0, target * torch.log(target.clamp_min(1e-30)), torch.zeros_like(target))
    entropy = torch.zeros(n_turns, device=logq.device, dtype=logq.dtype).index_add(0, groups, -plogp)
    return per_turn.mean(), entropy.mean()


@register("search_policy")
class SearchPolicyLoss(Objective):
    """loss = mean_t CE(pi_search(. | s_t), pi_theta(. | s_t)) over each turn's legal actions."""

    def forward(self, output, batch: Batch) -> ObjectiveOutput:
        if "search_probs" not in batch.extras or "groups" not in batch.extras:
            raise UserError("objective 'search_policy' trains on search visit targets: set selfplay.search.simulations "
                            "> 0 (constrained mode)")
        logq, groups, n_turns = _turn_log_policy(output, batch)
        target = batch.extras["search_probs"].to(logq.device, logq.dtype)
        loss, entropy = search_cross_entropy(logq, target, groups, n_turns)
        metrics = {"loss": float(loss.detach()), "kl": float(loss.detach() - entropy),
                   "target_entropy": float(entropy), "turns": float(n_turns)}
        return ObjectiveOutput(loss, metrics)
