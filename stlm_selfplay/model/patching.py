"""Where patches begin and end, and the index grids that move bytes into and out of patches.

Rows are first left-aligned (leading pads removed, rows start at position 0), so patches are
counted from each row's first real byte and left padding changes nothing. Notation for one row:
x[0..T-1] the bytes, x'[u] = x[u-1] the inputs shifted right (x'[0] = BOS), so the logit at
position u-1 (predicting x[u]) is computed from x'[..u]. pid(u) is the patch of byte x[u]
(u = T is the hypothetical next byte), j(u) = u - start(pid(u)) its slot, len(m) patch m's length.

- encoder grid  [B, N_enc, Pm]:  enc[pid(t), j(t)] = x[t]                       (t < T)
- decoder window [B, N_dec, C+Pm]: win[pid(u), C + j(u)] = x'[u]                (current patch)
                                 win[pid(u) + 1, Pm - len(pid(u)) + j(u)] = x'[u] (as the next
                                 patch's context: the previous patch, right-aligned; C > 0 only)
- logits of position u-1 are read at win[pid(u), C + j(u)].
Empty slots hold PAD. Pm = patch_size (fixed) or max_patch_size (dynamic); C = config.dec_context
(Pm, or 0 when `decoder_context` is off: windows hold the current patch only).

Dynamic boundaries: a patch ends after byte b when len >= min_patch_size and b is whitespace,
ASCII punctuation or a special token, or when len == max_patch_size. Entropy boundaries
(`entropy.py`): the same rule with "b is a boundary" replaced by a per-position test, the next
byte's entropy under a small byte model above a threshold.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import torch

from stlm_selfplay.model.entropy import entropy_boundaries
from stlm_selfplay.model.ngrams import row_ngram_buckets
from stlm_selfplay.model.tokenizer import BOS_ID, NUM_BYTES, PAD_ID, VOCAB_SIZE

_BOUNDARY = torch.zeros(VOCAB_SIZE, dtype=torch.bool)
_BOUNDARY[[ord(c) for c in string.whitespace + string.punctuation]] = True
_BOUNDARY[NUM_BYTES:] = True  # pad, bos, eos end a patch


def ends_patch(byte: torch.Tensor, length: torch.Tensor, min_size: int, max_size: int) -> torch.Tensor:
    """Dynamic rule: does a patch of `length` bytes whose last byte is `byte` end here?"""
    is_boundary = _BOUNDARY.to(byte.device)[byte]
    return (is_boundary & (length >= min_size)) | (length >= max_size)


def left_align(input_ids: torch.Tensor, attention_mask: torch.Tensor | None):
    """Move each row's leading pads to its end: aligned[b, r] = ids[b, r + offset_b].

    Returns (aligned ids, offsets [B] or None when there is no padding to remove)."""
    if attention_mask is None:
        return input_ids, None
    mask = attention_mask.bool()
    length = input_ids.shape[1]
    offsets = torch.where(mask.any(1), mask.int().argmax(1), torch.full_like(mask[:, 0], length, dtype=torch.long))
    src = torch.arange(length, device=input_ids.device)[None] + offsets[:, None]
    aligned = input_ids.gather(1, src.clamp(max=length - 1))
    return aligned.masked_fill(src >= length, PAD_ID), offsets


def unalign(values: torch.Tensor, offsets: torch.Tensor | None, fill=0) -> torch.Tensor:
    """Inverse of `left_align` for per-position values [B, T, ...]; pad positions get `fill`."""
    if offsets is None:
        return values
    length = values.shape[1]
    src = torch.arange(length, device=values.device)[None] - offsets[:, None]  # [B, T]
    index = src.clamp(min=0).view(*src.shape, *([1] * (values.dim() - 2))).expand_as(values)
    out = values.gather(1, index)
    keep = (src >= 0).view(*src.shape, *([1] * (values.dim() - 2)))
    return out.masked_fill(~keep, fill)


def dynamic_patch_ids(ids: torch.Tensor, min_size: int, max_size: int,
                      boundary: torch.Tensor | None = None) -> torch.Tensor:
    """pid [B, T+1] for x[0..T-1] and the next byte (column T), by the dynamic rule (a scan in
    plain Python: one pass per row, faster than T small tensor ops). `boundary` [B, T] bool
    replaces the whitespace/punctuation test per position (entropy patching)."""
    table = _BOUNDARY.tolist()
    flags = boundary.tolist() if boundary is not None else [[table[b] for b in row] for row in ids.tolist()]
    rows = []
    for row in flags:
        pid, cur, run = [], 0, 0
        for is_boundary in row:
            pid.append(cur)
            run += 1
            if run >= max_size or (run >= min_size and is_boundary):
                cur, run = cur + 1, 0
        rows.append(pid + [cur])
    return torch.tensor(rows, dtype=torch.long, device=ids.device).view(ids.shape[0], ids.shape[1] + 1)


@dataclass
class PatchLayout:
    """Everything the model needs to move bytes between positions, patches and windows."""

    aligned_ids: torch.Tensor  # [B, T] rows left-aligned (pads moved to the end)
    offsets: torch.Tensor | None  # [B] leading pads removed from each row (None: no padding)
    enc_ids: torch.Tensor  # [B, N_enc, Pm] bytes of each patch, PAD-filled
    enc_valid: torch.Tensor  # [B, N_enc, Pm] bool: slot holds a byte of the patch
    dec_ids: torch.Tensor  # [B, N_dec, C+Pm] decoder window ids (previous + current patch)
    read_all: torch.Tensor  # [B, T+1] flat index into [N_dec * 2Pm] of the prediction of x[u]
    byte_patch: torch.Tensor  # [B, T+1] pid(u): patch of x[u] (aligned; u = T is the next byte)
    patch_ids: torch.Tensor  # [B, T] patch of each input byte (input coordinates), -1 for pads
    enc_ngrams: torch.Tensor | None = None  # [B, N_enc, Pm, K] n-gram bucket ids of each patch byte (ngrams.py)
    enc_pos: torch.Tensor | None = None  # [B, T] flat index pid(t) * Pm + j(t) of x[t] in the encoder grid
    byte_states: torch.Tensor | None = None  # [B, T+1, d_local] a stream encoder's states of x' (encode_layout sets)

    @property
    def read_index(self) -> torch.Tensor:
        """[B, T]: where the logit of position t (predicting x[t+1]) is read."""
        return self.read_all[:, 1:]

    @property
    def n_patches(self) -> int:
        return self.enc_ids.shape[1]


def make_layout(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, config,
                entropy_table: torch.Tensor | None = None) -> PatchLayout:
    """Build the grids of the module docstring for fixed, dynamic or entropy patching (which
    reads the model's `entropy_table`)."""
    ids, offsets = left_align(input_ids, attention_mask)
    batch, length = ids.shape
    device = ids.device
    pm = config.max_patch
    u = torch.arange(length + 1, device=device)
    if config.patching == "fixed":
        pid = (u // pm).expand(batch, -1)
        start = pid * pm
        n_enc, n_dec = -(-length // pm), length // pm + 1
        patch_len = torch.full((batch, n_dec), pm, device=device)
    else:
        boundary = None
        if config.patching == "entropy":
            boundary = entropy_boundaries(ids, entropy_table, config.entropy_threshold)
        pid = dynamic_patch_ids(ids, config.min_patch_size, config.max_patch_size, boundary)
        n_dec = int(pid[:, -1].max()) + 1
        n_enc = int(pid[:, -2].max()) + 1 if length else 0
        first = torch.full((batch, n_dec), length + 1, device=device, dtype=torch.long)
        start = first.scatter_reduce(1, pid, u.expand(batch, -1), reduce="amin")
        ends = torch.zeros((batch, n_dec), device=device, dtype=torch.long).scatter_add_(1, pid, torch.ones_like(pid))
        patch_len, start = ends, start.gather(1, pid)
    slot = u - start  # j(u)
    # encoder grid from x[t], t < T
    enc_flat = torch.full((batch, n_enc * pm), PAD_ID, device=device, dtype=ids.dtype)
    enc_pos = (pid[:, :length] * pm + slot[:, :length]).expand(batch, -1)
    enc_flat = enc_flat.scatter(1, enc_pos, ids)
    enc_ids = enc_flat.view(batch, n_enc, pm)
    enc_valid = torch.zeros(batch, n_enc * pm, device=device, dtype=torch.bool).scatter(
        1, enc_pos, torch.ones_like(enc_pos, dtype=torch.bool)).view(batch, n_enc, pm)
    enc_ngrams = None
    if config.ngram_max:  # the n-gram buckets of x[t] go where x[t] goes; empty slots get bucket 0
        hashes = row_ngram_buckets(ids, config.ngram_max, config.ngram_buckets)
        k = hashes.shape[-1]
        enc_ngrams = torch.zeros(batch, n_enc * pm, k, device=device, dtype=torch.long).scatter(
            1, enc_pos[..., None].expand(-1, -1, k), hashes).view(batch, n_enc, pm, k)
    # decoder windows from x'[u], u <= T
    shifted = torch.cat([torch.full((batch, 1), BOS_ID, device=device, dtype=ids.dtype), ids], dim=1)
    ctx = config.dec_context
    width = ctx + pm
    cur_pos = (pid * width + ctx + slot).expand(batch, -1)
    dec_flat = torch.full((batch, (n_dec + 1) * width), PAD_ID, device=device, dtype=ids.dtype)
    dec_flat = dec_flat.scatter(1, cur_pos, shifted)
    if ctx:
        own_len = patch_len.gather(1, pid.expand(batch, -1))
        dec_flat = dec_flat.scatter(1, (pid + 1) * width + pm - own_len + slot, shifted)
    dec_ids = dec_flat[:, : n_dec * width].view(batch, n_dec, width)
    patch_ids = unalign(pid[:, :length].expand(batch, -1).contiguous(), offsets, fill=-1)
    if attention_mask is not None:
        patch_ids = patch_ids.masked_fill(attention_mask == 0, -1)
    return PatchLayout(ids, offsets, enc_ids, enc_valid, dec_ids, cur_pos, pid.expand(batch, -1), patch_ids,
                       enc_ngrams, enc_pos)


def needed_windows(layout: PatchLayout, needed: torch.Tensor) -> torch.Tensor | None:
    """[B, K] indices of the decoder windows that hold the logits of the `needed` positions
    ([B, T] bool, input frame: position t predicts x[t+1]), each row's needed windows first; None
    when every row needs all N_dec windows. Windows are independent (the decoder is causal within
    a window only), so decoding just these gives the needed logits exactly."""
    n_dec, width = layout.dec_ids.shape[1:]
    needed = needed.bool()
    if layout.offsets is not None:  # to the aligned frame: aligned[b, r] = needed[b, r + offset_b]
        length = needed.shape[1]
        src = torch.arange(length, device=needed.device)[None] + layout.offsets[:, None]
        needed = needed.gather(1, src.clamp(max=length - 1)) & (src < length)
    window = layout.read_index // width
    want = torch.zeros(window.shape[0], n_dec, dtype=torch.long, device=window.device).scatter_add_(
        1, window, needed.long()) > 0
    k = max(int(want.sum(1).max()), 1) if want.numel() else n_dec
    return None if k >= n_dec else torch.argsort((~want).int(), dim=1, stable=True)[:, :k]


def pick_windows(x: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
    """x [B, N, ...] -> x[b, windows[b, k], ...] [B, K, ...]."""
    index = windows.view(*windows.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
    return x.gather(1, index)


def place_windows(h: torch.Tensor, windows: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of `pick_windows` for h [B, K, ...]: [B, n, ...], zeros where no window was picked."""
    index = windows.view(*windows.shape, *([1] * (h.dim() - 2))).expand_as(h)
    return h.new_zeros(h.shape[0], n, *h.shape[2:]).scatter(1, index, h)
