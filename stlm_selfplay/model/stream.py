"""Local byte modules that run over the whole byte sequence instead of per patch.

`decoder_attention: stream`: the decoder runs once over the shifted bytes x' = [BOS] + x,

    h_u = dec(in_u + c_{pid(u)})    (causal over positions u = 0..T, RoPE position u),

in_u = E[x'[u]], and the logit predicting x[u] is read at u. c_m comes from the trunk over patches
< m only, so every next-byte distribution is exact; each byte passes each decoder layer once
(a window decoder reads it twice, as current patch and as the next patch's context) and attends
over the whole context (or `decoder_lookback` positions).

`encoder_attention: stream` (hourglass, SpaceByte): the encoder's layers run the same way over x',
e_u = enc(E[x'[..u]]); patch m pools norm(e_{t+1}) over its bytes x[t] (e_{t+1} has read x[..t]
only), and the decoder reads in_u = e_u: the byte layers before the trunk serve both sides.
`decoding.py` keeps both exact with KV caches over positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stlm_selfplay.model.patching import PatchLayout, unalign
from stlm_selfplay.model.tokenizer import BOS_ID


def encode_stream(model, layout: PatchLayout, caches=None, step=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoder over x' at positions 0..T -> (trunk inputs [B, N_enc, d_model], byte states e
    [B, T+1, d_local]); with `caches` (the sampler's prompt pass) filling them at `step`."""
    shifted = F.pad(layout.aligned_ids, (1, 0), value=BOS_ID)
    positions = torch.arange(shifted.shape[1], device=shifted.device)[None]
    states = model.encoder.stream(model.embed_bytes(shifted), positions, caches, step)
    return pool_stream(model, layout, states), states


def stream_grid(layout: PatchLayout, states: torch.Tensor) -> torch.Tensor:
    """Byte states of x' [B, T+1, d_local] -> the encoder grid [B, N_enc, Pm, d_local]:
    grid[pid(t), j(t)] = states[t + 1], zeros in empty slots."""
    batch, n, pm = layout.enc_ids.shape
    grid = states.new_zeros(batch, n * pm, states.shape[-1]).scatter(
        1, layout.enc_pos.unsqueeze(-1).expand(-1, -1, states.shape[-1]), states[:, 1:])
    return grid.view(batch, n, pm, states.shape[-1])


def pool_stream(model, layout: PatchLayout, states: torch.Tensor) -> torch.Tensor:
    """Byte states of x' [B, T+1, d_local] -> trunk inputs [B, N_enc, d_model] (`LocalEncoder.pool`)."""
    grid = stream_grid(layout, states)
    batch, n, pm, d = grid.shape
    patches = model.encoder.pool(grid.view(batch * n, pm, d), layout.enc_valid.reshape(batch * n, pm))
    return patches.view(batch, n, patches.shape[-1])


def stream_logits(model, trunk_state: torch.Tensor, layout: PatchLayout, logits_to_keep: int = 0,
                  include_first: bool = False, delay: int = 0) -> torch.Tensor:
    """Trunk state [B, N_enc, d_model] -> logits [B, T, V] ([B, T+1, V] with `include_first`) by the
    stream decoder (module docstring); in_u = `layout.byte_states` when a stream encoder set them."""
    length = layout.aligned_ids.shape[1]
    pid = layout.byte_patch  # [B, T+1]
    cond = model.conditions(trunk_state, int(pid.max()) + 1, delay)
    cond = cond.gather(1, pid.unsqueeze(-1).expand(-1, -1, cond.shape[-1]))
    shifted = F.pad(layout.aligned_ids, (1, 0), value=BOS_ID)
    positions = torch.arange(length + 1, device=shifted.device)[None]
    inputs = model.embed_bytes(shifted) if layout.byte_states is None else layout.byte_states
    hidden = model.decoder(inputs, cond, positions, outputs_from=0 if include_first else 1)
    logits = unalign(model.head(hidden), layout.offsets)
    return logits[:, -logits_to_keep:] if logits_to_keep else logits
