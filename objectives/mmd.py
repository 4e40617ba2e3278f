"""`mmd`: magnetic mirror descent (Sokota et al., ICLR 2023, arXiv:2206.05825) for constrained self-play.

MMD's step at each information state s, with action values Q, a magnet policy rho, a step size eta
and a regularisation temperature alpha, is

    pi_{k+1}(. | s) = argmax_pi  <pi, Q(s, .)> - alpha KL(pi || rho) - (1/eta) KL(pi || pi_k)

whose last iterate converges to the alpha-QRE of a two-player zero-sum game (for a fixed magnet),
and to a Nash equilibrium when the magnet moves toward the policy (or alpha anneals to 0). Here
the argmax is taken by gradient steps on a per-turn loss. In constrained mode (objectives/rl.py)
every turn t has its full distribution over its legal actions b,

    q_b = softmax_b(s_b / tau),  s_b = sum of the candidate row's byte log-probs (the learner),
    rho_b                         the magnet's distribution (same formula, the magnet model), or
                                  1 / n_t (magnet: uniform, n_t legal actions),
    o_b                           the behaviour policy at rollout time (Decision.probs),

so both KL terms are exact sums, not samples:

    KL_t(q || rho) = sum_b q_b (log q_b - log rho_b)
    KL_t(q || o)   = sum_b q_b (log q_b - log o_b)

The loss per turn t. With values: sampled (a = the played action, A_t its advantage from
selfplay/advantages.py):

    surrogate: pg   l_t = -A_t log q_a
               ppo  l_t = -min(r_t A_t, clip(r_t, 1 - epsilon, 1 + epsilon) A_t),  r_t = q_a / o_a

With values: exact (Q_b = Q(h_t, b), every legal action's exact value under the rollout policy,
selfplay/action_values.py; the surrogate is not used):

    l_t = -sum_b q_b (Q_b - V_t),   V_t = sum_b o_b Q_b        (all actions, no sampled action)

With values: infostate the same l_t on Q_b = Q(I_t, b), the average of Q(h, b) over the histories
h in the mover's information state I_t (Kuhn poker: the opponent's possible cards), weighted by
chance(h) times the other seats' reach of h under the same policy (selfplay/action_values.py):
the expected return given what the mover knows, so the hidden deal no longer enters the gradient
(MMD's full feedback).

and in both cases

    l_t += alpha(step) KL_t(q || rho) + prox_coef KL_t(q || o)        (prox_coef plays 1 / eta)

so that with exact values each turn's loss is MMD's step objective itself, -<q, Q> plus the two
KLs, up to the constant V_t. The baseline V_t: since sum_b dq_b = 0, subtracting any constant
from every Q_b leaves the gradient of every sample unchanged (not only its expectation, as for a
sampled action), so it buys no variance here; it is kept because it makes l_t's policy part the
exact advantage of q over the behaviour policy o, 0 at the first optimizer step of an update and
falling as q improves on o (the `loss` metric then reads as an improvement, not as chips won).
Q is in chips, not normalised like A_t: its scale is the game's payoff scale.

reduced over turns by `loss_type` (dapo: sum over turns / turns in the update) and minus the shared
entropy bonus (RLOptions; usually 0 here: with magnet uniform, alpha KL(q || rho) = alpha (log n_t - H_t)
already is one). alpha is annealed linearly over the optimizer steps like the entropy bonus:

    alpha(step) = alpha_final + (alpha - alpha_final) max(0, 1 - step / alpha_decay_steps)

(alpha throughout when alpha_decay_steps = 0). Optionally a cover term, the KL from the uniform
policy u_t = 1 / n_t to q, annealed linearly to 0 over cover_decay_steps:

    l_t += cover(step) KL_t(u || q) = cover(step) (-(1 / n_t) sum_b log q_b - log n_t),
    cover(step) = cover_coef max(0, 1 - step / cover_decay_steps)        (cover_coef throughout at 0)

Why beside the entropy bonus (alpha KL(q || uniform) and entropy_coef): their gradients vanish as
q saturates (dH / ds_b = -q_b (log q_b + H) -> 0 when some q_b -> 0), so a policy left one-hot, e.g.
Kuhn's after a tic-tac-toe stage trained the shared bytes (the quickstart), gets no gradient at all
in float32, while d KL(u || q) / ds_b = q_b - 1 / n_t stays ~ -1 / n_t for a starved action: the
cover term pulls it back to mixing, then fades so that MMD's own fixed point is unchanged.

With a single optimizer step per update (ppo_epochs =
minibatches = 1) q = o at that step, so KL(q || o) and its gradient vanish: prox_coef only matters
across several epochs / minibatches.

The magnet (magnet: policy) is a frozen copy of the learner (the loop's reference model, made at
update 0, saved in every checkpoint): after every `magnet_every` updates, parameter-wise

    theta_rho <- (1 - magnet_rate) theta_rho + magnet_rate theta                    (update_magnet)

magnet_rate = 1 copies the policy (the "moving magnet" as a sequence of proximal problems, each
solved for magnet_every updates); magnet_rate < 1 is an exponential moving average in parameter
space (not the policy-space geometric mixture rho^(1-r) pi^r, which a network cannot hold exactly).
magnet_every = 0 keeps the initial policy as the magnet for the whole run.

Batch fields read (constrained self-play batches, selfplay/batch.py; beside objectives/rl.py's):
  extras['ref_logq']   [B] log rho_b of each candidate row under the magnet model (selfplay/update.py)
  extras['old_probs']  [B] o_b of each candidate row (each turn's rows sum to 1; needed if prox_coef > 0
                       or values: exact / infostate)
  extras['action_values']  [B] Q_b of each candidate row (values: exact / infostate; Decision.action_values)

Metrics (besides the RL ones): kl_magnet (mean_t KL_t(q || rho)), kl_old, alpha, entropy_turn,
kl_cover (mean_t KL_t(u || q), when cover_coef > 0);
values: exact / infostate also q_spread (mean_t sum_b o_b |Q_b - V_t|, how much the choice matters).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stlm_selfplay.errors import UserError
from stlm_selfplay.objectives.base import Batch, ObjectiveOutput
from stlm_selfplay.objectives.registry import register
from stlm_selfplay.objectives.rl import (PolicyGradientObjective, RLOptions, _turn_log_policy, clipped_surrogate,
                                         policy_entropy, reduce_loss)
from stlm_selfplay.options import option

MAGNETS = ("policy", "uniform")
SURROGATES = ("pg", "ppo")
VALUES = ("sampled", "exact", "infostate")


def turn_kl(logq: torch.Tensor, logr: torch.Tensor, groups: torch.Tensor, n_turns: int) -> torch.Tensor:
    """KL_t(q || r) = sum_{b in turn t} q_b (log q_b - log r_b), per turn [n_turns], from per-row log-probs [B]."""
    return torch.zeros(n_turns, device=logq.device, dtype=logq.dtype).index_add(0, groups, logq.exp() * (logq - logr))


def exact_policy_term(logq: torch.Tensor, values: torch.Tensor, old_probs: torch.Tensor, groups: torch.Tensor,
                      n_turns: int) -> tuple[torch.Tensor, torch.Tensor]:
    """values: exact and infostate. (l_t = -sum_b q_b (Q_b - V_t) [n_turns], V_t = sum_b o_b Q_b [n_turns]) from
    per-row log q, Q and o [B]."""
    zeros = torch.zeros(n_turns, device=logq.device, dtype=logq.dtype)
    v = zeros.index_add(0, groups, old_probs * values)
    return -zeros.index_add(0, groups, logq.exp() * (values - v[groups])), v


def uniform_logq(groups: torch.Tensor, n_turns: int) -> torch.Tensor:
    """log(1 / n_t) for each row [B] of turn t with n_t rows."""
    return -torch.log(torch.bincount(groups, minlength=n_turns).double())[groups]


@torch.no_grad()
def update_magnet(magnet: torch.nn.Module, model: torch.nn.Module, rate: float) -> None:
    """theta_rho <- (1 - rate) theta_rho + rate theta for every floating tensor of the state dict
    (others copied); rate = 1 copies the model."""
    source = model.state_dict()
    for name, tensor in magnet.state_dict().items():
        if tensor.is_floating_point() and rate != 1.0:
            tensor.lerp_(source[name].to(tensor.dtype), rate)
        else:
            tensor.copy_(source[name])


@register("mmd")
class MMD(PolicyGradientObjective):
    """loss = reduce(policy term + alpha KL(q || rho) + prox_coef KL(q || o)) - entropy_coef * H."""

    @dataclass
    class Options(RLOptions):
        alpha: float = option(0.1, "weight of KL(pi || magnet) per turn (MMD's regularisation temperature)")
        alpha_final: float = option(0.0, "alpha after alpha_decay_steps (only when alpha_decay_steps > 0)")
        alpha_decay_steps: int = option(0, "> 0: anneal alpha linearly to alpha_final over this many optimizer steps")
        magnet: str = option("policy", "policy (a frozen copy of the learner, moved by magnet_every/magnet_rate) or "
                             "uniform (1 / legal actions: alpha KL is an entropy bonus; no model kept)", choices=MAGNETS)
        magnet_every: int = option(10, "updates between magnet moves; 0 = the magnet stays the initial policy")
        magnet_rate: float = option(1.0, "each move: theta_rho <- (1 - rate) theta_rho + rate theta (1 = copy)")
        prox_coef: float = option(0.0, "weight of KL(pi || pi_behaviour) per turn (MMD's 1 / eta); only acts when an "
                                  "update takes several optimizer steps (ppo_epochs, minibatches)")
        surrogate: str = option("pg", "pg (-A log pi(a)) or ppo (clipped ratio pi(a) / pi_behaviour(a))",
                                choices=SURROGATES)
        epsilon: float = option(0.2, "ppo surrogate's clip range")
        cover_coef: float = option(0.0, "weight of KL(uniform || pi) per turn at step 0, annealed linearly to 0 over "
                                   "cover_decay_steps: unlike the entropy bonus its gradient stays ~1 / n for an action "
                                   "of probability ~0, so it brings a saturated (one-hot) policy back to mixing, e.g. "
                                   "a game's policy left deterministic by an earlier stage on another game; 0 = off")
        cover_decay_steps: int = option(0, "optimizer steps over which cover_coef falls to 0 (0 = cover_coef "
                                        "throughout)")
        values: str = option("sampled", "policy term: sampled (the surrogate on the played action with its advantage "
                             "from selfplay.advantages), exact (-sum_b q_b (Q_b - V): every legal action's exact "
                             "value Q(h, b) in the true history h by enumerating the rest of the game under the "
                             "learner's policy, selfplay/action_values.py; small games such as kuhn_poker only; needs "
                             "surrogate: pg, which it replaces) or infostate (the same term on Q(I, b) = "
                             "sum_{h in I} w(h) Q(h, b) / sum_h w(h), w(h) = chance(h) * the other seats' reach of h "
                             "under the policy: averaged over the histories the mover cannot tell apart, so the "
                             "hidden deal leaves the gradient; games listing Game.information_deals only)",
                             choices=VALUES)

        def __post_init__(self):
            super().__post_init__()
            if self.values != "sampled" and self.surrogate != "pg":
                raise UserError(f"mmd values: {self.values} replaces the sampled surrogate by the all-action term; set "
                                "surrogate: pg (prox_coef > 0 keeps several optimizer steps near the rollout policy)")
            if min(self.alpha, self.alpha_final, self.prox_coef, self.alpha_decay_steps, self.magnet_every,
                   self.cover_coef, self.cover_decay_steps) < 0:
                raise UserError("mmd options alpha, alpha_final, prox_coef, alpha_decay_steps, magnet_every, cover_coef "
                                "and cover_decay_steps must be >= 0")
            if not 0.0 < self.magnet_rate <= 1.0 or self.epsilon <= 0:
                raise UserError(f"mmd needs 0 < magnet_rate <= 1 and epsilon > 0, got magnet_rate={self.magnet_rate}, "
                                f"epsilon={self.epsilon}")
            if self.beta != 0.0:
                raise UserError("mmd has no beta: its KL is to the magnet (alpha); set beta: 0")

        def alpha_weight(self, step: int) -> float:
            """alpha(step) of the module docstring."""
            if self.alpha_decay_steps <= 0:
                return self.alpha
            left = max(0.0, 1.0 - step / self.alpha_decay_steps)
            return self.alpha_final + (self.alpha - self.alpha_final) * left

        def cover_weight(self, step: int) -> float:
            """cover(step) of the module docstring."""
            if self.cover_decay_steps <= 0:
                return self.cover_coef
            return self.cover_coef * max(0.0, 1.0 - step / self.cover_decay_steps)

    @property
    def needs_old_logprobs(self) -> bool:  # the ppo surrogate's ratio
        return self.options.surrogate == "ppo"

    def needs_magnet_model(self) -> bool:
        """Whether the loop keeps a magnet model (its `reference`) for this objective."""
        return self.options.magnet == "policy"

    def maybe_update_magnet(self, magnet: torch.nn.Module | None, model: torch.nn.Module, update: int) -> bool:
        """After update `update` (1-based count of updates done): move the magnet if it is due."""
        o = self.options
        if magnet is None or o.magnet != "policy" or o.magnet_every == 0 or update % o.magnet_every:
            return False
        update_magnet(magnet, model, o.magnet_rate)
        return True

    def policy_loss(self, logp, ratio, adv):
        if self.options.surrogate == "ppo":
            return clipped_surrogate(ratio, adv, self.options.epsilon, self.options.epsilon)
        return -adv * logp, {}

    def forward(self, output, batch: Batch) -> ObjectiveOutput:
        if "groups" not in batch.extras:
            raise UserError("objective 'mmd' needs constrained mode (stages' mode: constrained): its KL terms are "
                            "exact sums over each turn's legal actions")
        o = self.options
        logq, groups, n_turns = _turn_log_policy(output, batch)
        chosen = batch.extras["chosen"].to(logq.device).bool()
        turns = groups[chosen]
        if turns.numel() != n_turns or torch.bincount(turns, minlength=n_turns).ne(1).any():
            raise ValueError("constrained batch: every turn needs exactly one row with chosen=True")
        logp = logq[chosen][torch.argsort(turns)].unsqueeze(1)  # [N_turns, 1], turn order
        mask = torch.ones_like(logp)
        entropy = policy_entropy(output, batch) if o.entropy_weight(batch.step) != 0.0 else None
        term, spread = None, None
        if o.values != "sampled":
            if "action_values" not in batch.extras or "old_probs" not in batch.extras:
                raise ValueError(f"objective 'mmd' with values: {o.values} needs batch.extras['action_values'] and "
                                 "['old_probs'] (selfplay/action_values.py fills them)")
            values = batch.extras["action_values"].to(logq.device, logq.dtype)
            old_probs = batch.extras["old_probs"].to(logq.device, logq.dtype)
            term, v = exact_policy_term(logq, values, old_probs, groups, n_turns)
            spread = torch.zeros_like(v).index_add(0, groups, old_probs * (values - v[groups]).abs())
            term = term.unsqueeze(1)
        out = self.loss_from_logprobs(logp, mask, batch, entropy, policy_term=term)
        loss, metrics = out.loss, out.metrics
        if spread is not None:
            metrics["q_spread"] = float(spread.mean())
        max_len = o.max_completion_length or int(batch.extras.get("max_action_len", 0))
        num_items = batch.extras.get("num_items")
        alpha = o.alpha_weight(batch.step)
        if o.magnet == "uniform":
            log_rho = uniform_logq(groups, n_turns).to(logq.dtype)
        elif "ref_logq" in batch.extras:
            log_rho = batch.extras["ref_logq"].to(logq.device, logq.dtype)
        else:
            raise ValueError("objective 'mmd' with magnet: policy needs batch.extras['ref_logq'] (the magnet's "
                             "per-candidate log-probs)")
        kl_magnet = turn_kl(logq, log_rho, groups, n_turns).unsqueeze(1)
        loss = loss + alpha * reduce_loss(kl_magnet, mask, o.loss_type, max_len, num_items)
        metrics.update(kl_magnet=float(kl_magnet.detach().mean()), alpha=alpha,
                       entropy_turn=float(-(logq.exp() * logq).detach().sum() / max(n_turns, 1)))
        cover = o.cover_weight(batch.step)
        if cover > 0:  # KL_t(u || q) = -(1 / n_t) sum_b log q_b - log n_t
            kl_cover = turn_kl(uniform_logq(groups, n_turns).to(logq.dtype), logq, groups, n_turns).unsqueeze(1)
            loss = loss + cover * reduce_loss(kl_cover, mask, o.loss_type, max_len, num_items)
            metrics.update(kl_cover=float(kl_cover.detach().mean()), cover=cover)
        if o.prox_coef > 0:
            if "old_probs" not in batch.extras:
                raise ValueError("objective 'mmd' with prox_coef > 0 needs batch.extras['old_probs']")
            log_old = torch.log(batch.extras["old_probs"].to(logq.device, logq.dtype).clamp_min(1e-30))
            kl_old = turn_kl(logq, log_old, groups, n_turns).unsqueeze(1)
            loss = loss + o.prox_coef * reduce_loss(kl_old, mask, o.loss_type, max_len, num_items)
            metrics["kl_old"] = float(kl_old.detach().mean())
        metrics["loss"] = float(loss.detach())
        return ObjectiveOutput(loss, metrics)
