"""`mtp`: multi-byte prediction from older trunk states (Gloeckle et al. 2024, "Better & Faster
Large Language Models via Multi-token Prediction"), summed over the extra heads:

    loss = w(t) * sum_{i=1..n} CE_i,     CE_i = sum_t m_t nll_i(t) / sum_t m_t   (as `ce`)
    w(t) = 1 (anneal: none) | 1 - t/T (linear) | (1 + cos(pi t/T)) / 2 (cosine)

Head i (1-based) maps the trunk state of patch k to the local decoder's condition for patch
k+1+i (P=1: predicts byte t+1+i from the state at byte t). Model contract: `output.mtp_logits` is
a list/tuple of n tensors [B, T, V] aligned exactly like `output.logits` (entry t predicts
input_ids[:, t+1]), head i's entry computed with the condition from the trunk state i patches
older than the ordinary one (the decoder's start condition where there is none). Used beside
`ce`, which is head 0: `objectives: [{name: ce}, {name: mtp, anneal: linear}]`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from stlm_selfplay.errors import UserError
from stlm_selfplay.objectives.base import Batch, Objective, ObjectiveOutput
from stlm_selfplay.objectives.ce import bits_per_byte, byte_target_mask, token_nll
from stlm_selfplay.objectives.registry import register
from stlm_selfplay.options import option

ANNEALS = ("none", "linear", "cosine")


def anneal_weight(kind: str, step: int, total_steps: int) -> float:
    """w(t) of the module docstring."""
    frac = min(step / max(total_steps, 1), 1.0)
    return {"none": 1.0, "linear": 1.0 - frac, "cosine": 0.5 * (1.0 + math.cos(math.pi * frac))}[kind]


@register("mtp")
class MultiBytePrediction(Objective):
    """w(t) * sum over the extra heads of their next-byte cross-entropy."""

    @dataclass
    class Options:
        anneal: str = option("none", "weight of the extra heads over training: none (constant), or linear or "
                             "cosine to 0 at the end", choices=ANNEALS)

    def model_kwargs(self, batch: Batch) -> dict:
        return {"output_mtp_logits": True}

    def forward(self, output, batch: Batch) -> ObjectiveOutput:
        heads = getattr(output, "mtp_logits", None)
        if not heads:
            raise UserError("objective 'mtp' needs multi-byte prediction heads, which this model does not have; "
                            "set model.overrides.mtp_heads (e.g. 2)")
        weight = anneal_weight(self.options.anneal, batch.step, batch.total_steps)
        mask = batch.target_mask().to(heads[0].device)
        count = mask.sum().clamp_min(1.0)
        bmask = byte_target_mask(batch.input_ids.to(mask.device), mask)
        total = None
        metrics: dict[str, float] = {"weight": weight}
        for i, logits in enumerate(heads, start=1):
            nll = token_nll(logits, batch.input_ids)
            ce = (nll * mask).sum() / count
            total = ce if total is None else total + ce
            metrics[f"head{i}_bpb"] = bits_per_byte((nll.detach() * bmask).sum().item(), bmask.sum().item())
        loss = weight * total
        metrics["loss"] = loss.item()
        return ObjectiveOutput(loss, metrics)
