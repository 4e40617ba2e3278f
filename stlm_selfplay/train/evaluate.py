"""Validation loss and bits-per-byte on a fixed set of packed sequences, and a short sample.

For val ids X [N, T] (PAD-filled at the end), with m_t = 1 where x_{t+1} is not PAD:

    loss = sum_t m_t * nll_t / sum_t m_t                              (nats per target, EOS included)
    bpb  = bits_per_byte(sum over byte targets of nll_t, number of byte targets)

using `token_nll`, `byte_target_mask` and `bits_per_byte` from `objectives/ce.py` (the one
definition of bits-per-byte).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from stlm_selfplay.objectives.base import Batch
from stlm_selfplay.objectives.ce import bits_per_byte, byte_target_mask, token_nll


@torch.no_grad()
def nll_sums(model: nn.Module, val_ids: np.ndarray, batch_size: int, device: torch.device,
             autocast=contextlib.nullcontext, exit_layer: int | None = None) -> torch.Tensor:
    """float64 [4] = (NLL over all targets, #targets, NLL over byte targets, #byte targets);
    with `exit_layer`, of the early exit after that trunk layer."""
    from stlm_selfplay.model.tokenizer import PAD_ID

    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    for start in range(0, len(val_ids), batch_size):
        ids = torch.from_numpy(val_ids[start:start + batch_size].astype(np.int64)).to(device)
        attention_mask = (ids != PAD_ID).long()
        with autocast():
            if exit_layer is None:
                logits = model(ids, attention_mask=attention_mask).logits
            else:
                logits = model(ids, attention_mask=attention_mask, exit_layers=[exit_layer]).exit_logits[exit_layer]
        nll = token_nll(logits, ids).double()
        mask = Batch(ids, attention_mask=attention_mask).target_mask().double()
        byte_mask = byte_target_mask(ids, mask)
        sums += torch.stack([(nll * mask).sum(), mask.sum(), (nll * byte_mask).sum(), byte_mask.sum()])
    model.train(was_training)
    return sums


def metrics_from_sums(sums: torch.Tensor) -> dict[str, float]:
    nll, count, byte_nll, byte_count = (float(x) for x in sums)
    return {"loss": nll / max(count, 1.0), "bpb": bits_per_byte(byte_nll, byte_count), "byte_targets": int(byte_count)}


def evaluate_bpb(model: nn.Module, val_ids: np.ndarray, batch_size: int = 32, device: str | torch.device = "cpu",
                 exit_layer: int | None = None) -> dict:
    """{loss, bpb, byte_targets} of `model` (or its early exit after `exit_layer`) on val ids
    [N, T] uint16 (what the trainer logs as val)."""
    return metrics_from_sums(nll_sums(model, val_ids, batch_size, torch.device(device), exit_layer=exit_layer))


def sample_text(model: nn.Module, prompt: str, num_bytes: int, temperature: float, seed: int) -> str:
    """A short sample after `prompt` from the model's sampler, seeded by its own generator."""
    from stlm_selfplay.model import generate

    generator = torch.Generator(device="cpu").manual_seed(seed)
    num_bytes = min(num_bytes, model.config.max_seq_len - 1)  # leave room for at least one prompt byte
    completion = generate(model, [prompt.encode("utf-8")], num_bytes, temperature=temperature, generator=generator,
                          truncate_left=True)[0]
    return completion.text.decode("utf-8", "replace")
