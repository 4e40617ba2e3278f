"""Sampler and scorer: cached == uncached, HF greedy == ours, score == sampler log-probs,
stop strings, temperatures, truncation and too-long inputs."""

from __future__ import annotations

import pytest
import torch
from _model_fixtures import small_config, trained_model

import stlm_selfplay  # noqa: F401
from stlm_selfplay.model import ByteTokenizer, STLMForCausalLM, generate, score
from stlm_selfplay.model.sampling import emit_logprobs, next_byte_logits
from stlm_selfplay.model.tokenizer import BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE

PROMPTS = [b"", b"ROMEO:", b"First Citizen:\nBefore we proceed", b"the ", b"KING HENRY", b"O", b"And so", b"What say you, my lord? "]


@pytest.mark.parametrize("patching,new_bytes", [("fixed", 200), ("dynamic", 40)])
def test_cached_and_uncached_sampling_agree(patching, new_bytes):
    """8 ragged prompts (left-padded in the uncached reference), a model trained 50 steps."""
    model = trained_model(patching)
    fast = generate(model, PROMPTS, new_bytes, generator=torch.Generator().manual_seed(3))
    slow = generate(model, PROMPTS, new_bytes, generator=torch.Generator().manual_seed(3), use_cache=False)
    assert sum(len(c.text) for c in fast) > 8 * new_bytes * 0.75  # most rows really ran to the end
    for a, b in zip(fast, slow):
        assert a.text == b.text and a.stop_reason == b.stop_reason
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), rtol=1e-4, atol=1e-4)


def test_hf_greedy_generate_equals_our_greedy_sampler():
    model = trained_model("fixed")
    tok = ByteTokenizer()
    prompts = [p.decode() for p in PROMPTS[1:5]]
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left")
    out = model.generate(**enc, max_new_tokens=40, do_sample=False, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id)
    ours = generate(model, [p.encode() for p in prompts], 40, greedy=True)
    for row, c in zip(out[:, enc["input_ids"].shape[1]:].tolist(), ours):
        assert c.stop_reason == "length"
        assert bytes(row) == c.text


def test_score_equals_the_sampler_log_probs():
    model = trained_model("fixed")
    done = generate(model, PROMPTS, 60, generator=torch.Generator().manual_seed(5))
    scored = score(model, PROMPTS, [c.text for c in done], batch_size=3)
    for c, s in zip(done, scored):
        assert s.dtype == torch.float32 and s.shape == (len(c.text),)
        torch.testing.assert_close(s, torch.tensor(c.logprobs[: len(c.text)]), rtol=1e-4, atol=1e-4)


def test_score_is_a_proper_distribution_over_next_bytes():
    """The 256 byte probabilities `score` gives after a context, plus the end-of-text probability
    of the model's next-byte distribution, sum to 1 (1e-5); PAD and BOS get exactly 0; and `score`
    agrees with that distribution byte for byte."""
    model = trained_model("fixed")
    options = [bytes([b]) for b in range(256)]
    scored = torch.stack(score(model, [b"ROMEO"] * 256, options)).squeeze(1)
    ids = torch.tensor([list(b"ROMEO")])
    with torch.no_grad():
        full = emit_logprobs(next_byte_logits(model, ids, torch.ones_like(ids)))[0, -1]  # [V], the next byte
    assert full.shape == (VOCAB_SIZE,)
    torch.testing.assert_close(scored, full[:256], rtol=0, atol=1e-5)
    eos = full[EOS_ID].exp()
    assert 0 < eos < 1
    assert abs(float(scored.exp().sum() + eos) - 1.0) < 1e-5
    assert full[PAD_ID].exp() == 0 and full[BOS_ID].exp() == 0
    assert abs(float(full.exp().sum()) - 1.0) < 1e-5


def test_stop_strings_are_included_and_end_generation():
    model = trained_model("fixed")
    free = generate(model, [b"ROMEO:"], 80, greedy=True)[0]
    stop = free.text[10:12]
    cut = generate(model, [b"ROMEO:"], 80, greedy=True, stop=[stop])[0]
    assert cut.stop_reason == "stop"
    assert cut.text.endswith(stop) and free.text.startswith(cut.text)
    assert stop not in cut.text[:-len(stop)]
    assert len(cut.logprobs) == len(cut.text)


def test_eos_ends_a_row_and_is_not_in_the_text():
    torch.manual_seed(0)
    model = STLMForCausalLM(small_config()).eval()
    with torch.no_grad():  # make EOS likely: its head row points along the mean hidden state
        model.byte_embed.weight[EOS_ID] = 0.0
        model.byte_embed.weight[:256] *= 0.1
    out = generate(model, [b"ab"] * 4, 100, generator=torch.Generator().manual_seed(0))
    assert {c.stop_reason for c in out} >= {"eos"}
    for c in out:
        if c.stop_reason == "eos":
            assert len(c.logprobs) == len(c.text) + 1 and len(c.text) < 100
        else:
            assert c.stop_reason == "length" and len(c.text) == 100


def test_per_row_temperature_and_top_k_one_is_greedy():
    model = trained_model("fixed")
    greedy = generate(model, PROMPTS[1:4], 30, greedy=True)
    top1 = generate(model, PROMPTS[1:4], 30, top_k=1, temperature=[0.5, 1.0, 2.0],
                    generator=torch.Generator().manual_seed(1))
    assert [c.text for c in greedy] == [c.text for c in top1]
    # log-probs are under the temperature-scaled, untruncated distribution
    cold, hot = top1[0].logprobs, generate(model, PROMPTS[1:2], 30, top_k=1, temperature=2.0)[0].logprobs
    assert sum(cold) > sum(hot)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, PROMPTS[1:4], 5, temperature=[1.0, 1.0])


def test_sampling_is_reproducible_from_the_generator_seed():
    model = trained_model("fixed")
    a = generate(model, PROMPTS, 40, generator=torch.Generator().manual_seed(9))
    b = generate(model, PROMPTS, 40, generator=torch.Generator().manual_seed(9))
    c = generate(model, PROMPTS, 40, generator=torch.Generator().manual_seed(10))
    assert [x.text for x in a] == [x.text for x in b]
    assert [x.text for x in a] != [x.text for x in c]


def test_too_long_inputs_are_rejected_unless_truncating_left():
    model = trained_model("fixed")
    context = model.config.max_seq_len
    long_prompt = b"x" * (context - 10) + b"ROMEO:"
    with pytest.raises(ValueError, match="truncate_left"):
        generate(model, [long_prompt], 20)
    kept = long_prompt[-(context - 20):]
    truncated = generate(model, [long_prompt], 20, greedy=True, truncate_left=True)[0]
    assert truncated.text == generate(model, [kept], 20, greedy=True)[0].text
    with pytest.raises(ValueError, match="truncate_left"):
        score(model, [long_prompt], [b"abcdefghijklmnopqrstu"])
    s = score(model, [long_prompt], [b"abc"], truncate_left=True)[0]
    torch.testing.assert_close(s, score(model, [long_prompt[-(context - 3):]], [b"abc"])[0])
    with pytest.raises(ValueError, match="contexts"):
        score(model, [b"a", b"b"], [b"c"])
