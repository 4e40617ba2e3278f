"""Entropy-driven patch boundaries (BLT, Pagnoni et al. 2024) from a small byte model.

The small model is an order-2 byte n-gram model fitted once on training ids (`fit_entropy_table`):
for the context (a, b) of the last two ids, with counts c_y of the next id y and additive
smoothing alpha over the V ids,

    p(y | a, b) = (c_y + alpha) / (N_ab + alpha V),   H(a, b) = -sum_y p(y | a, b) ln p(y | a, b)

(an unseen context has the uniform entropy ln V). `patching: entropy` ends a patch after byte
x[t] when H(x[t-1], x[t]) > entropy_threshold (x[-1] = BOS: the first byte's context), i.e.
where the next byte is hard to predict, or after a special id, once the patch holds at least
min_patch_size bytes; and always at max_patch_size. The table [V * V] is a buffer of the model
(saved with it), so training, the KV-cached sampler and the scorer cut the same patches.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from stlm_selfplay.model.tokenizer import BOS_ID, NUM_BYTES, VOCAB_SIZE


def fit_entropy_table(ids: np.ndarray, alpha: float = 0.01) -> torch.Tensor:
    """float32 [V * V]: H(a, b) in nats, index a * V + b, from a 1-D id stream (formula above)."""
    ids = np.asarray(ids, dtype=np.int64)
    v = VOCAB_SIZE
    context = ids[:-2] * v + ids[1:-1]
    codes, counts = np.unique(context * v + ids[2:], return_counts=True)
    ctx = codes // v
    totals = np.bincount(ctx, weights=counts, minlength=v * v)  # N_ab
    seen = np.bincount(ctx, minlength=v * v)  # distinct next ids after (a, b)
    z = totals + alpha * v
    p = (counts + alpha) / z[ctx]
    h = np.bincount(ctx, weights=-p * np.log(p), minlength=v * v)
    p0 = alpha / z
    h += -(v - seen) * p0 * np.log(p0)  # the unseen next ids, alpha each
    h[totals == 0] = math.log(v)
    return torch.tensor(h, dtype=torch.float32)


def entropy_boundaries(ids: torch.Tensor, table: torch.Tensor, threshold: float,
                       first_prev: torch.Tensor | None = None) -> torch.Tensor:
    """[B, T] bool: may a patch end after ids[:, t]? H(ids[t-1], ids[t]) > threshold, or ids[t]
    is a special id. The id before column 0 is `first_prev` [B] (default BOS)."""
    if first_prev is None:
        first_prev = torch.full((ids.shape[0],), BOS_ID, dtype=torch.long, device=ids.device)
    prev = torch.cat([first_prev[:, None].long(), ids[:, :-1].long()], dim=1)
    high = table.to(ids.device)[prev * VOCAB_SIZE + ids.long()] > threshold
    return high | (ids >= NUM_BYTES)
