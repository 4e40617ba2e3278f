"""Scoring a few candidate continuations of each context: one cached pass per context.

Constrained self-play and the exact game evaluators need, for every waiting game, the
log-probability of each legal action's text after the same prompt. `score` would run one full
forward pass per (prompt, action) row, re-encoding the prompt once per legal move. Here the
prompt is read once into a KV-cached `DecodeState` (what prompts share read once: `prefix_sharing.py`),
its rows are repeated once per candidate (`DecodeState.select`; the trunk caches hold only the
patches the candidates can reach: `room`), and the candidates' bytes are stepped through the
caches:

    lp[c, 0] = log p(c_0 | prompt)                      from the prompt's own next-byte logits
    lp[c, j] = log p(c_j | prompt, c_<j)                after stepping c_0 .. c_{j-1}

with log p the same emittable-token log-softmax as `score` (`emit_logprobs`). The decoding state
equals a full forward pass (tests/model/test_sampling.py), so the result equals `score` on the
(context, candidate) pairs to float rounding, for fixed, dynamic and entropy patching alike.
Bytes that all of a context's candidates share (the `[` of `[4]`) are stepped once per context,
before its rows are repeated. Cost: one prompt pass per context instead of one per candidate,
then one cached step per remaining candidate byte but the last (a candidate leaves the batch
once its bytes are scored).
"""

from __future__ import annotations

from typing import Sequence

import torch

from stlm_selfplay.model.decoding import DecodeState
from stlm_selfplay.model.sampling import emit_logprobs, fit_context
from stlm_selfplay.model.tokenizer import encode_bytes


@torch.inference_mode()
def score_choices(
    model,
    contexts: Sequence[bytes],
    choices: Sequence[Sequence[bytes]],
    batch_size: int = 64,
    truncate_left: bool = False,
    prompt_cache=None,
) -> list[list[torch.Tensor]]:
    """Per-byte log-probs (fp32, CPU) of every candidate in `choices[i]` after `contexts[i]`;
    out[i][k] has len(choices[i][k]) entries. Contexts are read `batch_size` at a time; with
    `truncate_left` a context keeps its newest bytes that leave room for its longest choice.
    `prompt_cache` (a `PromptCache`): contexts that extend an earlier call's reuse its trunk caches."""
    if len(contexts) != len(choices):
        raise ValueError(f"{len(contexts)} contexts but {len(choices)} choice lists; pass one list per context")
    max_len = model.config.max_seq_len
    cands = [[encode_bytes(c) for c in row] for row in choices]
    rows = []
    for i, (ctx, row) in enumerate(zip(contexts, cands)):
        longest = max((len(c) for c in row), default=0)
        rows.append(fit_context(encode_bytes(ctx), max_len - longest, truncate_left, f"context {i} + its longest choice"))
    out: list[list[torch.Tensor]] = [[None] * len(row) for row in cands]  # every entry is set below
    was_training = model.training
    model.eval()
    for b in range(0, len(rows), batch_size):
        chunk = [i for i in range(b, min(b + batch_size, len(rows))) if cands[i]]
        if chunk:
            _score_chunk(model, [rows[i] for i in chunk], [cands[i] for i in chunk], [out[i] for i in chunk],
                         prompt_cache)
    model.train(was_training)
    return out


def _common_prefix(row: list[list[int]]) -> int:
    """Length of the longest prefix shared by every candidate of one context."""
    n = 0
    while all(len(c) > n and c[n] == row[0][n] for c in row):
        n += 1
    return n


def _score_chunk(model, rows: list[list[int]], cands: list[list[list[int]]], out: list[list[torch.Tensor]],
                 prompt_cache=None) -> None:
    """One DecodeState over `rows`: the chunk's shared prefix stepped once per context, then the
    rows repeated once per candidate and stepped to the longest candidate."""
    state = DecodeState(model, rows, room=max(len(c) for row in cands for c in row), prompt_cache=prompt_cache)
    device = state.cond.device
    # bytes 0..shared-1 are the same for every candidate of a context (and each candidate keeps
    # at least one byte to score after them): step them before the rows are repeated
    shared = max(0, min(min(_common_prefix(row), min(len(c) for c in row) - 1) for row in cands))
    prefix_lp = torch.zeros(len(rows), shared)
    for j in range(shared):
        tok = torch.tensor([row[0][j] for row in cands], dtype=torch.long, device=device)
        prefix_lp[:, j] = emit_logprobs(state.logits).gather(1, tok[:, None])[:, 0].cpu()
        state.step(tok)
    owner = [(i, k) for i, row in enumerate(cands) for k in range(len(row))]
    flat = [cands[i][k] for i, k in owner]
    width = max(len(c) for c in flat)
    state.select(torch.tensor([i for i, _ in owner], device=device))
    lengths = torch.tensor([len(c) for c in flat])
    tokens = torch.tensor([c + [0] * (max(width, 1) - len(c)) for c in flat], dtype=torch.long)
    lp = torch.zeros(len(flat), max(width, 1))
    lp[:, :shared] = prefix_lp[torch.tensor([i for i, _ in owner])]
    active = torch.arange(len(flat))  # candidate of each live row of `state`
    for j in range(shared, width):
        lp[active, j] = emit_logprobs(state.logits).gather(1, tokens[active, j:j + 1].to(device))[:, 0].cpu()
        live = lengths[active] > j + 1  # rows with bytes left to score; the others leave the batch
        if not bool(live.any()):
            break
        if not bool(live.all()):
            state.select(live.nonzero()[:, 0].to(device))
            active = active[live]
        state.step(tokens[active, j].to(device))
    for r, (i, k) in enumerate(owner):
        out[i][k] = lp[r, :len(flat[r])].clone()
