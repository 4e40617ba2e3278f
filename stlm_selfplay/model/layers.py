"""Transformer parts shared by the trunk and the local byte modules.

RMSNorm is `torch.nn.RMSNorm`. Attention is grouped-query SDPA with rotary positions, optional
QK-norm and an optional KV cache; the FFN is SwiGLU (optionally shared across layers with a
per-layer LoRA) or ReLU-squared.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def rope_angles(positions: torch.Tensor, head_dim: int, theta: float,
                max_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape [*positions.shape, head_dim/2]:  angle(p, i) = p * theta^(-2i/head_dim).

    With `max_len` (every position is < max_len, as the caller's cache guarantees) the values are
    read from a table of positions 0..max_len-1 computed once with the same formula: one gather
    instead of ~6 kernels, which matters in per-byte decoding."""
    if max_len is None or positions.shape[-1] > max_len:
        return _angles(positions.float(), head_dim, theta)
    key = (head_dim, float(theta), max_len, positions.device)
    if key not in _ROPE_TABLES:
        with torch.inference_mode(False), torch.no_grad():  # a plain tensor, usable in training too
            _ROPE_TABLES[key] = _angles(
                torch.arange(max_len, device=positions.device, dtype=torch.float32), head_dim, theta)
    cos, sin = _ROPE_TABLES[key]
    return cos[positions], sin[positions]


_ROPE_TABLES: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _angles(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    angles = positions.unsqueeze(-1) * inv_freq
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x1_i, x2_i) = (x[..., i], x[..., i + d/2]) of x [N, H, L, d] by the angles:

        (x1, x2) -> (x1 cos - x2 sin, x1 sin + x2 cos),     cos/sin: [N or 1, L, d/2]
    """
    cos, sin = cos.unsqueeze(1).to(x.dtype), sin.unsqueeze(1).to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def causal_mask(query: torch.Tensor, key: torch.Tensor, lookback: int = 0) -> torch.Tensor:
    """Which keys each query sees, [..., n_query, n_key] bool from positions query [..., n_query] and
    key [..., n_key]:  key <= query, and key > query - lookback when lookback > 0 (a sliding window)."""
    q, k = query[..., :, None], key[..., None, :]
    mask = k <= q
    return mask & (k > q - lookback) if lookback else mask


@dataclass
class CacheStep:
    """Where new tokens go in a KV cache: rows `rows` (None = all rows, in order), starting at
    per-row position `start` [s]; attention covers cache positions [0, length).

    The write positions and the attention mask are the same for every layer of a step, so they
    are built once (`positions`) and shared."""

    rows: torch.Tensor | None
    start: torch.Tensor
    length: int
    lookback: int = 0  # > 0: a query also sees no key lookback or more positions back (sliding window)
    _built: tuple | None = None

    def positions(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(row index [s, 1], write positions [s, n], mask [s, 1, n, length]: key <= query, and
        key > query - lookback when lookback > 0)."""
        if self._built is None or self._built[1].shape[1] != n:
            device = self.start.device
            pos = self.start[:, None] + torch.arange(n, device=device)
            rows = torch.arange(pos.shape[0], device=device) if self.rows is None else self.rows
            mask = causal_mask(pos, torch.arange(self.length, device=device)[None], self.lookback)
            self._built = (rows[:, None], pos, mask[:, None])
        return self._built


def routed_mask(mask: torch.Tensor, keep: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
    """Attention mask of a routed block (Mixture-of-Depths, `mod.py`):

        mask & (keep[key] or key == query),   mask [s or 1, 1, n, L] (key <= query)

    keep [s, L] bool marks processed patches, query_pos [s or 1, n] the queries' positions. A
    skipped patch is never another patch's key; every query sees itself, so no softmax row is
    empty (a skipped query's output is discarded)."""
    key = torch.arange(mask.shape[-1], device=mask.device)
    return mask & (keep[:, None, None, :] | (key == query_pos[..., None])[:, None])


class LayerCache:
    """Keys and values of one attention layer for B rows: k, v [B, H_kv, max_len, head_dim], and
    `keep` [B, max_len] bool: whether a routed block processed each position (True otherwise)."""

    def __init__(self, batch: int, heads: int, max_len: int, head_dim: int, device, dtype):
        self.k = torch.zeros(batch, heads, max_len, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.keep = torch.ones(batch, max_len, device=device, dtype=torch.bool)

    def update(self, k: torch.Tensor, v: torch.Tensor, step: CacheStep, keep: torch.Tensor | None = None):
        """Write k, v [s, H, n, d] at positions start..start+n-1; return all keys, values
        [s, H, length, d] and the mask [s, 1, n, length] (key position <= query position).
        A routed block passes `keep` [s, n]: it is stored and folded in (`routed_mask`)."""
        rows, pos, mask = step.positions(k.shape[2])
        self.k[rows, :, pos] = k.transpose(1, 2).to(self.k.dtype)
        self.v[rows, :, pos] = v.transpose(1, 2).to(self.v.dtype)
        sel = slice(None) if step.rows is None else step.rows
        keys, values = self.k[sel, :, : step.length], self.v[sel, :, : step.length]
        if keep is not None:
            self.keep[rows, pos] = keep
            mask = routed_mask(mask, self.keep[sel, : step.length], pos)
        return keys, values, mask

    def select(self, rows: torch.Tensor) -> None:
        """Keep only `rows` (e.g. to expand one context into many continuations)."""
        self.k, self.v, self.keep = self.k[rows], self.v[rows], self.keep[rows]

    def fill(self, src: "LayerCache", rows: torch.Tensor) -> None:
        """Copy every position of `src`'s `rows` (one per row of this cache) into this cache's start."""
        n = src.k.shape[2]
        self.k[:, :, :n], self.v[:, :, :n], self.keep[:, :n] = src.k[rows], src.v[rows], src.keep[rows]


class Attention(nn.Module):
    """Causal multi-head attention with GQA: q [N, H, L, d], k/v [N, H_kv, L, d].

        attn(x) = W_o softmax(q k^T / sqrt(d) + causal mask) v,   q, k rotated by RoPE
    """

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, qk_norm: bool, eps: float, dropout: float):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, dim // n_heads
        self.wq = nn.Linear(dim, n_heads * self.head_dim, bias=False)
        self.wkv = nn.Linear(dim, 2 * n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(n_heads * self.head_dim, dim, bias=False)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=eps) if qk_norm else None
        self.k_norm = nn.RMSNorm(self.head_dim, eps=eps) if qk_norm else None
        self.dropout = dropout

    def forward(self, x, cos, sin, cache: LayerCache | None = None, step: CacheStep | None = None,
                keep: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None, queries_from: int = 0):
        """`keep` [N, L] bool (routed blocks): keys restricted as in `routed_mask`. `attn_mask`
        [N, 1, L, L] bool (no cache, no `keep`): which keys each query sees, instead of the causal
        mask (packed shared-prefix rows, `shared_prefix.py`). `queries_from` = s > 0 (causal, no
        cache): outputs only for positions s..L-1 [N, L-s, dim], the same values as the full call's
        [:, s:] (keys and values still from every position; the local decoder's last layer)."""
        n, length, _ = x.shape
        s = queries_from
        q = self.wq(x[:, s:]).view(n, length - s, self.n_heads, self.head_dim).transpose(1, 2)
        k, v = self.wkv(x).view(n, length, 2 * self.n_kv_heads, self.head_dim).transpose(1, 2).chunk(2, dim=1)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if s:  # queries at positions s.. only, keys at every position
            q, k = apply_rope(q, cos[:, s:], sin[:, s:]), apply_rope(k, cos, sin)
        else:
            q, k = apply_rope(torch.cat([q, k], dim=1), cos, sin).split([self.n_heads, self.n_kv_heads], dim=1)
        gqa = self.n_heads != self.n_kv_heads
        if cache is None:
            p = self.dropout if self.training else 0.0
            mask = attn_mask
            if s and attn_mask is not None:
                mask = attn_mask[..., s:, :]
            elif keep is not None or s:
                pos = torch.arange(length, device=x.device)
                mask = (routed_mask((pos[None, :] <= pos[:, None])[None, None], keep, pos[None]) if keep is not None
                        else pos[None, :] <= pos[s:, None])  # key <= query
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, dropout_p=p,
                                                 enable_gqa=gqa)
        else:
            k, v, mask = cache.update(k, v, step, keep)
            out = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=mask, enable_gqa=gqa)
        return self.wo(out.transpose(1, 2).reshape(n, length - s, self.n_heads * self.head_dim))


class SwiGLU(nn.Module):
    """ffn(x) = W_down (silu(W_gate x) * W_up x); a `lora` adds B_l A_l x to each of the three."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w_gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.w_down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor, lora: "LoRA | None" = None) -> torch.Tensor:
        gate_up = self.w_gate_up(x)
        if lora is not None:
            gate_up = gate_up + lora.up(lora.a_in(x))
        gate, up = gate_up.chunk(2, dim=-1)
        h = F.silu(gate) * up
        out = self.w_down(h)
        if lora is not None:
            out = out + lora.down(lora.a_hidden(h))
        return out


class ReLU2(nn.Module):
    """ffn(x) = W_down relu(W_up x)^2  (Primer, So et al. 2021; the modded-nanogpt MLP): two
    matrices instead of SwiGLU's three at the same hidden width."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w_up = nn.Linear(dim, hidden, bias=False)
        self.w_down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor, lora: "LoRA | None" = None) -> torch.Tensor:
        return self.w_down(F.relu(self.w_up(x)).square())


MLPS = {"swiglu": SwiGLU, "relu2": ReLU2}


class LoRA(nn.Module):
    """Per-layer low-rank deltas for a shared SwiGLU: W x -> W x + B A x (B starts at zero)."""

    def __init__(self, dim: int, hidden: int, rank: int):
        super().__init__()
        self.a_in = nn.Linear(dim, rank, bias=False)
        self.up = nn.Linear(rank, 2 * hidden, bias=False)
        self.a_hidden = nn.Linear(hidden, rank, bias=False)
        self.down = nn.Linear(rank, dim, bias=False)


class Block(nn.Module):
    """Pre-norm transformer block:  x += attn(norm(x));  x += ffn(norm(x)).

    `mlp` picks the FFN (swiglu | relu2, `MLPS`). With `ffn=None` the block uses the `shared_ffn` passed to forward plus its own LoRA. A routed
    block (`mod.py`) passes `keep` (which patches may be keys) and `gate` r [N, L, 1]:
    x + r f(x) with f(x) = a + ffn(norm(x + a)), a = attn(norm(x)).
    """

    def __init__(self, dim, n_heads, n_kv_heads, hidden, *, qk_norm, eps, dropout, shared_rank: int | None = None,
                 mlp: str = "swiglu"):
        super().__init__()
        self.attn_norm = nn.RMSNorm(dim, eps=eps)
        self.attn = Attention(dim, n_heads, n_kv_heads, qk_norm, eps, dropout)
        self.ffn_norm = nn.RMSNorm(dim, eps=eps)
        self.ffn = MLPS[mlp](dim, hidden) if shared_rank is None else None
        self.lora = LoRA(dim, hidden, shared_rank) if shared_rank else None
        self.drop = nn.Dropout(dropout)

    def forward(self, x, cos, sin, cache=None, step=None, shared_ffn: SwiGLU | None = None,
                keep: torch.Tensor | None = None, gate: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None, queries_from: int = 0):
        """`queries_from` = s: the block's output at positions s.. only (`Attention.forward`)."""
        a = self.drop(self.attn(self.attn_norm(x), cos, sin, cache, step, keep, attn_mask, queries_from))
        if queries_from:
            x = x[:, queries_from:]
        h = x + a
        ffn = self.ffn if self.ffn is not None else shared_ffn
        g = self.drop(ffn(self.ffn_norm(h), self.lora))
        return h + g if gate is None else x + gate * (a + g)
