"""Recorded turns -> the `Batch` an RL objective trains on (see `objectives/rl.py`).

free mode: one row per turn, `prompt + action`, with `loss_mask` on the action bytes and the
rollout's per-byte log-probs as `old_logprobs` (aligned with `input_ids`: column t is byte t).

constrained mode: one row per (turn, legal action), `prompt + action`, with `loss_mask` on the
action bytes; `extras['groups']` maps rows to turns and `extras['chosen']` marks the row that
was played; `old_logprobs` is the rollout's log pi(chosen) per turn, `extras['old_probs']` each
row's probability under the rollout's policy (Decision.probs). Turns chosen by search
(selfplay/search.py) also carry `extras['search_probs']`, each row's root visit share (the
`search_policy` objective's target; each turn's rows sum to 1), and turns with exact values
(selfplay/action_values.py) `extras['action_values']`, each row's Q(h, b).

legal_mass (free mode, objectives/legal_mass.py): `legal_batch` has one row per (turn, legal
action), `prompt + action`, with `extras['groups']` mapping rows to turns (Decision.legal).

Rows are right-padded with PAD (the model counts patches from each row's first real byte, so
the padding side does not change a row's log-probs).

Values (a model with a value head, model/value_head.py): `prompt_batch` packs each turn's prompt
alone, whose V(s) `state_values` reads from the trunk state of its last patch; `turn_values`
does it at rollout time (no gradient), the `value` objective's micro-steps with gradient.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from stlm_selfplay.model.tokenizer import PAD_ID
from stlm_selfplay.model.value_head import state_values
from stlm_selfplay.objectives.base import Batch
from stlm_selfplay.selfplay.rollout import Turn


def _pack(rows: list[tuple[bytes, bytes]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, loss_mask) for right-padded `prompt + action` rows."""
    width = max(len(p) + len(a) for p, a in rows)
    ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    loss = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, (prompt, action) in enumerate(rows):
        n = len(prompt) + len(action)
        ids[i, :n] = torch.frombuffer(bytearray(prompt + action), dtype=torch.uint8).long()
        attn[i, :n] = 1
        loss[i, len(prompt):n] = 1.0
    return ids, attn, loss


def turns_to_batch(
    turns: Sequence[Turn],
    advantages: torch.Tensor,
    temperature: float = 1.0,
    ref_logprobs: torch.Tensor | None = None,
    step: int = 0,
    total_steps: int = 1,
) -> Batch:
    """Build the RL batch for `turns` (all of one action mode) with per-turn `advantages` [N]."""
    constrained = turns[0].decision.candidates is not None
    extras: dict = {"temperature": float(temperature) if temperature > 0 else 1.0}
    if constrained:
        rows = [(t.prompt, c) for t in turns for c in t.decision.candidates]
        extras["groups"] = torch.tensor([i for i, t in enumerate(turns) for _ in t.decision.candidates])
        extras["chosen"] = torch.tensor([k == t.decision.chosen for t in turns for k in range(len(t.decision.candidates))])
        old = torch.tensor([t.decision.logprob for t in turns], dtype=torch.float32)
        if all(t.decision.probs is not None for t in turns):  # the behaviour distribution (objectives/mmd.py)
            extras["old_probs"] = torch.tensor([p for t in turns for p in t.decision.probs], dtype=torch.float32)
        if all(t.decision.search_probs is not None for t in turns):
            extras["search_probs"] = torch.tensor([p for t in turns for p in t.decision.search_probs],
                                                  dtype=torch.float32)
        if all(t.decision.action_values is not None for t in turns):  # mmd values: exact
            extras["action_values"] = torch.tensor([q for t in turns for q in t.decision.action_values],
                                                   dtype=torch.float32)
    else:
        rows = [(t.prompt, t.action) for t in turns]
        width = max(len(p) + len(a) for p, a in rows)
        old = torch.zeros((len(turns), width), dtype=torch.float32)
        for i, t in enumerate(turns):
            start = len(t.prompt)
            old[i, start:start + len(t.decision.byte_logprobs)] = torch.tensor(t.decision.byte_logprobs)
    ids, attn, loss = _pack(rows)
    return Batch(input_ids=ids, attention_mask=attn, loss_mask=loss, step=step, total_steps=total_steps,
                 old_logprobs=old, advantages=advantages.float(), ref_logprobs=ref_logprobs, extras=extras)


def legal_batch(turns: Sequence[Turn]) -> Batch:
    """The `legal_mass` rows of free-mode `turns`: prompt + each legal action (Decision.legal)."""
    rows = [(t.prompt, a) for t in turns for a in t.decision.legal]
    ids, attn, loss = _pack(rows)
    groups = torch.tensor([i for i, t in enumerate(turns) for _ in t.decision.legal])
    return Batch(ids, attention_mask=attn, loss_mask=loss, extras={"groups": groups})


def action_logit_positions(batch: Batch) -> torch.Tensor:
    """[B, T] bool: the positions whose logits score an action byte (logit t predicts byte t+1)."""
    targets = batch.target_mask() > 0
    return torch.cat([targets, torch.zeros_like(targets[:, :1])], dim=1)


def prompt_batch(turns: Sequence[Turn]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of the turns' prompts, right-padded: the states V(s) reads."""
    ids, attn, _ = _pack([(t.prompt, b"") for t in turns])
    return ids, attn


@torch.no_grad()
def turn_values(model, turns: Sequence[Turn], chunk: int = 256, routing: str | None = None) -> np.ndarray:
    """V(s) [N] of each turn's prompt (float64), `chunk` prompts per forward; [] for no turns."""
    device = next(model.parameters()).device
    out = []
    for k in range(0, len(turns), chunk):
        ids, attn = prompt_batch(turns[k:k + chunk])
        out.append(state_values(model, ids.to(device), attn.to(device), routing).cpu().double().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def game_text(transcript) -> bytes:
    """A played game's text: prompt + action + newline per move; a prompt that begins with the last
    model prompt before it (the `transcript` style restates the game so far, bots' moves included)
    replaces the text so far instead of adding to it."""
    text, last = b"", b""
    for _, prompt, action in transcript:
        text = (prompt if last and prompt.startswith(last) else text + prompt) + action + b"\n"
        last = prompt or last
    return text


def transcript_batch(episodes, max_len: int):
    """Auxiliary-objective batch: each played game as its transcript bytes (`game_text`),
    right-padded, every byte a target (the last `max_len` bytes of long games)."""
    rows = [(b"", game_text(e.transcript)[-max_len:]) for e in episodes]
    ids, attn, loss = _pack(rows)
    return Batch(ids, attention_mask=attn, loss_mask=attn.float())
