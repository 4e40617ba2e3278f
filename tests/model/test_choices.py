"""score_choices (one cached prompt pass per context) equals score (one row per pair)."""

import pytest
import torch

from _model_fixtures import small_config, trained_model
from stlm_selfplay.model import STLMForCausalLM, score
from stlm_selfplay.model.choices import score_choices

CONTEXTS = [b"ttt x x.o|...|... ?1345678>", b"", b"ROMEO: I", b"JULIET:\nO Romeo, Romeo! wherefore art thou R"]
# ragged candidates: a common prefix ("[", "[1"), none, an empty candidate, one-byte ones
CHOICES = [[b"[1]", b"[3]", b"[14]", b"[5"], [b"ab", b"b"], [b" am", b"", b"f", b" will not"], [b"omeo", b"o"]]


def _pairs(contexts, choices):
    return [c for c, row in zip(contexts, choices) for _ in row], [x for row in choices for x in row]


def assert_equal_to_score(model, contexts, choices, batch_size):
    got = score_choices(model, contexts, choices, batch_size=batch_size)
    want = score(model, *_pairs(contexts, choices), batch_size=5)
    flat = [t for row in got for t in row]
    assert [len(t) for t in flat] == [len(c) for row in choices for c in row]
    for g, w in zip(flat, want):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, w, rtol=0, atol=1e-5)


@pytest.mark.parametrize("patching", ["fixed", "dynamic"])
@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_score_choices_equals_score_on_a_trained_model(patching, batch_size):
    assert_equal_to_score(trained_model(patching), CONTEXTS, CHOICES, batch_size)


@pytest.mark.parametrize("overrides", [dict(patch_size=1, n_local_encoder_layers=0, n_local_decoder_layers=0, d_local=64),
                                       dict(patch_size=3), dict(patching="entropy"), dict(ngram_max=4, ngram_buckets=64),
                                       dict(logit_scale=10.0), dict(decoder_attention="stream", patching="dynamic"),
                                       dict(decoder_attention="stream", n_local_encoder_layers=0, decoder_lookback=6),
                                       dict(decoder_attention="stream", encoder_attention="stream",
                                            n_local_encoder_layers=2)])
def test_score_choices_equals_score_for_each_model_option(overrides):
    torch.manual_seed(0)
    model = STLMForCausalLM(small_config(max_seq_len=64, **overrides))
    assert_equal_to_score(model, CONTEXTS, CHOICES, batch_size=2)


def test_score_choices_keeps_training_mode_and_handles_empty_lists():
    model = trained_model("fixed")
    model.train()
    out = score_choices(model, [b"abc", b"de"], [[], [b"f"]])
    assert out[0] == [] and len(out[1]) == 1 and model.training
    model.eval()
    with pytest.raises(ValueError, match="choice list"):
        score_choices(model, [b"abc"], [])


def test_a_context_too_long_for_its_longest_choice_is_rejected_unless_truncating_left():
    model = trained_model("fixed")
    context = model.config.max_seq_len
    long_prompt = b"x" * (context - 2) + b"R"
    with pytest.raises(ValueError, match="truncate_left"):
        score_choices(model, [long_prompt], [[b"O", b"OMEO"]])
    got = score_choices(model, [long_prompt], [[b"O", b"OMEO"]], truncate_left=True)[0]
    kept = long_prompt[-(context - 4):]  # room for the longest choice, as score would keep for it
    torch.testing.assert_close(got[1], score(model, [kept], [b"OMEO"])[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(got[0], score(model, [kept], [b"O"])[0], rtol=0, atol=1e-5)
