"""`z_loss`: keeps the softmax normalizer near 1 (PaLM, Chowdhery et al. 2022, section 5).

    log Z_t = logsumexp_v logits[t, v]
    loss    = coef * sum_t m_t (log Z_t)^2 / sum_t m_t          (m = target mask, as in `ce`)

Used beside `ce` (`objectives: [{name: ce}, {name: z_loss}]`); it adds no model outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stlm_selfplay.objectives.base import Batch, Objective, ObjectiveOutput
from stlm_selfplay.objectives.registry import register
from stlm_selfplay.options import option


@register("z_loss")
class ZLoss(Objective):
    """coef * mean over targets of (log Z)^2."""

    @dataclass
    class Options:
        coef: float = option(1e-4, "PaLM's coefficient; the objective's `weight` multiplies it again")

        def __post_init__(self):
            if self.coef < 0:
                raise ValueError(f"coef must be >= 0, got {self.coef}")

    def forward(self, output, batch: Batch) -> ObjectiveOutput:
        mask = batch.target_mask().to(output.logits.device)
        log_z = torch.logsumexp(output.logits[:, :-1].float(), dim=-1)
        mean_sq = (log_z.square() * mask).sum() / mask.sum().clamp_min(1.0)
        loss = self.options.coef * mean_sq
        with torch.no_grad():
            mean_log_z = ((log_z * mask).sum() / mask.sum().clamp_min(1.0)).item()
        return ObjectiveOutput(loss, {"loss": loss.item(), "log_z": mean_log_z, "log_z_sq": mean_sq.item()})
