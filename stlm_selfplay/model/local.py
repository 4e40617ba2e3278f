"""The local byte modules around the trunk: the encoder that pools each patch's bytes into one
trunk input, and the decoder that turns a trunk condition plus a window of bytes into byte states
(`modeling.py` wires them; `patching.py` lays out their grids)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stlm_selfplay.model.config import STLMConfig
from stlm_selfplay.model.layers import Block, CacheStep, causal_mask, rope_angles


def local_block(config: STLMConfig) -> Block:
    return Block(config.d_local, config.local_heads, config.local_heads, config.local_ff,
                 qk_norm=config.qk_norm, eps=config.norm_eps, dropout=config.dropout, mlp=config.mlp)


def maybe_linear(d_in: int, d_out: int) -> nn.Module:
    return nn.Identity() if d_in == d_out else nn.Linear(d_in, d_out, bias=False)


class LocalEncoder(nn.Module):
    """Bytes of each patch [N, Pm] -> one vector per patch [N, d_model].

        h = enc_layers(E[bytes] + pos_j)    (causal inside the patch)
        mean:      pool(h) = sum_j v_j h_j / sum_j v_j                  (v_j = slot j holds a byte)
        attention: pool(h) = sum_j softmax_j(q . h_j / sqrt(d) | v) h_j
        concat:    pool(h) = W_cat [v_1 h_1; ...; v_Pm h_Pm]                (order kept; no slot embedding)

    Without encoder layers mean pooling is order-blind: mean_j (E[b_j] + pos_j) adds the same
    mean_j pos_j to every full patch.

    `encoder_attention: stream`: `stream` runs the layers once over the shifted byte sequence x'
    (causal, RoPE position u, no slot embedding); `pool` then reads norm(h) of each patch's bytes.
    """

    def __init__(self, config: STLMConfig):
        super().__init__()
        self.concat = config.pooling == "concat"
        in_patch = config.max_patch > 1 and config.encoder_attention == "patch" and not self.concat
        self.pos = nn.Embedding(config.max_patch, config.d_local) if in_patch else None  # slot embedding
        self.layers = nn.ModuleList(local_block(config) for _ in range(config.n_local_encoder_layers))
        self.norm = nn.RMSNorm(config.d_local, eps=config.norm_eps) if self.layers else None
        self.query = nn.Parameter(torch.zeros(config.d_local)) if config.pooling == "attention" else None
        self.proj = maybe_linear(config.d_local * (config.max_patch if self.concat else 1), config.d_model)
        self.rope_theta, self.head_dim = config.rope_theta, config.d_local // config.local_heads
        self.max_len = config.max_patch  # slots inside a patch
        self.stream_len = config.max_seq_len + 1  # positions of x' (stream)

    def forward(self, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """h: byte embeddings [N, Pm, d_local]; valid [N, Pm] bool."""
        if self.pos is not None:
            h = h + self.pos.weight
        if self.layers:
            cos, sin = rope_angles(torch.arange(h.shape[1], device=h.device)[None], self.head_dim, self.rope_theta,
                                   self.max_len)
            for layer in self.layers:
                h = layer(h, cos, sin)
        return self.pool(h, valid)

    def stream(self, h: torch.Tensor, positions: torch.Tensor, caches=None, step=None) -> torch.Tensor:
        """Byte embeddings of x' [N, L, d_local] at `positions` [1 or N, L] -> the layers' residual
        states [N, L, d_local] (causal over positions; with caches, continuing them)."""
        cos, sin = rope_angles(positions, self.head_dim, self.rope_theta, self.stream_len)
        for i, layer in enumerate(self.layers):
            h = layer(h, cos, sin, None if caches is None else caches[i], step)
        return h

    def pool(self, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Layer outputs of each patch's slots [N, Pm, d_local] -> norm -> pool -> W_in: [N, d_model]."""
        if self.layers:
            h = self.norm(h)
        weights = valid.to(h.dtype)
        if self.concat:  # slots past the layout's longest patch are empty too
            h = F.pad(h * weights.unsqueeze(-1), (0, 0, 0, self.max_len - h.shape[1]))
            return self.proj(h.flatten(1))
        if self.query is not None:
            scores = (h @ self.query.to(h.dtype)) / h.shape[-1] ** 0.5
            weights = torch.softmax(scores.masked_fill(~valid, float("-inf")), dim=-1).nan_to_num(0.0)
        else:
            weights = weights / weights.sum(-1, keepdim=True).clamp_min(1.0)
        return self.proj((weights.unsqueeze(-1) * h).sum(1))


class LocalDecoder(nn.Module):
    """Windows of byte ids [N, W] + one condition per window [N, d_model] -> hidden [N, W, d_local]
    (W = config.dec_window: previous + current patch, or the current patch only).

        h = dec_layers(E[window] + W_c c)   (causal over the window), then RMSNorm.
    Without decoder layers (the plain-GPT case) h = W_c c.

    With `decoder_context_layers` = k (0 < k < n_dec, a window with C context slots), the layers
    from k on see the current patch only: after layer k - 1 the context slots' states are dropped,
    so those layers attend over (and keep caches of) slots C.. alone, at cache position slot - C.
    """

    def __init__(self, config: STLMConfig):
        super().__init__()
        self.start = nn.Parameter(torch.zeros(config.d_model))
        self.cond_proj = maybe_linear(config.d_model, config.d_local)
        self.layers = nn.ModuleList(local_block(config) for _ in range(config.n_local_decoder_layers))
        self.norm = nn.RMSNorm(config.d_local, eps=config.norm_eps) if self.layers else None
        self.rope_theta, self.head_dim = config.rope_theta, config.d_local // config.local_heads
        stream = config.decoder_attention == "stream"
        self.max_len = config.max_seq_len + 1 if stream else config.dec_window  # positions (stream) or window slots
        self.lookback = config.decoder_lookback if stream else 0
        self.ctx, self.context_layers = config.dec_context, config.dec_context_layers

    def forward(self, emb, cond, slots, caches=None, step=None, outputs_from: int = 0):
        """emb: window byte embeddings [N, L, d_local] at window `slots` [1 or N, L]; cond [N, d_local].
        `outputs_from` = s (no caches): hidden states of slots s..L-1 only [N, L-s, d_local], equal to
        the full output's [:, s:]; the last layer then runs its queries, FFN and norm on those slots
        only (the training forward reads logits at the current patch's slots, `patching.py`).
        Above the context layers (class docstring) the output starts at slot C at the earliest:
        without caches s must be >= C; with caches the input's slots < C are left out of it."""
        if not self.layers:
            return cond.unsqueeze(1).expand(-1, emb.shape[1] - outputs_from, -1)
        h = emb + (cond if cond.dim() == 3 else cond.unsqueeze(1))
        cos, sin = rope_angles(slots, self.head_dim, self.rope_theta, self.max_len)
        mask = None
        if self.lookback and caches is None:  # sliding window (with caches, the step's mask has it)
            mask = causal_mask(slots[0], slots[0], self.lookback)[None, None]
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if i == self.context_layers:  # the layers above see the current patch only
                h, cos, sin, step, outputs_from = self._current_patch(h, cos, sin, step, outputs_from)
            h = layer(h, cos, sin, None if caches is None else caches[i], step, attn_mask=mask,
                      queries_from=outputs_from if i == last else 0)
        return self.norm(h)

    def _current_patch(self, h, cos, sin, step, outputs_from: int):
        """Drop the input slots < C: (h, cos, sin, the step at cache positions slot - C, outputs_from - C).
        Without a cache the input starts at slot 0; with one, every row's first slot is 0 (a window
        opened) or >= C (bytes of the current patch), so the same number of slots goes from each row."""
        ctx = self.ctx
        if step is None:
            if outputs_from < ctx:
                raise ValueError(f"decoder_context_layers: the layers above the context layers have no output at "
                                 f"slots < {ctx}; call with outputs_from >= {ctx}")
            drop, outputs_from = ctx, outputs_from - ctx
        else:
            gone = (ctx - step.start).clamp(0, h.shape[1])
            drop = int(gone.max())
            if int(gone.min()) != drop:
                raise ValueError("decoder_context_layers: a cached step mixes rows that start inside and after "
                                 "the context slots")
            step = CacheStep(step.rows, step.start + drop - ctx, step.length - ctx)
        return h[:, drop:], cos[..., drop:, :], sin[..., drop:, :], step, outputs_from
