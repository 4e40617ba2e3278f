"""Incremental decoding with KV caches for the trunk (one entry per patch) and the local decoder.

`DecodeState(model, rows)` reads B byte sequences (ragged) and holds, per row: the trunk cache
of its completed patches, the bytes of its current patch, the decoder window of the current
target patch (previous patch's shifted bytes right-aligned, then the current ones; see
`patching.py`) with its decoder cache, and the decoder condition. `state.logits` [B, V] is the
next-byte distribution of every row; `state.step(bytes)` appends one byte per row:

- the byte does not end its patch: one decoder step at the next window slot (cache);
- it ends the patch: encode the patch, one trunk step (cache), new condition, and a new window
  [previous patch (C = Pm slots, or none without decoder_context), new byte] run through the
  decoder from slot 0 (C + 1 slots).

A stream decoder (`decoder_attention: stream`) keeps a cache over byte positions instead of a
window: the prompt x'[0..L] runs through it once, each new byte is one decoder step at its position
(after the trunk step when it closes a patch), and `reopen` re-runs the last position under the
new condition. A stream encoder (`encoder_attention: stream`) likewise keeps a cache over positions;
each new byte runs through it first, its state is the decoder's input and is kept in `state_buf`
until its patch closes and is pooled.

The prompt pass encodes each distinct patch once and runs prefixes that rows share through the
trunk once (`prefix_sharing.py`); with a `PromptCache`, rows that extend an earlier call's prompt
start from its trunk caches (`prompt_cache.py`). The logits equal those of a full forward pass over the same
bytes (tested). With hashed n-gram embeddings (`ngrams.py`) each row also keeps its last
ngram_max - 1 ids (`ngram_tail`) and the n-gram buckets of its current patch's bytes
(`ngram_buf`), computed by the same function as in training when each byte arrives.

`layers` (a range of trunk layers, e.g. range(E + 1) for an early exit at layer E) runs only
those trunk layers when a patch closes; `trunk_out` keeps the last closed patch's trunk output
(the input of the next layer: self-speculative verification continues from it). `snapshot` /
`restore` save the per-row decoding state (the KV caches need no copy: trunk entries past
`n_done` are masked and overwritten, and `reopen` rebuilds the decoder cache of a window).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stlm_selfplay.model.layers import CacheStep
from stlm_selfplay.model.ngrams import BEFORE, ngram_buckets, ngram_sizes
from stlm_selfplay.model.entropy import entropy_boundaries
from stlm_selfplay.model.patching import ends_patch
from stlm_selfplay.model.prefix_sharing import encode_distinct, patch_keys, shared_trunk_pass
from stlm_selfplay.model.stream import encode_stream, stream_grid
from stlm_selfplay.model.tokenizer import BOS_ID, PAD_ID


def right_padded(rows: list[list[int]], device) -> torch.Tensor:
    """Ragged id lists -> [B, max_len] long, PAD after each row."""
    width = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out.to(device)


class DecodeState:
    """KV-cached next-byte logits for a batch of ragged byte sequences (see module docstring)."""

    STATE = ("cond", "window", "n_done", "patch_len", "patch_buf", "ngram_tail", "ngram_buf", "last", "dec_len",
             "state_buf", "byte_state", "logits")

    def __init__(self, model, rows: list[list[int]], layers: range | None = None, room: int | None = None,
                 prompt_cache=None):
        """`room`: at most this many bytes will be stepped (each closes at most one patch), so the
        trunk caches hold the prompt's patches + room instead of max_patches (less memory to fill
        and to copy when rows are repeated); None: up to the model's context. `prompt_cache` (a
        `PromptCache`, full trunk only): rows that extend an earlier prompt continue from its
        stored trunk caches, and this pass's closed patches are stored (`prompt_cache.py`)."""
        self.model, config = model, model.config
        self.layers, self.trunk_out = layers, None
        self.pm = pm = config.max_patch
        self.ctx = ctx = config.dec_context  # window slots before the current patch (Pm or 0)
        self.fixed = config.patching == "fixed"
        device = model.device
        dtype = next(model.parameters()).dtype
        batch = len(rows)
        self.stream = config.decoder_attention == "stream"
        self.enc_stream = config.encoder_attention == "stream"
        ids = right_padded(rows, device)
        lengths = torch.tensor([len(r) for r in rows], device=device)
        # stream decoder/encoder: positions 0..L (BOS, then the bytes) are in the caches, the next input goes at L + 1
        self.dec_len = lengths + 1
        cache_len = None if room is None else min(config.max_seq_len, ids.shape[1] + room) + 1
        self.dec_caches = model.new_decoder_caches(batch, device, dtype, cache_len)
        self.enc_caches = model.new_encoder_caches(batch, device, dtype, cache_len) if self.enc_stream else []
        layout = model.patch_layout(ids)
        ar = torch.arange(batch, device=device)
        m = layout.byte_patch[ar, lengths]  # the patch of the next byte
        length = None if room is None else min(config.max_patches, max(layout.n_patches, int(m.max()) + room))
        patches = states = None
        if self.enc_stream:  # the encoder over x'[0..T] (every row, filling its caches), pooled per patch
            step = CacheStep(None, torch.zeros_like(lengths), ids.shape[1] + 1)
            patches, states = encode_stream(model, layout, self.enc_caches, step)
        if ids.shape[1]:
            keys = patch_keys(layout)  # a stream encoder's patches are equal where the rows' whole prefixes are
            if prompt_cache is not None and layers is None:  # earlier prompts' patches reused (`prompt_cache.py`)
                state, self.trunk_caches = prompt_cache.trunk_pass(model, layout, keys, m, length, patches)
            else:  # what rows share is computed once (`prefix_sharing.py`)
                patches = encode_distinct(model, layout, keys) if patches is None else patches
                state, self.trunk_caches = shared_trunk_pass(model, patches, keys, layers, length)
        else:
            self.trunk_caches = model.new_trunk_caches(batch, device, dtype, length)
            state = torch.zeros(batch, 0, config.d_model, device=device, dtype=dtype)
        cond = model.conditions(state, layout.dec_ids.shape[1])  # [B, N_dec, d_local]
        self.cond = cond[ar, m]
        self.window = layout.dec_ids[ar, m].clone()  # [B, C+Pm]
        enc_ids = layout.enc_ids
        if enc_ids.shape[1] <= int(m.max()):  # the next byte starts a patch beyond the grid
            enc_ids = F.pad(enc_ids, (0, 0, 0, int(m.max()) + 1 - enc_ids.shape[1]), value=PAD_ID)
        self.n_done = m.clone()
        self.patch_len = (lengths - torch.where(m > 0, self._patch_starts(layout, m), 0)).long()
        in_patch = torch.arange(pm, device=device)[None] < self.patch_len[:, None]
        self.patch_buf = torch.where(in_patch, enc_ids[ar, m], PAD_ID)
        self._init_ngrams(ids, lengths, layout, m, in_patch)
        self._init_states(states, lengths, layout, m, in_patch)
        # the last id of each row (BOS when empty): entropy patching's context for the next byte
        self.last = torch.full_like(lengths, BOS_ID)
        if ids.shape[1]:
            self.last = torch.where(lengths > 0, ids.gather(1, (lengths - 1).clamp(min=0)[:, None])[:, 0], BOS_ID)
        if self.stream:
            self.logits = self._prompt_stream(ids, lengths, layout, cond, states)
        else:
            slot = ctx + self.patch_len
            emb = model.embed_bytes(self.window)
            self.logits = self._decode(None, emb, self.cond, torch.zeros_like(slot), ctx + pm, slot)

    def _init_states(self, states, lengths, layout, m, in_patch) -> None:
        """Stream encoder: state_buf [B, Pm, d_local], the encoder states of the current patch's bytes
        (zeros in empty slots), and byte_state [B, d_local], that of each row's last input x'[L]."""
        ar = torch.arange(lengths.shape[0], device=lengths.device)
        if not self.enc_stream:  # empty (on the rows' device: `select` indexes them like the rest)
            self.state_buf = torch.zeros(len(ar), self.pm, 0, device=ar.device)
            self.byte_state = torch.zeros(len(ar), 0, device=ar.device)
            return
        grid = stream_grid(layout, states)  # [B, N_enc, Pm, d_local]
        grid = F.pad(grid, (0, 0, 0, 0, 0, max(0, int(m.max()) + 1 - grid.shape[1])))  # a next patch beyond the grid
        self.state_buf = torch.where(in_patch[..., None], grid[ar, m], 0.0)
        self.byte_state = states[ar, lengths]

    def _prompt_stream(self, ids, lengths, layout, cond, states) -> torch.Tensor:
        """`decoder_attention: stream`: the shifted prompts x'[0..T] through the decoder at positions
        0..T, each byte with its patch's condition (`stream.py`), filling the cache;
        the logits at each row's last position L. Positions past L hold pads, overwritten before
        any query reads them (keys after a query are masked). A stream encoder's `states` are the
        decoder's inputs in place of the byte embeddings."""
        shifted = F.pad(ids, (1, 0), value=BOS_ID)
        cond = cond.gather(1, layout.byte_patch.unsqueeze(-1).expand(-1, -1, cond.shape[-1]))
        inputs = self.model.embed_bytes(shifted) if states is None else states
        return self._decode(None, inputs, cond, torch.zeros_like(lengths), shifted.shape[1], lengths)

    def last_input(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder input of each row's last position [s, d_local]: the stream encoder's state of
        x'[L], or the embedding of the last id (BOS when empty)."""
        rows = slice(None) if rows is None else rows
        return self.byte_state[rows] if self.enc_stream else self.model.embed_bytes(self.last[rows])

    def _init_ngrams(self, ids, lengths, layout, m, in_patch) -> None:
        """ngram_tail [B, N-1]: each row's last N-1 ids (BEFORE where the row is shorter);
        ngram_buf [B, Pm, K]: the current patch's buckets (0 in empty slots). K = 0 when off."""
        config, batch = self.model.config, ids.shape[0]
        k, self.max_n = len(ngram_sizes(config)), config.ngram_max
        width = max(self.max_n - 1, 0)
        padded = torch.cat([torch.full((batch, width), BEFORE, dtype=torch.long, device=ids.device), ids], dim=1)
        idx = lengths[:, None] + torch.arange(width, device=ids.device)[None]  # padded index of ids[L - width + i]
        self.ngram_tail = padded.gather(1, idx)
        self.ngram_buf = torch.zeros(batch, self.pm, k, dtype=torch.long, device=ids.device)
        if k and layout.enc_ngrams is not None and layout.enc_ngrams.shape[1]:
            grid = layout.enc_ngrams[torch.arange(batch, device=ids.device), m.clamp(max=layout.enc_ngrams.shape[1] - 1)]
            self.ngram_buf = torch.where(in_patch[..., None], grid, 0)

    def _push_ngrams(self, tokens: torch.Tensor, ar: torch.Tensor) -> None:
        """Buckets of the n-grams ending at the new bytes, written at their patch slots."""
        if not self.ngram_buf.shape[-1]:
            return
        history = torch.cat([self.ngram_tail, tokens[:, None]], dim=1)
        buckets = ngram_buckets(history, self.max_n, self.model.config.ngram_buckets)[:, 0]
        self.ngram_buf[ar, self.patch_len.clamp(max=self.pm - 1)] = buckets
        self.ngram_tail = history[:, 1:]

    @staticmethod
    def _patch_starts(layout, m: torch.Tensor) -> torch.Tensor:
        """Start position (aligned) of patch m of each row: the first u with pid(u) == m."""
        hits = layout.byte_patch == m[:, None]
        return hits.int().argmax(1)

    @property
    def batch_size(self) -> int:
        return self.cond.shape[0]

    def _decode(self, rows, inputs, cond, start, length: int, read_slot: torch.Tensor) -> torch.Tensor:
        """Run window slots (stream: positions) [start, start + n) of `rows` through the cached decoder,
        `inputs` [s, n, d_local] (embedded ids, or stream encoder states); return logits [s, V] read
        at slot `read_slot` [s]."""
        model = self.model
        n = inputs.shape[1]
        slots = start[:, None] + torch.arange(n, device=inputs.device)
        step = CacheStep(rows, start, length, model.decoder.lookback)
        hidden = model.decoder(inputs, cond, slots, self.dec_caches, step)  # cond [s, d] or [s, n, d]
        first = start + (n - hidden.shape[1])  # the slot of hidden[:, 0] (decoder_context_layers drop slots < C)
        idx = (read_slot - first).clamp(0, hidden.shape[1] - 1)
        picked = hidden[torch.arange(hidden.shape[0], device=inputs.device), idx]
        return model.head(picked).float()

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append one byte per row (tokens [B] long) and return the new logits [B, V]."""
        model, pm = self.model, self.pm
        tokens = tokens.to(self.cond.device).long()
        ar = torch.arange(tokens.shape[0], device=tokens.device)
        self.patch_buf[ar, self.patch_len.clamp(max=pm - 1)] = tokens
        self._push_ngrams(tokens, ar)
        self.patch_len = self.patch_len + 1
        config = model.config
        if self.fixed:
            done = self.patch_len >= pm
        elif config.patching == "entropy":
            boundary = entropy_boundaries(tokens[:, None], model.entropy_table, config.entropy_threshold, self.last)[:, 0]
            done = (boundary & (self.patch_len >= config.min_patch_size)) | (self.patch_len >= config.max_patch_size)
        else:
            done = ends_patch(tokens, self.patch_len, config.min_patch_size, config.max_patch_size)
        self.last = tokens
        self.dec_len = self.dec_len + 1
        if self.enc_stream:  # the new byte through the encoder at its position, kept for the patch's pooling
            at = self.dec_len - 1
            step = CacheStep(None, at, int(at.max()) + 1)
            self.byte_state = model.encoder.stream(model.embed_bytes(tokens[:, None]), at[:, None], self.enc_caches,
                                                   step)[:, 0]
            self.state_buf[ar, (self.patch_len - 1).clamp(max=pm - 1)] = self.byte_state
        logits = torch.empty(tokens.shape[0], model.config.vocab_size, device=tokens.device)
        if bool(done.any()):
            rows = ar[done]
            logits[rows] = self._close_patch(rows, tokens[rows])
        if not bool(done.all()):
            rows = ar[~done]
            slot = self.ctx + self.patch_len[rows]
            self.window[rows, slot] = tokens[rows]
            at = self.dec_len[rows] - 1 if self.stream else slot  # stream: the byte's position
            full = rows.shape[0] == tokens.shape[0]
            logits[rows] = self._decode(None if full else rows, self.last_input(rows)[:, None], self.cond[rows], at,
                                        int(at.max()) + 1, at)
        self.logits = logits
        return logits

    def _close_patch(self, rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Rows whose patch just ended: encode it, step the trunk, open the next window."""
        model, pm = self.model, self.pm
        full = rows.shape[0] == self.batch_size
        sel = None if full else rows
        lens = self.patch_len[rows]
        buf = self.patch_buf[rows]
        valid = torch.arange(pm, device=rows.device)[None] < lens[:, None]
        ngrams = self.ngram_buf[rows][:, None] if self.ngram_buf.shape[-1] else None
        if self.enc_stream:
            patch = model.encoder.pool(self.state_buf[rows], valid)[:, None]
        else:
            patch = model.encode_patches(buf[:, None], valid[:, None], ngrams)  # [s, 1, d_model]
        pos = self.n_done[rows]
        step = CacheStep(sel, pos, int(pos.max()) + 1)
        state, _ = model.trunk(patch, pos[:, None], self.trunk_caches, step, layers=self.layers)
        self.trunk_out = state[:, 0]
        self.cond[rows] = model.condition(state[:, 0])
        self.n_done[rows] = pos + 1
        # new window: old current half (x' of the closed patch) right-aligned (when the window
        # has a context half), then the new byte
        ctx = self.ctx
        j = torch.arange(ctx + pm, device=rows.device)[None]
        old = self.window[rows]
        if ctx:
            src = (j + lens[:, None]).clamp(max=ctx + pm - 1)
            window = torch.where(j < pm - lens[:, None], PAD_ID, old.gather(1, src))
        else:
            window = torch.full_like(old, PAD_ID)
        window = torch.where(j == ctx, tokens[:, None], torch.where(j > ctx, PAD_ID, window))
        self.window[rows] = window
        self.patch_len[rows] = 0
        self.patch_buf[rows] = PAD_ID
        self.ngram_buf[rows] = 0
        self.state_buf[rows] = 0.0
        return self._open_window(sel, rows)

    def _open_window(self, sel, rows: torch.Tensor) -> torch.Tensor:
        """Run slots 0..C of the rows' fresh windows (previous patch, if any, + first byte) through
        the decoder from an empty cache; return the logits of the new patch's first target.
        Stream decoder: the rows' last input (`last`) again at its position, under the new condition."""
        if self.stream:
            at = self.dec_len[rows] - 1
            return self._decode(sel, self.last_input(rows)[:, None], self.cond[rows], at, int(at.max()) + 1, at)
        zeros, ctx = torch.zeros_like(rows), self.ctx
        emb = self.model.embed_bytes(self.window[rows, : ctx + 1])
        return self._decode(sel, emb, self.cond[rows], zeros, ctx + 1, zeros + ctx)

    def reopen(self, cond: torch.Tensor) -> torch.Tensor:
        """At the start of a patch (patch_len == 0, every row): replace the decoder condition
        [B, d_local] and rebuild the window's decoder cache; return the new logits [B, V]."""
        self.cond = cond.to(self.cond.dtype)
        self.logits = self._open_window(None, torch.arange(self.batch_size, device=cond.device))
        return self.logits

    def snapshot(self) -> dict:
        return {name: getattr(self, name).clone() for name in self.STATE}

    def restore(self, snap: dict) -> None:
        for name in self.STATE:
            setattr(self, name, snap[name].clone())

    def select(self, rows: torch.Tensor) -> None:
        """Keep (or repeat) rows: e.g. expand each context into several continuations."""
        for cache in self.trunk_caches + self.dec_caches + self.enc_caches:
            cache.select(rows)
        for name in self.STATE:
            setattr(self, name, getattr(self, name)[rows])
