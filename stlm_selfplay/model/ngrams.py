"""Hashed byte n-gram embeddings (BLT, Pagnoni et al. 2024) for the local encoder.

For byte position t of a row and n = 3..N (N = config.ngram_max), with x[i] = BEFORE for i < 0
(positions before the row's first byte):

    hash_n(t)   = sum_{i=0}^{n-1} (x[t-i] + 1) * A^i   mod M       (A = 1_000_003, M = 2^31 - 1)
    bucket_n(t) = hash_n(t) mod buckets + (n - 3) * buckets         (one table of K = N - 2 blocks)
    e_t         = E[x_t] + sum_n E_ngram[bucket_n(t)]               (local encoder input, * sqrt(d_local))

Integer arithmetic only: the same bytes give the same buckets on every device, in training, in
the KV-cached sampler (which keeps the last N-1 bytes of each row) and in the scorer. hash_{n+1}
extends hash_n by one older byte, so all K hashes cost N integer passes.
"""

from __future__ import annotations

import torch
from torch import nn

from stlm_selfplay.model.tokenizer import VOCAB_SIZE

BEFORE = VOCAB_SIZE  # stands for the bytes before a row's start
HASH_BASE = 1_000_003
HASH_MOD = 2**31 - 1
MIN_N = 3


def ngram_sizes(config) -> range:
    """n = 3..ngram_max (empty when the option is off)."""
    return range(MIN_N, config.ngram_max + 1) if config.ngram_max else range(0)


def ngram_buckets(history: torch.Tensor, max_n: int, buckets: int) -> torch.Tensor:
    """history [B, max_n - 1 + T] (the max_n - 1 ids before each target position, then the T
    targets) -> bucket ids [B, T, K] of the n-grams ending at each target, n = 3..max_n."""
    length = history.shape[1] - (max_n - 1)
    x = history.long() + 1
    h = torch.zeros(history.shape[0], length, dtype=torch.long, device=history.device)
    power, out = 1, []
    for i in range(max_n):  # add byte t - i
        h = (h + x[:, max_n - 1 - i: max_n - 1 - i + length] * power) % HASH_MOD
        power = power * HASH_BASE % HASH_MOD
        if i + 1 >= MIN_N:
            out.append(h % buckets + (i + 1 - MIN_N) * buckets)
    return torch.stack(out, dim=-1)


def row_ngram_buckets(ids: torch.Tensor, max_n: int, buckets: int) -> torch.Tensor:
    """Left-aligned rows [B, T] -> bucket ids [B, T, K] (positions before the start are BEFORE)."""
    before = torch.full((ids.shape[0], max_n - 1), BEFORE, dtype=torch.long, device=ids.device)
    return ngram_buckets(torch.cat([before, ids.long()], dim=1), max_n, buckets)


class NgramEmbedding(nn.Module):
    """One table of K * buckets rows; forward sums the K looked-up rows: [..., K] -> [..., d]."""

    def __init__(self, config):
        super().__init__()
        self.max_n, self.buckets = config.ngram_max, config.ngram_buckets
        self.table = nn.Embedding(len(ngram_sizes(config)) * config.ngram_buckets, config.d_local)

    def forward(self, bucket_ids: torch.Tensor) -> torch.Tensor:
        return self.table(bucket_ids).sum(-2)
