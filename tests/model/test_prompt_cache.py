"""The prompt cache (`prompt_cache.py`): prompts that extend an earlier call's prompts continue
from its stored trunk caches, and decode exactly as without the cache, for each patching and model
option; the entries are found, taken and bounded as documented."""

import pytest
import torch

from _model_fixtures import small_config
from stlm_selfplay.model import STLMForCausalLM, generate
from stlm_selfplay.model.choices import score_choices
from stlm_selfplay.model.decoding import DecodeState, right_padded
from stlm_selfplay.model.prefix_sharing import patch_keys
from stlm_selfplay.model.prompt_cache import PromptCache
from stlm_selfplay.model.tokenizer import encode_bytes

# the first call's prompts (a game's transcript after one and two moves, a short row, an empty one)
FIRST = [b"ttt x ...|...|... ?012345678>[4]\n", b"ttt x ...|...|... ?012345678>[4]\nttt o ...|.x.|... ?01235678>",
         b"ROMEO: I", b""]
# the second call: each first-call row extended (one by a single byte), a row that extends nothing,
# one that repeats a first-call prompt exactly and one that diverges inside its first patch
SECOND = [FIRST[0] + b"ttt o ...|.x.|... ?01235678>", FIRST[1] + b"[0]\nttt x o..|.x.|... ?1235678>",
          FIRST[2] + b"!", b"JULIET: Ay me", FIRST[0], b"ttX x ...|...|... ?012345678>"]
OPTIONS = [dict(), dict(patch_size=3), dict(patching="dynamic"), dict(patching="entropy"), dict(pooling="concat"),
           dict(ngram_max=4, ngram_buckets=64), dict(n_layers=4, mod_every=2),
           dict(n_local_decoder_layers=3, decoder_context_layers=1),
           dict(decoder_attention="stream", n_local_decoder_layers=2, patching="dynamic"),
           dict(decoder_attention="stream", encoder_attention="stream", n_local_encoder_layers=2),
           dict(patch_size=1, n_local_encoder_layers=0, n_local_decoder_layers=0, d_local=64)]


def model_with(**overrides):
    torch.manual_seed(0)
    model = STLMForCausalLM(small_config(max_seq_len=128, **overrides)).eval()
    for p in model.parameters():  # away from init, so every term matters
        p.data.add_(torch.randn_like(p) * 0.05)
    return model


def rows(prompts):
    return [encode_bytes(p) for p in prompts]


@pytest.mark.parametrize("overrides", OPTIONS)
def test_a_state_that_continues_stored_prompts_decodes_as_without_the_cache(overrides):
    model = model_with(**overrides)
    cache = PromptCache()
    with torch.inference_mode():
        DecodeState(model, rows(FIRST), prompt_cache=cache)
        stored = len(cache)
        assert stored == 3  # the empty row has no closed patch
        got = DecodeState(model, rows(SECOND), room=6, prompt_cache=cache)
        plain = DecodeState(model, rows(SECOND), room=6)
        assert cache.hits >= 3 and cache.reused > 0  # the extensions (and the repeat) continued stored prompts
        for step in range(6):  # cached steps read the caches the reused patches built
            torch.testing.assert_close(got.logits, plain.logits, rtol=0, atol=1e-5)
            tokens = torch.tensor([(7 * i + 3 * step) % 256 for i in range(len(SECOND))])
            got.step(tokens)
            plain.step(tokens)


def test_a_wrong_entry_shows_in_the_logits():
    """The equality above is not vacuous: corrupt the stored keys and the continued rows differ."""
    model = model_with()
    cache = PromptCache()
    with torch.inference_mode():
        DecodeState(model, rows(FIRST[:1]), prompt_cache=cache)
        (depth, (k, v, keep), state), = cache.entries.values()
        k.add_(0.5)
        got = DecodeState(model, rows(SECOND[:1]), prompt_cache=cache)
        plain = DecodeState(model, rows(SECOND[:1]))
    assert cache.hits == 1
    assert (got.logits - plain.logits).abs().max() > 1e-3


def test_entries_serve_every_row_that_continues_them_and_the_least_recently_used_go_first():
    model = model_with()
    cache = PromptCache(max_entries=2)
    with torch.inference_mode():
        DecodeState(model, rows(FIRST), prompt_cache=cache)
        assert len(cache) == 2  # three rows stored, the oldest went
        assert cache._key(patch_keys(model.patch_layout(right_padded(rows(FIRST[:1]), "cpu")))[0].numpy(), 8) not in cache.entries
        # two rows continue the same stored prompt (games that opened alike): both hit
        DecodeState(model, rows([FIRST[1] + b"[0]\n", FIRST[1] + b"[5]\n"]), prompt_cache=cache)
    assert cache.hits == 2 and cache.misses == len(FIRST)  # the first call found nothing
    assert len(cache) == 2 and sum(cache.depths.values()) == 2


@pytest.mark.parametrize("overrides", [dict(), dict(patching="dynamic")])
def test_generate_and_score_choices_with_the_cache_equal_them_without(overrides):
    model = model_with(**overrides)
    cache = PromptCache()
    first = generate(model, FIRST, 8, greedy=True, prompt_cache=cache)
    assert [c.text for c in first] == [c.text for c in generate(model, FIRST, 8, greedy=True)]
    nexts = [p + c.text + b"\nttt o" for p, c in zip(FIRST, first)]
    with_cache = generate(model, nexts, 8, greedy=True, prompt_cache=cache)
    without = generate(model, nexts, 8, greedy=True)
    assert cache.hits >= 3
    assert [c.text for c in with_cache] == [c.text for c in without]
    for a, b in zip(with_cache, without):
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), rtol=0, atol=1e-5)
    choices = [[b"[1]", b"[2]", b"[35]"]] * len(SECOND)
    score_choices(model, FIRST, choices[:len(FIRST)], prompt_cache=cache)
    for a, b in zip(score_choices(model, SECOND, choices, prompt_cache=cache), score_choices(model, SECOND, choices)):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=0, atol=1e-5)
