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

Batch fields read (one row per (turn, legal action), built by `selfplay/batch.legal_batch`):
  input_ids / loss_mask   prompt + one legal action's bytes, the action bytes marked
  extras['groups']        [B] the row's turn (0..N-1)

Metrics: loss, legal_mass (mean over turns of sum_a p(a): the probability of writing a legal move).
"""

from __future__ import annotations

import torch

from stlm_selfplay.errors import UserError
from stlm_selfplay.objectives.base import Batch, Objective, ObjectiveOutput
from stlm_selfplay.objectives.registry import register
from stlm_selfplay.objectives.rl import action_scores, group_logsumexp


@register("legal_mass")
class LegalMass(Objective):
    """loss = -mean_t log sum_{a in legal(t)} p(a | prompt_t)."""

    def forward(self, output, batch: Batch) -> ObjectiveOutput:
        if "groups" not in batch.extras:
            raise UserError("objective 'legal_mass' reads the legal moves of free-mode self-play turns; list it in "
                            "selfplay.objectives of a run whose stages have mode: free")
        scores, groups, n_turns = action_scores(output, batch)
        lse = group_logsumexp(scores, groups, n_turns)
        loss = -lse.mean()
        return ObjectiveOutput(loss, {"loss": float(loss.detach()), "legal_mass": float(lse.detach().exp().mean())})
