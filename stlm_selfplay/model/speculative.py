"""Self-speculative greedy decoding with an early exit (LayerSkip, Elhoushi et al. 2024, sec. 5).

The draft model is the trunk's first E+1 layers followed by the shared head (what the
`early_exit` objective trains); the verifier is the whole model. One round, for one sequence:

1. Exact bytes. The current patch's condition comes from the full trunk, so its bytes are the
   full model's greedy bytes as they are decoded. When the patch closes, only layers 0..E run.
2. Draft. Up to `draft_patches - 1` more patches are decoded with draft conditions
   c^_m = W_c norm(h^E_{m-1}); every patch close runs layers 0..E only (their KV caches are the
   full model's: the lower layers are shared).
3. Verify. Layers E+1..L-1 run once over the round's closed patches (continuing from their
   layer-E outputs, writing their caches), giving the exact conditions c_m; one decoder pass
   over the drafted windows with c_m gives the full model's logits at every drafted byte (a stream
   decoder, `decoder_attention: stream`: one cached pass over the drafted bytes' positions).
4. Accept the longest prefix where the drafted byte is the full model's argmax, plus the full
   model's byte at the first mismatch. On a mismatch the decoding state rolls back to the start
   of that patch (trunk cache entries past it are masked and later overwritten) and replays the
   accepted bytes under the exact condition.

So the output equals `generate(..., greedy=True)` byte for byte (up to float ties), and each
round reads the upper layers' weights once for several patches instead of once per patch.
acceptance rate = accepted drafted bytes / drafted bytes checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from stlm_selfplay.model.decoding import DecodeState
from stlm_selfplay.model.layers import CacheStep
from stlm_selfplay.model.sampling import Completion, emit_logprobs, exit_layers_range, fit_context
from stlm_selfplay.model.tokenizer import EOS_ID, encode_bytes


@dataclass
class SpeculativeStats:
    drafted: int = 0  # draft bytes checked by the full model
    accepted: int = 0  # of those, equal to the full model's greedy byte
    rounds: int = 0  # verification passes

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


@dataclass
class _Close:
    """A patch closed during the round: its trunk position, layer-E output and the decoding
    state right after it (the next patch's window)."""

    pos: int
    trunk_out: torch.Tensor
    snap: dict


@dataclass
class _Segment:
    """A patch decoded under a draft condition: its window, its drafted targets and (a stream
    decoder) the decoder input each target was predicted from."""

    window: torch.Tensor | None = None
    targets: list[int] = field(default_factory=list)
    inputs: list[torch.Tensor] = field(default_factory=list)


class _Output:
    """The bytes emitted so far and the stop rules: EOS, a stop string, max_new_bytes."""

    def __init__(self, max_new: int, stops: list[bytes], temperature: float):
        self.text, self.logprobs = bytearray(), []
        self.max_new, self.stops, self.temperature = max_new, stops, temperature
        self.reason = None

    def would_end(self, pending: list[int]) -> bool:
        """Whether emitting `pending` after the current text ends generation."""
        text = self.text + bytes(t for t in pending if t != EOS_ID)
        return (bool(pending) and pending[-1] == EOS_ID) or len(self.text) + len(pending) >= self.max_new \
            or any(text.endswith(s) for s in self.stops)

    def emit(self, token: int, logits: torch.Tensor) -> bool:
        """Append the greedy `token` with its log-prob under `logits`; True once generation ends."""
        self.logprobs.append(float(emit_logprobs(logits / self.temperature)[token]))
        if token == EOS_ID:
            self.reason = "eos"
            return True
        self.text.append(token)
        if any(self.text.endswith(s) for s in self.stops):
            self.reason = "stop"
        elif len(self.logprobs) >= self.max_new:
            self.reason = "length"
        return self.reason is not None


def _step(state: DecodeState, token: int) -> bool:
    """Feed one byte; True when it closed a patch."""
    before = int(state.n_done[0])
    state.step(torch.tensor([token], device=state.cond.device))
    return int(state.n_done[0]) != before


def _verify(model, state: DecodeState, closes: list[_Close], segments: list[_Segment], exit_layer: int):
    """Exact conditions after each close [n_closes, d_local] and the full model's logits at
    every drafted target (one tensor [n_targets, V] per segment)."""
    outs = torch.stack([c.trunk_out for c in closes])[None]  # [1, n, d_model] after layer E
    pos0, n = closes[0].pos, len(closes)
    positions = torch.arange(pos0, pos0 + n, device=outs.device)[None]
    step = CacheStep(None, torch.tensor([pos0], device=outs.device), pos0 + n)
    upper = range(exit_layer + 1, model.config.n_layers)
    full, _ = model.trunk(outs, positions, state.trunk_caches, step, layers=upper)
    conds = model.condition(full[0])
    if not segments:
        return conds, []
    ctx = state.ctx
    if state.stream:
        return conds, _verify_stream(model, state, closes[0], segments, conds)
    windows = torch.stack([s.window for s in segments])
    slots = torch.arange(windows.shape[1], device=windows.device)[None]
    hidden = model.decoder(model.embed_bytes(windows), conds[: len(segments)], slots, outputs_from=ctx)
    logits = model.head(hidden).float()  # window slots ctx..: the current patch's
    return conds, [logits[i, : len(s.targets)] for i, s in enumerate(segments)]


def _verify_stream(model, state: DecodeState, first: _Close, segments: list[_Segment], conds: torch.Tensor):
    """`decoder_attention: stream`: the drafted patches' inputs (contiguous positions from the first
    close's byte on; their encoder states, if any, do not depend on a condition) run once through
    the decoder under their exact conditions, overwriting the drafted cache entries; the full
    model's logits at every target."""
    sizes = [len(s.targets) for s in segments]
    inputs = torch.stack([x for s in segments for x in s.inputs])[None]
    cond = torch.cat([conds[i].expand(n, -1) for i, n in enumerate(sizes)])[None]
    start = first.snap["dec_len"][:1] - 1
    positions = start[:, None] + torch.arange(inputs.shape[1], device=inputs.device)
    step = CacheStep(None, start, int(start) + inputs.shape[1], model.decoder.lookback)
    hidden = model.decoder(inputs, cond, positions, state.dec_caches, step)
    return list(model.head(hidden[0]).float().split(sizes))


def _one(model, ids: list[int], max_new: int, stops: list[bytes], exit_layer: int, draft_patches: int,
         temperature: float, stats: SpeculativeStats) -> Completion:
    out = _Output(max_new, stops, temperature)
    state = DecodeState(model, [ids])  # the prompt through the full trunk: an exact condition
    draft_layers = exit_layers_range(model, exit_layer)
    while True:
        # 1. exact bytes until the current patch closes (under the draft layers)
        state.layers = draft_layers
        while True:
            token = int(state.logits[0].argmax())
            if out.emit(token, state.logits[0]):
                return Completion(bytes(out.text), out.logprobs, out.reason)
            if _step(state, token):
                break
        closes = [_Close(int(state.n_done[0]) - 1, state.trunk_out[0], state.snapshot())]
        # 2. draft up to draft_patches - 1 more patches (or until generation would end)
        segments, pending, ended = [], [], False
        while len(closes) < draft_patches and not ended:
            segment = _Segment()
            segments.append(segment)
            while True:
                token = int(state.logits[0].argmax())
                segment.window = state.window[0].clone()  # x' of every target so far
                segment.targets.append(token)
                if state.stream:
                    segment.inputs.append(state.last_input()[0])
                pending.append(token)
                ended = out.would_end(pending)
                if ended or _step(state, token):
                    break
            if not ended:
                closes.append(_Close(int(state.n_done[0]) - 1, state.trunk_out[0], state.snapshot()))
        # 3. verify
        conds, logits = _verify(model, state, closes, segments, exit_layer)
        stats.rounds += 1
        # 4. accept the agreeing prefix and the full model's byte at the first mismatch
        for i, (segment, seg_logits) in enumerate(zip(segments, logits)):
            for j, drafted in enumerate(segment.targets):
                token = int(seg_logits[j].argmax())
                stats.drafted += 1
                stats.accepted += token == drafted
                if out.emit(token, seg_logits[j]):
                    return Completion(bytes(out.text), out.logprobs, out.reason)
                if token != drafted:  # roll back to the start of patch i and replay under c_i
                    state.restore(closes[i].snap)
                    state.reopen(conds[i][None])
                    state.layers = None  # a patch closed by the replay runs the full trunk
                    for replay in segment.targets[:j] + [token]:
                        _step(state, replay)
                    break
            else:
                continue
            break
        else:  # every drafted byte accepted: open the next patch under its exact condition
            state.reopen(conds[len(closes) - 1][None])


@torch.inference_mode()
def speculative_generate(
    model,
    prompts: list[bytes],
    max_new_bytes: int,
    exit_layer: int,
    draft_patches: int = 4,
    stop: Sequence[bytes] = (),
    temperature: float = 1.0,
    truncate_left: bool = False,
) -> tuple[list[Completion], SpeculativeStats]:
    """Greedy decoding of each prompt, drafted by the early exit after trunk layer `exit_layer`
    and verified by the full model every `draft_patches` patches (module docstring). Returns
    the completions (equal to `generate(..., greedy=True)`'s) and the acceptance statistics;
    log-probs are the full model's at `temperature`."""
    exit_layers_range(model, exit_layer)  # validates
    if draft_patches < 1:
        raise ValueError(f"draft_patches must be >= 1, got {draft_patches}")
    stats = SpeculativeStats()
    budget = model.config.max_seq_len - max_new_bytes
    stops = [bytes(s) for s in stop if s]
    was_training = model.training
    model.eval()
    completions = []
    for i, prompt in enumerate(prompts):
        ids = fit_context(encode_bytes(prompt), budget, truncate_left, f"prompt {i}")
        completions.append(_one(model, ids, max_new_bytes, stops, exit_layer, draft_patches, temperature, stats)
                           if max_new_bytes > 0 else Completion(b""))
    model.train(was_training)
    return completions, stats
