"""Entropy-driven patching: the small byte model's entropies and boundaries equal hand
examples, and the KV-cached sampler equals the full forward (log-probs to 1e-5)."""

from __future__ import annotations

import math

import numpy as np
import torch
from _model_fixtures import assert_cached_sampler_matches, small_config, text_bytes, train_steps

from stlm_selfplay.model import STLMForCausalLM
from stlm_selfplay.model.entropy import entropy_boundaries, fit_entropy_table
from stlm_selfplay.model.tokenizer import BOS_ID, VOCAB_SIZE

V = VOCAB_SIZE


def test_entropy_table_equals_the_smoothed_counts_by_hand():
    # "abac": context (a, b) is followed by a once; (b, a) by c once; nothing else seen
    ids = np.array([97, 98, 97, 99])
    h = fit_entropy_table(ids, alpha=0.5)
    z = 1 + 0.5 * V
    seen, unseen = 1.5 / z, 0.5 / z
    hand = -(seen * math.log(seen) + (V - 1) * unseen * math.log(unseen))
    assert math.isclose(float(h[97 * V + 98]), hand, rel_tol=1e-5)
    assert math.isclose(float(h[98 * V + 97]), hand, rel_tol=1e-5)
    assert math.isclose(float(h[99 * V + 99]), math.log(V), rel_tol=1e-6)  # unseen context: uniform


def test_boundaries_and_patches_equal_a_hand_example():
    """A table where only the contexts (' ', 't') and ('h', 'e') are uncertain: after "the cat
    the" the patches end after 'e' (x[t-1] = 'h'), after ' t'... and at max_patch_size."""
    table = torch.zeros(V * V)
    table[ord(" ") * V + ord("t")] = 3.0
    table[ord("h") * V + ord("e")] = 3.0
    ids = torch.tensor([list(b"the cat the")])
    flags = entropy_boundaries(ids, table, 2.0)[0].tolist()
    # positions: t0 h1 e2 ' '3 c4 a5 t6 ' '7 t8 h9 e10; (' ', 't') is the context of t8, ('h','e') of e2, e10
    assert [i for i, f in enumerate(flags) if f] == [2, 8, 10]
    model = STLMForCausalLM(small_config(patching="entropy", entropy_threshold=2.0, min_patch_size=2,
                                         max_patch_size=4))
    model.entropy_table.copy_(table)
    pid = model.patch_layout(ids).byte_patch[0].tolist()
    # "the" | " cat" (max 4) | " t" | "he" | next
    assert pid == [0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 4]
    first = entropy_boundaries(ids[:, :1], table, 2.0, torch.tensor([BOS_ID]))
    assert first.tolist() == [[False]]


def test_cached_sampler_equals_the_full_forward_and_the_scorer():
    torch.manual_seed(0)
    data = text_bytes(50_000)
    model = STLMForCausalLM(small_config(patching="entropy", entropy_threshold=2.5, min_patch_size=1,
                                         max_patch_size=6))
    model.fit_entropy_patching(np.frombuffer(data, dtype=np.uint8))
    sizes = torch.bincount(model.patch_layout(torch.tensor([list(data[:2000])])).byte_patch[0])
    assert 1.5 < sizes.float().mean() < 6  # the threshold makes patches of mixed lengths
    train_steps(model, data, 30, seq_len=64, batch=8)
    prompts = [b"", b"ROMEO:", b"First Citizen:\nBefore we proceed", b"the ", b"What say you, my lord? "]
    assert_cached_sampler_matches(model, prompts, seed=2)


def test_the_table_is_saved_with_the_model(tmp_path):
    model = STLMForCausalLM(small_config(patching="entropy"))
    model.fit_entropy_patching(np.frombuffer(b"abcabcabd" * 10, dtype=np.uint8))
    model.save_pretrained(tmp_path)
    loaded = STLMForCausalLM.from_pretrained(tmp_path)
    assert torch.equal(loaded.entropy_table, model.entropy_table) and model.entropy_table.abs().sum() > 0
