"""Mixture-of-Depths routing for trunk blocks (Raposo et al. 2024, "Mixture-of-Depths: Dynamically
allocating compute in transformer-based language models").

A routed block scores every patch with a router, logit z_i = w . x_i + b, and processes only some
patches; the others pass through unchanged:

    processed i:    x_i <- x_i + r_i f(x)_i,   r_i = sigmoid(z_i) (mod_router_scale) else 1
    skipped i:      x_i <- x_i                 (and is no key of any other patch's attention)

f(x) = attn + ffn is the block's residual update. r_i puts the router on the gradient path of the
language-model loss (top-k selection itself has no gradient); sigmoid keeps it in (0, 1) and equal
to the causal rule's probability. With r = 1 and every patch processed the block is the dense one.

Routing, per row of N patches:
    topk:   the k = ceil(C N) patches with the highest z (ties: the earlier patch), C = mod_capacity.
            They are gathered in their original order and run alone: causal attention among the
            selected, each at its own RoPE position. Needs the whole sequence (training only).
    causal: patch i is processed when sigmoid(s_i) > 0.5, i.e. s_i > 0, with s = the predictor's
            logit when there is one, else z. Depends on patch i alone, so it works one patch at a
            time with a KV cache (sampling, RL forwards, evaluation). Computed exactly by running
            the block on every patch with the attention mask  key <= query and (processed(key) or
            key == query)  and keeping the outputs of processed patches only (dense FLOPs).

Training the causal rule (objective `mod`): BCE(z, topk mask), or with `mod_predictor` a small MLP
q(sg(x)) = W_2 silu(W_1 sg(x)) trained by BCE(q, topk mask) on stop-gradient inputs, so it never
changes the trunk. The top-k mask is computed from z in either routing mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from stlm_selfplay.model.config import MOD_ROUTINGS as ROUTINGS


@dataclass
class RouterOutput:
    """What one routed block reports to objectives."""

    logits: torch.Tensor  # [B, N] router logits z
    topk: torch.Tensor  # [B, N] bool: among the top-k of z in its row (the BCE target)
    predictor_logits: torch.Tensor | None  # [B, N] q(sg(x)), or None without a predictor
    processed: torch.Tensor  # [B, N] bool: patches the block processed in this forward
    rows: torch.Tensor | None = None  # batch rows these are (layer dropout ran the block on some); None = all

    @property
    def causal(self) -> torch.Tensor:
        """[B, N] bool: what causal routing processes."""
        return causal_keep(self.logits, self.predictor_logits)


class Router(nn.Module):
    """z = w . x + b per patch; optional predictor q = W_2 silu(W_1 sg(x)) (hidden d_model / 4)."""

    def __init__(self, d_model: int, predictor: bool):
        super().__init__()
        self.proj = nn.Linear(d_model, 1)
        hidden = max(d_model // 4, 1)
        self.predictor = (nn.Sequential(nn.Linear(d_model, hidden), nn.SiLU(), nn.Linear(hidden, 1))
                          if predictor else None)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [B, N, d] -> (z [B, N], q [B, N] or None); the predictor reads x.detach()."""
        pred = None if self.predictor is None else self.predictor(x.detach()).squeeze(-1)
        return self.proj(x).squeeze(-1), pred


def causal_keep(z: torch.Tensor, q: torch.Tensor | None) -> torch.Tensor:
    """Causal rule: processed where sigmoid(s) > 0.5, i.e. s > 0; s = q if a predictor exists, else z."""
    return (z if q is None else q) > 0


def capacity_k(n: int, capacity: float) -> int:
    """k = ceil(C n) (a 1e-9 guard so that e.g. 0.1 * 30 is 3, not 4)."""
    return min(n, math.ceil(capacity * n - 1e-9))


def topk_indices(scores: torch.Tensor, capacity: float) -> torch.Tensor:
    """[B, N] -> [B, k] indices of each row's k highest scores, ascending (original order);
    among equal scores the earlier patch wins (stable sort)."""
    k = capacity_k(scores.shape[1], capacity)
    order = torch.sort(scores.detach(), dim=1, descending=True, stable=True).indices[:, :k]
    return order.sort(dim=1).values


def _gather(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """t [1 or B, N, D] at idx [B, k] -> [B, k, D]."""
    t = t.expand(idx.shape[0], -1, -1)
    return t.gather(1, idx.unsqueeze(-1).expand(-1, -1, t.shape[-1]))


def routed_block(router: Router, layer: nn.Module, x: torch.Tensor, cos, sin, cache=None, step=None, *,
                 routing: str, capacity: float, router_scale: bool, shared_ffn=None
                 ) -> tuple[torch.Tensor, RouterOutput]:
    """One routed trunk block on x [B, N, d] (formulas in the module docstring) -> (x', report)."""
    z, q = router(x)
    idx = topk_indices(z, capacity)
    topk = torch.zeros_like(z, dtype=torch.bool).scatter(1, idx, True)
    gate = torch.sigmoid(z).unsqueeze(-1) if router_scale else None
    if routing == "topk":
        if cache is not None:
            raise ValueError("top-k routing reads the whole sequence; cached decoding needs routing='causal'")
        sel = _gather(x, idx)
        out = layer(sel, _gather(cos, idx), _gather(sin, idx), shared_ffn=shared_ffn,
                    gate=None if gate is None else _gather(gate, idx))
        x = x.scatter(1, idx.unsqueeze(-1).expand_as(out), out)
        return x, RouterOutput(z, topk, q, topk)
    if routing != "causal":
        raise ValueError(f"routing must be one of {', '.join(ROUTINGS)}, got {routing!r}")
    keep = causal_keep(z, q)
    out = layer(x, cos, sin, cache, step, shared_ffn=shared_ffn, keep=keep, gate=gate)
    return torch.where(keep.unsqueeze(-1), out, x), RouterOutput(z, topk, q, keep)
