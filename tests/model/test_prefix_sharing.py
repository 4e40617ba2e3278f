"""Prefix sharing in the prompt pass (`prefix_sharing.py`): the level plan equals a hand
computation, and a decoding state over rows that share prefixes (identical rows, common openings)
equals the same rows decoded one at a time, for each patching and model option."""

import pytest
import torch

from _model_fixtures import small_config
from stlm_selfplay.model import STLMForCausalLM
from stlm_selfplay.model.decoding import DecodeState, right_padded
from stlm_selfplay.model.prefix_sharing import (encode_distinct, patch_keys, plan, plan_levels, prefix_groups,
                                                shared_trunk_pass)
from stlm_selfplay.model.tokenizer import encode_bytes

# identical rows, common openings, a short row, an empty one, and 12 rows that differ only after 29 bytes
PROMPTS = [b"ttt x x.o|...|... ?1345678>", b"ttt x x.o|...|... ?1345678>", b"ttt x x.o|.o.|... ?135678>",
           b"ttt o ...|...|... ?012345678>", b"ttt x ...|...|... ?012345678>", b"ttt x ...|...|... ?012345678>",
           b"ttt x ...|...|... ?012345678> and", b"ROMEO: I", b"ttt", b""] * 2 + [
           b"ttt o ...|...|... ?012345678>" + bytes([c]) + b" then" for c in b"abcdefghijkl"]


def levels(model, rows: list[list[int]]) -> list[int]:
    """The level depths the prompt pass plans for `rows`."""
    return plan(patch_keys(model.patch_layout(right_padded(rows, "cpu"))))[1]


def test_plan_levels_equals_the_hand_computation():
    """counts U_d = 1, 1, 100, 100 (n = 3), cost sum_j U_j (d_j - d_j-1) + 0.05 U_j d_j-1 + 16:
    [3] = 316, [1, 3] = 17 + 221 = 238, [2, 3] = 216 + 126 = 342, [1, 2, 3] = 17 + 121 + 126 = 264."""
    assert plan_levels([1, 1, 100, 100]) == [1, 3]
    assert plan_levels([1, 100, 100, 100]) == [3]  # nothing shared: one level, the plain pass
    assert plan_levels([1, 1]) == [1]


def test_prefix_groups_counts_distinct_prefixes():
    keys = torch.tensor([[[1], [2], [3]], [[1], [2], [4]], [[1], [5], [3]], [[1], [2], [3]]])
    groups = prefix_groups(keys)
    assert [int(g.max()) + 1 for g in groups] == [1, 1, 2, 3]
    assert groups[3][0] == groups[3][3] and len({int(g) for g in groups[3][:3]}) == 3


@pytest.mark.parametrize("overrides", [dict(), dict(patch_size=3), dict(patching="dynamic"), dict(patching="entropy"),
                                       dict(pooling="concat", patching="dynamic"), dict(ngram_max=4, ngram_buckets=64), dict(n_layers=4, mod_every=2),
                                       dict(n_local_decoder_layers=3, decoder_context_layers=1),
                                       dict(decoder_attention="stream", n_local_decoder_layers=2, decoder_lookback=5),
                                       dict(decoder_attention="stream", encoder_attention="stream", patching="dynamic"),
                                       dict(patch_size=1, n_local_encoder_layers=0, n_local_decoder_layers=0,
                                            d_local=64)])
def test_shared_prompt_pass_equals_rows_alone(overrides):
    torch.manual_seed(0)
    model = STLMForCausalLM(small_config(max_seq_len=64, **overrides)).eval()
    rows = [encode_bytes(p) for p in PROMPTS]
    assert len(levels(model, rows)) >= 2  # the shared path really runs
    with torch.inference_mode():
        state = DecodeState(model, rows, room=6)  # caches of the prompt + 6 patches; the singles: full length
        alone = [DecodeState(model, [r]) for r in rows]
        for step in range(6):  # the cached steps read the caches the levels built
            for i, single in enumerate(alone):
                torch.testing.assert_close(state.logits[i], single.logits[0], rtol=0, atol=1e-5)
            tokens = torch.tensor([(7 * i + 3 * step) % 256 for i in range(len(rows))])
            state.step(tokens)
            for i, single in enumerate(alone):
                single.step(tokens[i:i + 1])


def test_the_batch_really_shares_and_the_trunk_states_equal_the_plain_pass():
    torch.manual_seed(0)
    model = STLMForCausalLM(small_config(max_seq_len=64)).eval()
    ids = torch.tensor([encode_bytes(PROMPTS[3] + bytes([c])) for c in b"abcdefghij"])  # one opening, 10 ends
    layout = model.patch_layout(ids)
    keys = patch_keys(layout)
    n = keys.shape[1]
    assert levels(model, ids.tolist()) == [n - 1, n]  # the opening once, then the 10 last patches
    with torch.inference_mode():
        plain_in = model.encode_layout(layout)
        shared_in = encode_distinct(model, layout, keys)
        torch.testing.assert_close(shared_in, plain_in, rtol=0, atol=1e-6)
        plain, _ = model.trunk(plain_in, torch.arange(plain_in.shape[1])[None])
        shared, caches = shared_trunk_pass(model, shared_in, keys)
    torch.testing.assert_close(shared, plain, rtol=0, atol=1e-5)
    assert len(caches) == model.config.n_layers and caches[0].k.shape[0] == ids.shape[0]
    assert caches[0].k.shape[2] == model.config.max_patches  # full length: decoding appends after the prompt
