"""`legal_mass`: free-text self-play's legality term, the log of the probability of writing a legal move.

    L = -1/N sum_t log sum_{a in legal(t)} p(format_action(a) | prompt_t)
      = -1/N sum_t logsumexp_{b in turn t} s_b,   s_b = sum of log p over the bytes of candidate b (tau = 1)

Its gradient for turn t is -sum_{a legal} q_t(a) grad log p(a | prompt_t), q_t(a) = p(a) / sum_{a'
legal} p(a'): every legal move's likelihood is raised in proportion to its share of the legal mass
(the constrained policy's distribution), so the term moves mass from illegal strings (taken cells,
unparsable text) onto the legal moves without preferring one legal move over another; which legal
move is better stays the RL objective's job. Why free play needs it: a REINFORCE update sees an
illegal move only when it samples one, and as a -1 like any lost game; the policy then sharpens onto
board-blind favourite cells and collapses (benchmarks/RESULTS.md, "Free-text self-play that does not
collapse").

Option `greedy_weight` > 0 adds a hinge aimed at greedy play itself (the evaluation decodes greedily):

    L += greedy_weight * 1/N sum_t max(0, m + log(1 - M_t) - max_{a legal} s_a),   M_t = sum_{a legal} p(a)

(m = `greedy_margin`). Every illegal string, taken cell or unparsable text, has p <= 1 - M_t, so where the
hinge is zero the most likely legal move beats every illegal string by the factor e^m: the greedy move
is legal. It needs no illegal rows. Where it is active its gradient raises M_t (weight M_t / (1 - M_t)
on grad log M_t) and the favourite legal move; it is zero on the turns that are already safe, so it
leaves the choice among legal moves to the RL objective there. Why: with the mass term alone, free
self-play still has transient excursions where one illegal cell is the argmax while the legal cells
share more mass between them (benchmarks/RESULTS.md, "cosine lr and legal_mass 2").

Batch fields read (one row per (turn, legal action), built by `selfplay/batch.legal_batch`):
  input_ids / loss_mask   prompt + one legal action's bytes, the action bytes marked
  extras['groups']        [B] the row's turn (0..N-1)

Metrics: loss, legal_mass (mean over turns of sum_a p(a): the probability of writing a legal move),
greedy_risk (the share of turns where the hinge is active; logged with greedy_weight > 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stlm_selfplay.errors import UserError
from stlm_selfplay.objectives.base import Batch, Objective, ObjectiveOutput
from stlm_selfplay.objectives.registry import register
from stlm_selfplay.objectives.rl import action_scores, group_logsumexp
from stlm_selfplay.options import option


def greedy_hinge(lse: torch.Tensor, best: torch.Tensor, margin: float) -> torch.Tensor:
    """max(0, m + log(1 - M_t) - best_t) [N] from lse_t = log M_t and best_t = max_{a legal} s_a.

    log(1 - M) = log(-expm1(log M)), with log M held below -1e-6 so that M = 1 in float rounding gives a
    large finite log(1 - M) (hinge zero, gradient zero) rather than log(0)."""
    log_rest = torch.log(-torch.expm1(lse.clamp(max=-1e-6)))
    return torch.relu(margin + log_rest - best)


@register("legal_mass")
class LegalMass(Objective):
    """loss = -mean_t log sum_{a in legal(t)} p(a | prompt_t) [+ greedy_weight * the greedy hinge]."""

    @dataclass
    class Options:
        greedy_weight: float = option(0.0, "weight of the greedy-legality hinge max(0, m + log(1 - M_t) - max_a "
                                      "log p(a)) beside the mass term (0 = off): keeps the most likely legal move "
                                      "ahead of every illegal string, so that greedy play is legal")
        greedy_margin: float = option(0.693, "m of the hinge: the most likely legal move must be e^m times the "
                                      "whole non-legal mass (0.693: twice)")

    def forward(self, output, batch: Batch) -> ObjectiveOutput:
        if "groups" not in batch.extras:
            raise UserError("objective 'legal_mass' reads the legal moves of free-mode self-play turns; list it in "
                            "selfplay.objectives of a run whose stages have mode: free")
        scores, groups, n_turns = action_scores(output, batch)
        lse = group_logsumexp(scores, groups, n_turns)
        loss = -lse.mean()
        metrics = {"legal_mass": float(lse.detach().exp().mean())}
        if self.options.greedy_weight > 0:
            best = torch.full_like(lse, float("-inf")).scatter_reduce(0, groups, scores, "amax")
            hinge = greedy_hinge(lse, best, self.options.greedy_margin)
            loss = loss + self.options.greedy_weight * hinge.mean()
            metrics["greedy_risk"] = float((hinge.detach() > 0).float().mean())
        return ObjectiveOutput(loss, {"loss": float(loss.detach()), **metrics})
