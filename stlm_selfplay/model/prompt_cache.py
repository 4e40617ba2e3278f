"""The trunk's keys and values of earlier prompts, carried into later prompts that extend them.

A game played with append-only prompts (the `transcript` prompt style: the game so far, then the
current line) asks the model about a prompt that begins with the previous move's whole prompt. The
trunk is causal and a closed patch never changes (fixed, whitespace and entropy patching decide a
boundary from the bytes before it), so the keys, values and states of a prompt's closed patches
are those of every prompt it begins. `PromptCache` keeps them between calls:

    store:   after a prompt pass, for each row with c closed patches (c >= 1):
             key = the patch keys of patches 0..c-1 (bytes, slot validity, n-gram buckets)
             value = each trunk layer's k, v, keep at positions 0..c-1 and the states of patches 0..c-1
             (a stream decoder, `decoder_attention: stream`, reads every patch's condition)
    lookup:  a new row takes the deepest stored depth c at which its own first c patch keys match,
             and the pass runs the trunk over patches c.. only, on top of those caches

Rows without a match take the shared prompt pass (`prefix_sharing.py`); rows with one are grouped
by depth (one trunk call per depth). The result equals the plain pass to float rounding
(tests/model/test_prompt_cache.py). A cache belongs to one model with fixed weights: make a new
one after every parameter update (the self-play policies are rebuilt per rollout). Entries stay
when prompts continue from them (the games of a rollout open with the same prompt, so one entry
serves them all); at most `max_entries` are kept, the least recently used go first. An entry holds
(n_layers x 2 x n_kv_heads x head_dim + d_model) x c floats for c patches.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from stlm_selfplay.model.layers import CacheStep
from stlm_selfplay.model.prefix_sharing import encode_distinct, shared_trunk_pass


class PromptCache:
    """Trunk caches of prompts' closed patches, keyed by those patches (module docstring)."""

    def __init__(self, max_entries: int = 1024):
        self.max_entries = max_entries
        # key -> (depth, (k, v, keep), states): k, v [n_layers, H, depth, d], keep [n_layers, depth],
        # states [depth, d_model]
        self.entries: OrderedDict[bytes, tuple] = OrderedDict()
        self.depths: dict[int, int] = {}  # depth -> entries stored at that depth
        self.hits = self.misses = 0  # rows that continued a stored prompt / did not
        self.reused = 0  # patches whose trunk pass a hit saved

    def __len__(self) -> int:
        return len(self.entries)

    @staticmethod
    def _key(row, depth: int) -> bytes:
        """The dict key of a row's first `depth` patch keys (`row`: a numpy array [N, K])."""
        return row[:depth].tobytes()

    def _drop(self, key: bytes) -> None:
        entry = self.entries.pop(key)
        self.depths[entry[0]] -= 1

    def lookup(self, keys: torch.Tensor, closed: torch.Tensor) -> tuple[list[int], list]:
        """Per row of patch keys [B, N, K] with `closed` [B] closed patches: (depth found, 0 when
        none; the entry or None). Found entries become the most recently used."""
        depths = sorted((d for d, n in self.depths.items() if n > 0), reverse=True)
        found, entries = [], []
        for row, c in zip(keys.cpu().numpy(), closed.tolist()):
            hit = None
            for d in depths:
                if d <= c and (key := self._key(row, d)) in self.entries:
                    self.entries.move_to_end(key)
                    hit = self.entries[key]
                    break
            found.append(0 if hit is None else hit[0])
            entries.append(hit)
        self.hits += sum(d > 0 for d in found)
        self.misses += sum(d == 0 for d in found)
        self.reused += sum(found)
        return found, entries

    def store(self, keys: torch.Tensor, closed: torch.Tensor, caches, state: torch.Tensor) -> None:
        """Keep each row's closed patches (`closed` [B]) from the pass's trunk caches and state."""
        width = int(closed.max()) if closed.numel() else 0
        if width < 1 or self.max_entries < 1:
            return
        k = torch.stack([cache.k[:, :, :width] for cache in caches], dim=1)  # [B, n_layers, H, width, d]
        v = torch.stack([cache.v[:, :, :width] for cache in caches], dim=1)
        keep = torch.stack([cache.keep[:, :width] for cache in caches], dim=1)
        rows = keys.cpu().numpy()
        for r, c in enumerate(closed.tolist()):
            if c < 1:
                continue
            key = self._key(rows[r], c)
            if key in self.entries:
                self.entries.move_to_end(key)
                continue
            layers = (k[r, :, :, :c].clone(), v[r, :, :, :c].clone(), keep[r, :, :c].clone())
            self.entries[key] = (c, layers, state[r, :c].clone())
            self.depths[c] = self.depths.get(c, 0) + 1
        while len(self.entries) > self.max_entries:
            self._drop(next(iter(self.entries)))

    def trunk_pass(self, model, layout, keys: torch.Tensor, closed: torch.Tensor, length: int | None,
                   patches: torch.Tensor | None = None):
        """`shared_trunk_pass` with the stored prompts' patches reused: (state [B, N, d_model], trunk
        caches of B rows holding `length` patches), then the rows' closed patches stored. `patches`:
        the trunk inputs when already encoded (a stream encoder), else each distinct patch encoded once."""
        found, entries = self.lookup(keys, closed)
        patches = encode_distinct(model, layout, keys) if patches is None else patches
        batch, n, _ = patches.shape
        if not any(found):
            state, caches = shared_trunk_pass(model, patches, keys, None, length)
        else:
            state = torch.zeros_like(patches)
            caches = model.new_trunk_caches(batch, patches.device, patches.dtype, length)
            for depth in sorted(set(found)):  # one trunk call per stored depth (0: the shared pass)
                rows = [r for r, d in enumerate(found) if d == depth]
                index = torch.tensor(rows, device=patches.device)
                if depth == 0:
                    part_state, part = shared_trunk_pass(model, patches[index], keys[index], None, length)
                else:  # the trunk up to the group's last next-byte patch (the rest of the grid is padding)
                    upto = max(min(int(closed[rows].max()) + 1, n), depth)
                    part_state, part = self._continue(model, patches[index, depth:upto], [entries[r] for r in rows],
                                                      depth, upto, length)
                    part_state = torch.nn.functional.pad(part_state, (0, 0, 0, n - upto))
                state[index] = part_state
                for cache, src in zip(caches, part):
                    cache.k[index], cache.v[index], cache.keep[index] = src.k, src.v, src.keep
        self.store(keys, closed, caches, state)
        return state, caches

    @staticmethod
    def _continue(model, patches: torch.Tensor, entries: list, depth: int, n: int, length: int | None):
        """Rows sharing `depth` stored patches: their caches and states filled from the entries, the
        trunk over patches depth..n-1 -> (state [R, n, d_model], caches)."""
        rows, device = patches.shape[0], patches.device
        caches = model.new_trunk_caches(rows, device, patches.dtype, length)
        k, v, keep = (torch.stack([e[1][i] for e in entries], dim=1) for i in range(3))  # [n_layers, R, ...]
        for layer, cache in enumerate(caches):
            cache.k[:, :, :depth], cache.v[:, :, :depth], cache.keep[:, :depth] = k[layer], v[layer], keep[layer]
        state = torch.zeros(rows, n, patches.shape[-1], device=device, dtype=patches.dtype)
        state[:, :depth] = torch.stack([e[2] for e in entries])
        if depth < n:
            step = CacheStep(None, torch.full((rows,), depth, dtype=torch.long, device=device), n)
            out, _ = model.trunk(patches, torch.arange(depth, n, device=device)[None], caches, step)
            state[:, depth:] = out
        return state, caches
