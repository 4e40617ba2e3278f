"""`ce`: next-byte cross-entropy, and the one definition of bits-per-byte.

    loss = sum_t m_t * -log p(x_{t+1} | x_{<=t}) / sum_t m_t          (m = target mask)
    bpb  = sum_{t: x_{t+1} < 256} m_t * -log p(x_{t+1} | x_{<=t}) / (ln 2 * #byte targets)

Bits-per-byte counts byte targets only (ids 0-255): EOS, BOS and pads are excluded. Every place
that reports bpb (trainer, eval-lm, benchmarks) calls `bits_per_byte` below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from stlm_selfplay.objectives.base import Batch, Objective, ObjectiveOutput
from stlm_selfplay.objectives.registry import register

NUM_BYTES = 256


def token_nll(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """[B, T-1] negative log-likelihood of input_ids[:, 1:] under logits[:, :-1] (fp32)."""
    logits = logits[:, :-1].float()
    targets = input_ids[:, 1:]
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
    return nll.view_as(targets)


def byte_target_mask(input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Restrict a [B, T-1] target mask to byte targets (ids < 256)."""
    return mask * (input_ids[:, 1:] < NUM_BYTES).to(mask.dtype)


def bits_per_byte(nll_sum: float, num_byte_targets: float) -> float:
    """bpb = summed NLL (nats) over byte targets / (ln 2 * number of byte targets)."""
    return float(nll_sum) / (math.log(2) * max(float(num_byte_targets), 1.0))


@register("ce")
class NextByteCE(Objective):
    """Next-byte cross-entropy over the target mask; reports nats/byte and bits/byte."""

    @dataclass
    class Options:
        pass

    def forward(self, output, batch: Batch) -> ObjectiveOutput:
        mask = batch.target_mask().to(output.logits.device)
        nll = token_nll(output.logits, batch.input_ids)
        loss = (nll * mask).sum() / mask.sum().clamp_min(1.0)
        with torch.no_grad():
            bmask = byte_target_mask(batch.input_ids, mask)
            nll_bytes = (nll * bmask).sum().item()
            n_bytes = bmask.sum().item()
        return ObjectiveOutput(
            loss,
            {"loss": loss.item(), "bpb": bits_per_byte(nll_bytes, n_bytes), "nll_sum": nll_bytes, "byte_targets": n_bytes},
        )
