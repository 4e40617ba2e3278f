"""The shared-prefix trunk (model/shared_prefix.py): constrained training rows that share a prompt
read it once, with the same logits and gradients as row by row (issue 13 item 2)."""

from __future__ import annotations

import random

import pytest
import torch

from stlm_selfplay.envs.evaluation import tictactoe_positions
from stlm_selfplay.envs.formats import format_action, format_prompt
from stlm_selfplay.model import STLMConfig, STLMForCausalLM
from stlm_selfplay.model.shared_prefix import pack
from stlm_selfplay.selfplay.batch import _pack

BASE = dict(d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, d_ff=64, max_seq_len=128, d_local=16, local_heads=2)


def random_model(seed: int = 0, **overrides) -> STLMForCausalLM:
    """A model whose every parameter is random (no zero-initialised output), global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = STLMForCausalLM(STLMConfig(**{**BASE, **overrides}))
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.3)
    return model


def constrained_rows(n_positions: int, seed: int = 0, shuffle: bool = False):
    """Right-padded `prompt + action` rows of random positions, one per legal action (ragged prompts),
    their group ids, and the loss mask on the action bytes; `shuffle` interleaves the groups."""
    positions = random.Random(seed).sample(tictactoe_positions(), n_positions)
    rows = [(format_prompt(p.game, p.game.current_player, style="compact").encode(), format_action(a).encode(), i)
            for i, p in enumerate(positions) for a in p.legal]
    if shuffle:
        random.Random(seed + 1).shuffle(rows)
    ids, attn, loss = _pack([(prompt, action) for prompt, action, _ in rows])
    return ids, attn, loss, torch.tensor([g for _, _, g in rows])


def action_loss(model, ids, attn, loss, **kwargs):
    """A loss that reads every action byte's log-prob with a different weight (so that every
    logit of the action positions matters to the gradient)."""
    logits = model(ids, attention_mask=attn, **kwargs).logits.float()
    logp = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    weights = torch.linspace(0.5, 1.5, logp.numel()).view_as(logp)
    return (logp * weights * loss[:, 1:]).sum(), logits


@pytest.mark.parametrize("overrides", [
    dict(patch_size=1, n_local_encoder_layers=0, n_local_decoder_layers=0, d_local=32),
    dict(patch_size=2),
    dict(patch_size=4),
    dict(patching="dynamic", min_patch_size=1, max_patch_size=4),
    dict(patch_size=2, ngram_max=4, ngram_buckets=64),
    dict(patch_size=2, logit_scale=10.0),
], ids=["p1-plain", "p2", "p4", "dynamic", "ngrams", "logit_scale"])
def test_shared_prefix_logits_and_gradients_equal_row_by_row(overrides):
    model = random_model(1, **overrides).train()
    ids, attn, loss, groups = constrained_rows(10)
    rows_loss, rows_logits = action_loss(model, ids, attn, loss)
    rows_loss.backward()
    rows_grad = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    shared_loss, shared_logits = action_loss(model, ids, attn, loss, prefix_groups=groups)
    shared_loss.backward()
    real = attn.bool()
    assert torch.allclose(shared_logits[real], rows_logits[real], atol=1e-5, rtol=1e-5)
    assert shared_loss.item() == pytest.approx(rows_loss.item(), rel=1e-6)
    for p, g in zip(model.parameters(), rows_grad):
        assert torch.allclose(p.grad, g, atol=1e-5, rtol=1e-4)


def test_interleaved_groups_and_single_rows_pack_exactly():
    model = random_model(2, patch_size=2).eval()
    ids, attn, loss, groups = constrained_rows(8, seed=3, shuffle=True)
    groups = torch.cat([groups, torch.tensor([groups.max() + 1])])  # a group of one row
    ids, attn = torch.cat([ids, ids[:1]]), torch.cat([attn, attn[:1]])
    with torch.no_grad():
        rows = model(ids, attention_mask=attn).logits
        shared = model(ids, attention_mask=attn, prefix_groups=groups).logits
    assert torch.allclose(shared[attn.bool()], rows[attn.bool()], atol=1e-5)


def test_pack_reads_each_groups_prompt_patches_once():
    """Two groups of 3 rows, prompts of 6 bytes and 3-byte actions that differ in byte 2, P = 2:
    patches [0,1] [2,3] [4,5] are shared, [6,7] and [8] are each row's own (s = 3, n_r = 5)."""
    model = random_model(0, patch_size=2)
    rows = [(prompt, b"[" + d + b"]") for prompt in (b"abcdef", b"uvwxyz") for d in (b"1", b"2", b"3")]
    ids, attn, _ = _pack(rows)
    src, pos, mask, dest = pack(model.patch_layout(ids, attn), torch.tensor([0, 0, 0, 1, 1, 1]))
    assert src.shape == (2, 3 + 3 * 2)
    assert pos[0].tolist() == [0, 1, 2, 3, 4, 3, 4, 3, 4]
    # row 2's own patch 3 (element 5) sees the shared patches and itself, not row 1's patches
    assert mask[0, 0, 5].tolist() == [True, True, True, False, False, True, False, False, False]
    assert mask[0, 0, 2].tolist() == [True, True, True] + [False] * 6  # shared patches: causal among themselves
    n = ids.shape[1] // 2 + 1  # patches per row in the layout
    assert dest[4 * n + 1] == 1 * 9 + 1 and dest[4 * n + 4] == 9 + 6  # group 1, row 1: shared patch 1, own patch 4


def test_routed_models_ignore_prefix_groups():
    model = random_model(4, patch_size=2, mod_every=2, mod_routing="causal").eval()
    ids, attn, _, groups = constrained_rows(4)
    with torch.no_grad():
        rows = model(ids, attention_mask=attn).logits
        shared = model(ids, attention_mask=attn, prefix_groups=groups).logits
    assert torch.equal(rows, shared)


@pytest.mark.parametrize("overrides, left_pad", [
    (dict(patch_size=1, n_local_encoder_layers=0, n_local_decoder_layers=0, d_local=32), False),
    (dict(patch_size=2), False),
    (dict(patch_size=4), True),
    (dict(patch_size=2, decoder_context=False), True),
    (dict(patching="dynamic", min_patch_size=1, max_patch_size=4), True),
], ids=["p1-plain", "p2", "p4-left-pad", "p2-no-context-left-pad", "dynamic-left-pad"])
def test_logits_needed_decodes_only_the_action_windows_exactly(overrides, left_pad):
    """`logits_needed`: the decoder runs only on the windows of the needed positions; their
    logits and the gradients of a loss that reads only them equal the full forward's."""
    model = random_model(3, **overrides).train()
    ids, attn, loss, groups = constrained_rows(6, seed=5)
    if left_pad:  # the same rows, pads moved to the front (the model aligns rows itself)
        shift = (attn == 0).sum(1)
        ids = torch.stack([row.roll(int(k)) for row, k in zip(ids, shift)])
        attn, loss = torch.stack([r.roll(int(k)) for r, k in zip(attn, shift)]), torch.stack(
            [r.roll(int(k)) for r, k in zip(loss, shift)])
    needed = torch.cat([loss[:, 1:], torch.zeros(len(ids), 1)], dim=1).bool()  # logit t predicts byte t+1
    full_loss, full_logits = action_loss(model, ids, attn, loss, prefix_groups=groups)
    full_loss.backward()
    full_grad = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    part_loss, part_logits = action_loss(model, ids, attn, loss, prefix_groups=groups, logits_needed=needed)
    part_loss.backward()
    assert torch.allclose(part_logits[needed], full_logits[needed], atol=1e-5, rtol=1e-5)
    assert part_loss.item() == pytest.approx(full_loss.item(), rel=1e-6)
    for p, g in zip(model.parameters(), full_grad):
        assert torch.allclose(p.grad, g, atol=1e-5, rtol=1e-4)
    if overrides.get("patch_size", 1) > 1 or "patching" in overrides:  # some windows were skipped
        layout = model.patch_layout(ids, attn)
        from stlm_selfplay.model.patching import needed_windows
        windows = needed_windows(layout, needed)
        assert windows is not None and windows.shape[1] < layout.dec_ids.shape[1]
