"""The prompt pass of a decoding state, with what rows share computed once.

The prompts of one batch often begin alike: every self-play game starts from the same position
(the first move's prompts are identical), every tic-tac-toe prompt opens with `ttt x ` and the
4,520 evaluation positions share their first board rows. Two things are exact to share:

- the local encoder reads one patch at a time, so its output depends only on that patch's bytes
  (and n-gram buckets): each distinct patch of the batch is encoded once (`encode_distinct`; a
  stream encoder, `encoder_attention: stream`, reads the whole prefix and runs per row instead);
- the trunk is causal, so the keys, values and states of patches 0..d-1 depend only on those
  patches: rows whose first d patches are equal share them (`shared_trunk_pass`).

The trunk runs in levels 0 = d_0 < d_1 < ... < d_k = n (n = the batch's patch count):

    level j: one row per distinct prefix of d_j patches (U_j rows; the first row holding it
             stands for it), its patches d_{j-1} .. d_j - 1 through the trunk on top of the
             KV caches of its prefix at level j - 1 (those rows repeated: `LayerCache.select`)

and the caches of the last level are repeated once per input row. The depths minimise

    sum_j  U_j (d_j - d_{j-1})  +  COPY_COST U_j d_{j-1}  +  LEVEL_COST

in patch-steps (trunk work, cache copies, one trunk call's fixed cost), by dynamic programming
over d; a batch of distinct rows with nothing worth sharing gets one level, the plain pass. The
states and caches equal the plain pass's to float rounding (tests/model/test_prefix_sharing.py).
The levels' caches hold the batch's n patches only; the last level's rows are copied into caches
of the length the caller asks for.
"""

from __future__ import annotations

import torch

from stlm_selfplay.model.layers import CacheStep

COPY_COST = 0.05  # a cached patch copied by `select`, in patch-steps of trunk work
LEVEL_COST = 16.0  # one more trunk call (kernel launches, Python), in patch-steps


def first_rows(group: torch.Tensor) -> torch.Tensor:
    """group [R] labels 0..U-1 -> [U]: the first row holding each label."""
    rows = torch.arange(group.shape[0], device=group.device)
    first = torch.full((int(group.max()) + 1,), group.shape[0], dtype=torch.long, device=group.device)
    return first.scatter_reduce(0, group, rows, "amin")


def rank(group: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """[R]: for each row, the position in `first` of the row standing for its label."""
    slot = torch.empty(int(group.max()) + 1, dtype=torch.long, device=group.device)
    slot[group[first]] = torch.arange(first.shape[0], device=group.device)
    return slot[group]


def patch_keys(layout) -> torch.Tensor:
    """[B, N, K] long: everything the encoder reads of each patch (bytes, slot validity, n-grams)."""
    ids = layout.enc_ids
    parts = [ids, layout.enc_valid.long()]
    if layout.enc_ngrams is not None:
        parts.append(layout.enc_ngrams.reshape(*ids.shape[:2], -1))
    return torch.cat(parts, dim=-1)


def encode_distinct(model, layout, keys: torch.Tensor) -> torch.Tensor:
    """The layout's trunk inputs [B, N, d_model], each distinct patch (`keys` [B, N, K]) encoded once."""
    batch, n, _ = keys.shape
    _, inverse = torch.unique(keys.reshape(batch * n, -1), dim=0, return_inverse=True)
    first = first_rows(inverse)
    flat = lambda t: t.reshape(1, batch * n, *t.shape[2:])[:, first]  # noqa: E731
    ngrams = None if layout.enc_ngrams is None else flat(layout.enc_ngrams)
    encoded = model.encode_patches(flat(layout.enc_ids), flat(layout.enc_valid), ngrams)[0]
    return encoded[inverse].view(batch, n, -1)


def prefix_groups(keys: torch.Tensor) -> list[torch.Tensor]:
    """groups[d] [B]: the distinct prefix of d patches each row holds (groups[0] all 0), computed
    depth by depth from (prefix of d - 1, patch d - 1). Stops once every row is distinct (the
    deeper depths are then the rows themselves)."""
    batch = keys.shape[0]
    groups = [torch.zeros(batch, dtype=torch.long, device=keys.device)]
    for d in range(keys.shape[1]):
        _, inverse = torch.unique(torch.cat([groups[-1][:, None], keys[:, d]], dim=1), dim=0, return_inverse=True)
        groups.append(inverse)
        if int(inverse.max()) + 1 == batch:
            break
    return groups


def plan_levels(counts: list[int]) -> list[int]:
    """Depths d_1 < ... < d_k = n minimising the module docstring's cost; counts[d] = U_d (d = 0..n)."""
    n = len(counts) - 1
    best, back = [0.0] + [float("inf")] * n, [0] * (n + 1)
    for d in range(1, n + 1):
        for prev in range(d):
            cost = best[prev] + counts[d] * (d - prev) + COPY_COST * counts[d] * prev + LEVEL_COST
            if cost < best[d]:
                best[d], back[d] = cost, prev
    depths, d = [], n
    while d > 0:
        depths.append(d)
        d = back[d]
    return depths[::-1]


def plan(keys: torch.Tensor) -> tuple[list[torch.Tensor], list[int]]:
    """(prefix_groups(keys), the level depths `plan_levels` picks for them) for patch keys [B, N, K]."""
    batch, n = keys.shape[:2]
    groups = prefix_groups(keys)
    return groups, plan_levels([int(g.max()) + 1 for g in groups] + [batch] * (n + 1 - len(groups)))


def shared_trunk_pass(model, patches: torch.Tensor, keys: torch.Tensor, layers: range | None = None,
                      length: int | None = None):
    """Trunk over patches [B, N, d_model] (patch `keys` [B, N, K]) from empty caches, shared
    prefixes once (module docstring) -> (state [B, N, d_model], trunk caches of B rows holding
    `length` patches, default max_patches)."""
    batch, n, _ = patches.shape
    device = patches.device
    groups, depths = plan(keys)
    at = lambda d: groups[min(d, len(groups) - 1)]  # noqa: E731 - past the last depth every row is distinct
    state = torch.empty_like(patches)
    caches, rows, start = None, None, 0  # rows: the input row standing for each cache row
    for depth in depths:
        first = first_rows(at(depth))
        if caches is None:  # the levels' caches hold the batch's n patches; the last is copied to full length
            caches = model.new_trunk_caches(first.shape[0], device, patches.dtype, length=n)
        else:  # each new row continues the cache row of its prefix at the previous depth
            parent = rank(at(start), rows)[first]
            for cache in caches:
                cache.select(parent)
        step = CacheStep(None, torch.full((first.shape[0],), start, dtype=torch.long, device=device), depth)
        out, _ = model.trunk(patches[first, start:depth], torch.arange(start, depth, device=device)[None], caches,
                             step, layers=layers)
        state[:, start:depth] = out[rank(at(depth), first)]
        rows, start = first, depth
    full, final = model.new_trunk_caches(batch, device, patches.dtype, length), rank(at(n), rows)
    for cache, level in zip(full, caches):
        cache.fill(level, final)
    return state, full
