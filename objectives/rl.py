"""Shared pieces of the RL objectives `reinforce`, `ppo` and `grpo`.

How the self-play loop calls an RL objective
--------------------------------------------
Like any objective: `objective(output, batch)`, with the model output (`.logits` [B, T, V]) and
a `Batch` whose RL fields are set. Two action modes, told apart by `batch.extras['groups']`:

* free (no `groups`): row i is prompt + action bytes; `loss_mask[i, t] = 1` where input_ids[i, t]
  is an action byte. The policy is the byte model at temperature tau:

      logp[i, t] = log softmax(logits[i, t] / tau)[input_ids[i, t + 1]]        shape [N, T-1]

* constrained (`groups` set): row b is prompt + ONE legal action (its bytes marked by
  `loss_mask`); `groups[b]` is the row's turn (0..N_turns-1) and `chosen[b]` marks the action
  that was played (exactly one per turn). The policy is a softmax over the legal actions:

      s_b = sum_t loss_mask[b, t+1] * log softmax(logits[b, t])[input_ids[b, t+1]]   (tau = 1)
      logp[turn] = s_chosen / tau - logsumexp_{b in turn} (s_b / tau)          shape [N_turns, 1]

  with mask 1 everywhere, so every "token" below is one turn.

Batch fields read (N = rows in free mode, turns in constrained mode; L = T-1 or 1):
  advantages    [N] (one per sequence/turn, broadcast over bytes) or [N, L] (or [N, T], aligned
                with input_ids: column t belongs to byte t, so column 0 is dropped)
  old_logprobs  log-probs when the action was sampled: [N, L] or [N, T] (free), [N_turns] or
                [N_turns, 1] (constrained). None = on-policy: ratio 1 (its gradient still flows).
  ref_logprobs  same shapes, reference (initial) policy; needed when beta != 0.
  extras['temperature']  float, the sampling temperature tau (default 1.0).
  extras['groups']       [B] long turn id of each row (constrained mode).
  extras['chosen']       [B] bool, the played action's row (constrained mode).
  extras['num_items']    optional `dapo` denominator (TRL's num_items_in_batch): the number of
                action bytes (free) or turns (constrained) in the whole update this micro-batch
                belongs to, divided by the DDP world size; default: this batch's count. For
                `grpo` and `dr_grpo` the loop divides the loss by its number of micro-steps.
  extras['max_action_len']  optional `dr_grpo` constant (see `max_completion_length`).
Values of old/ref at positions outside the mask are ignored (they may be 0 or NaN).

Per-token loss l (policy term + beta * KL) is reduced by `loss_type` (m = mask):

    grpo:    L = 1/N sum_i (sum_t m_it l_it / sum_t m_it)
    dr_grpo: L = sum_it m_it l_it / (N * max_completion_length)            (Liu et al. 2025)
    dapo:    L = sum_it m_it l_it / num_items,  num_items = sum_it m_it     (Yu et al. 2025)

then the entropy bonus: L <- L - c(step) * sum_it m_it H_it / sum_it m_it, with c annealed
linearly over the optimizer steps (`batch.step`) when entropy_decay_steps > 0:

    c(step) = c_final + (entropy_coef - c_final) * max(0, 1 - step / entropy_decay_steps)

(c_final = entropy_coef_final; c = entropy_coef throughout when entropy_decay_steps = 0).
These match TRL 1.16's `GRPOTrainer._compute_loss` (tests/objectives/test_rl_objectives.py calls it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from stlm_selfplay.errors import UserError
from stlm_selfplay.objectives.base import Batch, Objective, ObjectiveOutput
from stlm_selfplay.objectives.ce import token_nll
from stlm_selfplay.options import option

LOSS_TYPES = ("grpo", "dr_grpo", "dapo")


# ----------------------------------------------------------------------------- policy log-probs


def _temperature(batch: Batch) -> float:
    return float(batch.extras.get("temperature", 1.0))


def _action_mask(batch: Batch) -> torch.Tensor:
    if batch.loss_mask is None:
        raise ValueError("RL batches need loss_mask marking the action bytes")
    return batch.target_mask()


def action_scores(output, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Rows of candidate actions: s_b = sum_t loss_mask[b, t+1] log softmax(logits[b, t])[input_ids[b, t+1]]
    (tau = 1), the log-likelihood of row b's action bytes. Returns (s [B], groups [B], number of turns)."""
    mask = _action_mask(batch).to(output.logits.device)
    scores = -(token_nll(output.logits, batch.input_ids) * mask).sum(-1)
    groups = batch.extras["groups"].to(scores.device).long()
    return scores, groups, int(groups.max()) + 1 if groups.numel() else 0


def group_logsumexp(scores: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """lse[g] = log sum_{b: groups[b] = g} exp(scores[b]) [n_groups] (stable: the group's max first)."""
    peak = torch.full((n_groups,), float("-inf"), device=scores.device).scatter_reduce(
        0, groups, scores.detach(), "amax"
    )
    sums = torch.zeros(n_groups, device=scores.device, dtype=scores.dtype).index_add(
        0, groups, torch.exp(scores - peak[groups])
    )
    return peak + torch.log(sums)


def _turn_log_policy(output, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Constrained mode: log q_b = s_b / tau - logsumexp_{b' in turn(b)} s_b' / tau per row [B].

    Returns (log q [B], groups [B], number of turns)."""
    scores, groups, n_turns = action_scores(output, batch)
    scores = scores / _temperature(batch)
    return scores - group_logsumexp(scores, groups, n_turns)[groups], groups, n_turns


def policy_logprobs(output, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(logp, mask): [N, T-1] per action byte (free) or [N_turns, 1] per turn (constrained)."""
    if "groups" not in batch.extras:
        mask = _action_mask(batch).to(output.logits.device)
        return -token_nll(output.logits.float() / _temperature(batch), batch.input_ids), mask
    logq, groups, n_turns = _turn_log_policy(output, batch)
    chosen = batch.extras["chosen"].to(logq.device).bool()
    turns = groups[chosen]
    if turns.numel() != n_turns or torch.bincount(turns, minlength=n_turns).ne(1).any():
        raise ValueError("constrained batch: every turn needs exactly one row with chosen=True")
    logp = logq[chosen][torch.argsort(turns)]
    return logp.unsqueeze(1), torch.ones_like(logp).unsqueeze(1)


def policy_entropy(output, batch: Batch) -> torch.Tensor:
    """Entropy of the policy, shaped like `policy_logprobs`' logp.

    free:        H[i, t] = -sum_v p_v log p_v,  p = softmax(logits[i, t] / tau)
    constrained: H[turn] = -sum_{b in turn} q_b log q_b  (q: the legal-action softmax)
    """
    if "groups" not in batch.extras:
        logp = torch.log_softmax(output.logits[:, :-1].float() / _temperature(batch), dim=-1)
        return -(logp.exp() * logp).sum(-1)
    logq, groups, n_turns = _turn_log_policy(output, batch)
    h = torch.zeros(n_turns, device=logq.device, dtype=logq.dtype).index_add(0, groups, -logq.exp() * logq)
    return h.unsqueeze(1)


def per_target(x: torch.Tensor | None, logp: torch.Tensor) -> torch.Tensor | None:
    """Align a per-sequence or per-byte tensor with logp [N, L].

    [N] -> [N, 1] (broadcast over bytes); [N, L] kept; [N, L+1] (aligned with input_ids) -> x[:, 1:].
    """
    if x is None:
        return None
    x = x.to(device=logp.device, dtype=logp.dtype)
    if x.dim() == 1:
        x = x.unsqueeze(1)
    if x.shape[1] == logp.shape[1] + 1:
        x = x[:, 1:]
    if x.shape[0] != logp.shape[0] or x.shape[1] not in (1, logp.shape[1]):
        raise ValueError(f"RL tensor of shape {tuple(x.shape)} does not align with log-probs {tuple(logp.shape)}")
    return x


# ----------------------------------------------------------------------------- loss pieces


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum(m * x) / sum(m) over all elements (x broadcast to mask's shape)."""
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def reduce_loss(
    per_token: torch.Tensor, mask: torch.Tensor, loss_type: str, max_len: int = 0, num_items=None
) -> torch.Tensor:
    """Reduce a per-token loss [N, L] by `loss_type` (formulas in the module docstring)."""
    masked = per_token * mask
    if loss_type == "grpo":
        return (masked.sum(-1) / mask.sum(-1).clamp_min(1.0)).mean()
    if loss_type == "dr_grpo":
        return masked.sum() / (per_token.size(0) * (max_len or per_token.size(1)))
    if loss_type == "dapo":
        denom = mask.sum() if num_items is None else torch.as_tensor(num_items, dtype=masked.dtype)
        return masked.sum() / denom.clamp_min(1.0)
    raise ValueError(f"unknown loss_type {loss_type!r}")


def k3_kl(logp_other: torch.Tensor, logp_sample: torch.Tensor) -> torch.Tensor:
    """k3 estimate of KL(pi_sample || pi_other) from a sample of pi_sample (Schulman 2020):

        k3 = exp(o - s) - (o - s) - 1  >= 0,  o = log pi_other(x), s = log pi_sample(x)
    """
    d = logp_other - logp_sample
    return torch.exp(d) - d - 1


def clipped_surrogate(ratio, adv, epsilon_low: float, epsilon_high: float, delta: float | None = None):
    """PPO's clipped surrogate per token, and which tokens the clip deactivated:

        l = -min(r' A, clip(r, 1 - eps_low, 1 + eps_high) A),  r' = min(r, delta) if delta else r
        clip_low = r < 1 - eps_low and A < 0;  clip_high = r > 1 + eps_high and A > 0
    """
    clipped = ratio.clamp(1 - epsilon_low, 1 + epsilon_high)
    unclipped = ratio if delta is None else ratio.clamp(max=delta)
    loss = -torch.min(unclipped * adv, clipped * adv)
    low = (ratio < 1 - epsilon_low) & (adv < 0)
    high = (ratio > 1 + epsilon_high) & (adv > 0)
    return loss, {"clip_low": low, "clip_high": high, "clip_frac": low | high}


# ----------------------------------------------------------------------------- the shared objective


@dataclass
class RLOptions:
    loss_type: str = option("dapo", "reduction over action tokens: grpo (mean per sequence, then over sequences), "
                            "dr_grpo (sum / (N * max_completion_length)) or dapo (sum / action tokens in the update; "
                            "TRL's default)", choices=LOSS_TYPES)
    max_completion_length: int = option(0, "dr_grpo's constant row length; 0 = extras['max_action_len'] if given, "
                                        "else the log-prob width (T-1, or 1 if constrained)")
    beta: float = option(0.0, "weight of the KL(pi || pi_ref) penalty (k3, per token; needs ref_logprobs); 0 = no "
                         "reference policy needed")
    kl_ratio_weight: bool = option(True, "multiply the per-token KL by pi/pi_old so its gradient is the unbiased "
                                   "reverse-KL gradient (TRL's use_bias_correction_kl)")
    entropy_coef: float = option(0.0, "entropy bonus: loss -= entropy_coef * mean entropy over action tokens "
                                 "(constrained: entropy over the legal actions of each turn)")
    entropy_decay_steps: int = option(0, "> 0: anneal the bonus linearly from entropy_coef to entropy_coef_final over "
                                      "this many optimizer steps (then hold)")
    entropy_coef_final: float = option(0.0, "the bonus after entropy_decay_steps (only when > 0)")

    def entropy_weight(self, step: int) -> float:
        """c(step) of the module docstring."""
        if self.entropy_decay_steps <= 0:
            return self.entropy_coef
        left = max(0.0, 1.0 - step / self.entropy_decay_steps)
        return self.entropy_coef_final + (self.entropy_coef - self.entropy_coef_final) * left

    def __post_init__(self):
        if self.beta < 0 or self.max_completion_length < 0 or self.entropy_decay_steps < 0:
            raise UserError("RL options beta, max_completion_length and entropy_decay_steps must be >= 0")


def is_rl(objective) -> bool:
    """An RL objective (self-play trains with exactly one): a `PolicyGradientObjective`."""
    return isinstance(objective, PolicyGradientObjective)


def rl_objective_names() -> list[str]:
    """The registered RL objectives, in registration order (reinforce, ppo, grpo)."""
    from stlm_selfplay.objectives.registry import REGISTRY

    return [name for name, cls in REGISTRY.items() if issubclass(cls, PolicyGradientObjective)]


class PolicyGradientObjective(Objective):
    """Policy term per token (subclass's `policy_loss`) + beta * KL, reduced, minus entropy bonus."""

    Options = RLOptions
    needs_old_logprobs: ClassVar[bool] = False

    def policy_loss(self, logp, ratio, adv) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-token policy loss [N, L] and per-token flags to report as masked means."""
        raise NotImplementedError  # pragma: no cover - abstract

    def forward(self, output, batch: Batch) -> ObjectiveOutput:
        logp, mask = policy_logprobs(output, batch)
        entropy = policy_entropy(output, batch) if self.options.entropy_weight(batch.step) != 0.0 else None
        return self.loss_from_logprobs(logp, mask, batch, entropy)

    def loss_from_logprobs(self, logp, mask, batch: Batch, entropy=None, policy_term=None) -> ObjectiveOutput:
        """The loss given policy log-probs [N, L] (and entropy [N, L] when the bonus is on);
        `policy_term` [N, L] replaces `policy_loss`'s per-token term (mmd's values: exact)."""
        o = self.options
        if batch.advantages is None:
            raise ValueError(f"objective '{self.name}' needs batch.advantages")
        if self.needs_old_logprobs and batch.old_logprobs is None:
            raise ValueError(f"objective '{self.name}' needs batch.old_logprobs (log-probs at sampling time)")
        adv = per_target(batch.advantages, logp)
        valid = mask > 0
        old = per_target(batch.old_logprobs, logp)
        old = logp.detach() if old is None else torch.where(valid, old, logp.detach())
        ratio = torch.exp(logp - old)
        per_token, flags = self.policy_loss(logp, ratio, adv) if policy_term is None else (policy_term, {})
        metrics = {name: masked_mean(flag.float(), mask) for name, flag in flags.items()}
        if o.beta != 0.0:
            ref = per_target(batch.ref_logprobs, logp)
            if ref is None:
                raise ValueError(f"objective '{self.name}' with beta != 0 needs batch.ref_logprobs")
            kl = k3_kl(torch.where(valid, ref, logp.detach()), logp)
            if o.kl_ratio_weight:  # samples came from pi_old: weighting by pi/pi_old estimates KL(pi || ref)
                kl = kl * ratio
            per_token = per_token + o.beta * kl
            metrics["kl"] = masked_mean(kl, mask)
        max_len = o.max_completion_length or int(batch.extras.get("max_action_len", 0))
        loss = reduce_loss(per_token, mask, o.loss_type, max_len, batch.extras.get("num_items"))
        if entropy is not None:
            mean_entropy = masked_mean(entropy, mask)
            loss = loss - o.entropy_weight(batch.step) * mean_entropy
            metrics["entropy"] = mean_entropy
        with torch.no_grad():
            metrics["ratio_mean"] = masked_mean(ratio, mask)
            metrics["approx_kl"] = masked_mean(k3_kl(logp, old), mask)  # KL(pi_old || pi)
            metrics["adv_mean"] = masked_mean(adv.expand_as(logp), mask)
            metrics["tokens"] = mask.sum()
        out = {"loss": float(loss.detach())}
        out.update({k: float(v.detach()) for k, v in metrics.items()})
        return ObjectiveOutput(loss, out)
