"""The trunk over rows that share a prefix, run once per group: constrained self-play's training forward.

A constrained turn trains on one row per legal action, `prompt + action`, and those rows differ
only in their last bytes. Row by row, the trunk reads each turn's prompt patches once per action.
Here the rows of a group (a turn: `extras['groups']`) are packed into ONE trunk sequence:

    [ shared patches 0..s-1 | row 1's patches s..n_1-1 | row 2's patches s..n_2-1 | ... ]

s = the leading patches whose bytes (and n-gram buckets, and slot masks) are equal in every row
of the group, n_r = row r's patches holding a byte. Element e (row part p_e, patch index j_e;
p = shared for the first s) attends to element e' iff

    j_e' <= j_e  and  (p_e' = shared  or  p_e' = p_e)

and is rotated by RoPE at position j_e, so every element sees exactly the keys, at exactly the
positions, that the same patch sees in its own row: the trunk states equal the row-by-row ones
(to float rounding: masked attention instead of the causal kernel), and so do the logits of every
real byte and the gradients. The local encoder and decoder still run per row (they are per patch
and cheap); only the trunk, the bulk of the compute, gets cheaper: per turn it reads
s + sum_r (n_r - s) patches instead of sum_r n_r.

States of pad patches (j >= n_r) are zero here; they only produce logits at pad positions,
which no loss reads.
"""

from __future__ import annotations

import torch

from stlm_selfplay.model.patching import PatchLayout


def shared_patch_counts(layout: PatchLayout, rows: list[list[int]]) -> list[int]:
    """s of each group (`rows[g]`: its row indices): leading patches equal in all of its rows."""
    first = torch.empty(layout.enc_ids.shape[0], dtype=torch.long)
    for members in rows:
        first[members] = members[0]
    same = (layout.enc_ids == layout.enc_ids[first]).all(-1) & (layout.enc_valid == layout.enc_valid[first]).all(-1)
    if layout.enc_ngrams is not None:
        same &= (layout.enc_ngrams == layout.enc_ngrams[first]).flatten(2).all(-1)
    leading = same.int().cumprod(1).sum(1).tolist()  # [R] patches equal to the group's first row
    real = layout.enc_valid.any(-1).sum(1).tolist()  # pad patches are never shared (a one-row group)
    return [min(min(leading[r], real[r]) for r in members) for members in rows]


def group_rows(groups: torch.Tensor) -> list[list[int]]:
    """Row indices of each group id, groups numbered 0..G-1 (each row's group in `groups` [R])."""
    out: list[list[int]] = [[] for _ in range(int(groups.max()) + 1 if len(groups) else 0)]
    for r, g in enumerate(groups.tolist()):
        out[g].append(r)
    return [g for g in out if g]


def pack(layout: PatchLayout, groups: torch.Tensor):
    """(src [G, L] flat index into the rows' patches [R*N] (R*N = a zero patch), positions [G, L],
    mask [G, 1, L, L] bool, dest [R*N] flat index into the packed states [G*L] (G*L = zero))."""
    rows = group_rows(groups)
    n_rows, n = layout.enc_ids.shape[:2]
    real = layout.enc_valid.any(-1).sum(1).tolist()  # n_r
    shared = shared_patch_counts(layout, rows)
    seqs = []  # per group: (src, part, pos) lists
    for g, (members, s) in enumerate(zip(rows, shared)):
        src = [members[0] * n + j for j in range(s)]
        part, pos = [-1] * s, list(range(s))
        for k, r in enumerate(members):
            src += [r * n + j for j in range(s, real[r])]
            part += [k] * (real[r] - s)
            pos += list(range(s, real[r]))
        seqs.append((src, part, pos))
    length = max(len(src) for src, _, _ in seqs)
    src_t = torch.full((len(seqs), length), n_rows * n, dtype=torch.long)
    part_t = -2 - torch.arange(length).repeat(len(seqs), 1)  # pads: a part of their own
    pos_t = torch.zeros((len(seqs), length), dtype=torch.long)
    dest = torch.full((n_rows * n,), len(seqs) * length, dtype=torch.long)
    for g, ((src, part, pos), members, s) in enumerate(zip(seqs, rows, shared)):
        m = len(src)
        src_t[g, :m], part_t[g, :m], pos_t[g, :m] = torch.tensor(src), torch.tensor(part), torch.tensor(pos)
        where = {(part[e], pos[e]): g * length + e for e in range(m)}
        for k, r in enumerate(members):
            for j in range(real[r]):
                dest[r * n + j] = where[(-1, j)] if j < s else where[(k, j)]
    same_part = (part_t[:, None, :] == -1) | (part_t[:, None, :] == part_t[:, :, None])
    mask = (pos_t[:, None, :] <= pos_t[:, :, None]) & same_part
    return src_t, pos_t, mask[:, None], dest


def shared_prefix_trunk(model, layout: PatchLayout, groups: torch.Tensor) -> torch.Tensor:
    """Trunk states [R, N, d_model] of the rows' patches, each group's shared prefix encoded and
    read by the trunk once (module docstring): the local encoder runs only on the patches the
    packed sequences read. `model`: an STLMForCausalLM whose trunk has no routed layers."""
    n_rows, n = layout.enc_ids.shape[:2]
    src, pos, mask, dest = (t.to(layout.enc_ids.device) for t in pack(layout, groups.cpu()))
    used = torch.unique(src[src < n_rows * n])  # the [R*N] patches some packed sequence reads

    def used_patches(grid: torch.Tensor | None) -> torch.Tensor | None:  # [R, N, ...] -> [1, U, ...]
        return None if grid is None else grid.reshape(n_rows * n, *grid.shape[2:])[used][None]

    encoded = model.encode_patches(used_patches(layout.enc_ids), used_patches(layout.enc_valid),
                                   used_patches(layout.enc_ngrams))[0]
    flat = encoded.new_zeros(n_rows * n + 1, encoded.shape[-1]).index_copy(0, used, encoded)
    state, _ = model.trunk(flat[src], pos, attn_mask=mask)
    d = state.shape[-1]
    out = torch.cat([state.reshape(-1, d), state.new_zeros(1, d)])
    return out[dest].view(n_rows, n, d)
