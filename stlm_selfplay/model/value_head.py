"""The optional value head: V(s) read from the trunk state after a prompt (`value_head: true`).

    s_last = Trunk(p_0..p_K)[K]          K = the prompt's last real patch (`PatchLayout.patch_ids`)
    V(s)   = w . norm(s_last) + b        norm = the trunk's final RMSNorm (shared with the decoder)

The head is a Linear(d_model, 1) whose weight and bias start at zero, so every value starts at
0 and building the head draws no random numbers (a model with the head has the same other
parameters as a same-seed model without it). Trunk states are left-aligned per row, so the last
real patch of a row is max_t patch_ids[t] for fixed, dynamic and entropy patching alike (fixed:
(len - 1) // patch_size). `state_values` runs only the local encoder and the trunk (no local
decoder), through the same blocks as `STLMForCausalLM.forward`; padding never enters a pooled
patch vector, so a prompt's value does not depend on the batch it is scored in (the LM forward
pools trailing pads into a row's last partial patch, whose state no real byte ever reads). Trained by the `value`
objective (objectives/value.py); read by the `gae` advantage estimator (selfplay/advantages.py).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from stlm_selfplay.model.tokenizer import PAD_ID


class ValueHead(nn.Module):
    """Linear(d_model, 1), zero at init: V = w . h + b."""

    def __init__(self, d_model: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, d_model))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h [..., d_model] -> V [...]."""
        return F.linear(h, self.weight.to(h.dtype), self.bias.to(h.dtype)).squeeze(-1)


def last_patch_states(model, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      routing: str | None = None) -> torch.Tensor:
    """[B, d_model]: the final-norm trunk state of each row's last real patch."""
    if attention_mask is not None and bool(attention_mask.all()):
        attention_mask = None
    if attention_mask is not None:
        ids = ids.masked_fill(attention_mask == 0, PAD_ID)
    layout = model.patch_layout(ids, attention_mask)
    # pads after a row's last byte never enter its last patch's pooled vector
    layout = dataclasses.replace(layout, enc_valid=layout.enc_valid & (layout.enc_ids != PAD_ID))
    patches = model.encode_layout(layout)
    positions = torch.arange(patches.shape[1], device=patches.device)[None]
    state, _ = model.trunk(patches, positions, routing=routing)
    last = layout.patch_ids.max(dim=1).values.clamp_min(0)
    return model.trunk.norm(state[torch.arange(ids.shape[0], device=ids.device), last])


def state_values(model, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 routing: str | None = None) -> torch.Tensor:
    """V(s) [B] of each row's prompt (ids [B, T], padded either side; the model needs `value_head`)."""
    if getattr(model, "value_head", None) is None:
        raise ValueError("state_values needs a model built with value_head=True")
    return model.value_head(last_patch_states(model, ids, attention_mask, routing)).float()
