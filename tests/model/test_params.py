"""Presets, parameter accounting, FLOPs per byte and the `stlm params` command."""

from __future__ import annotations

import pytest

from stlm_selfplay.cli import main
from stlm_selfplay.errors import UserError
from stlm_selfplay.model import STLMConfig, flops_per_byte, load_preset, param_table
from stlm_selfplay.model.config import plain_twin, preset_fields
from stlm_selfplay.model.flops import GPT2_VOCAB, bpe_flops_per_token

PRESET_SIZES = {"stlm-10m": 10e6, "stlm-50m": 50e6, "stlm-100m": 100e6}
PRESET_CONTEXT = {"tiny": 256, "stlm-10m": 1024, "stlm-50m": 2048, "stlm-100m": 2048}


@pytest.mark.parametrize("name", list(PRESET_CONTEXT))
def test_presets_state_their_context_and_named_sizes_are_within_10_percent(name):
    config = load_preset(name)
    assert config.max_seq_len == PRESET_CONTEXT[name]
    assert config.patching == "fixed" and config.patch_size == 4
    table = param_table(config)
    assert table["total"] == table["embedding_encoder"] + table["trunk"] + table["decoder_head"]
    if name in PRESET_SIZES:
        assert abs(table["total"] / PRESET_SIZES[name] - 1) <= 0.10, table["total"]


def test_gpt2_baseline_counts_and_savings_by_hand():
    config = load_preset("stlm-10m")
    table = param_table(config)
    d, dl = config.d_model, config.d_local
    assert table["embedding_head"] == 259 * dl  # tied: the head is the embedding
    assert table["gpt2_embedding_head_tied"] == GPT2_VOCAB * d
    assert table["gpt2_total_untied"] == table["trunk"] + 2 * GPT2_VOCAB * d
    assert table["saved_embedding_head_tied"] == pytest.approx(1 - 259 * dl / (GPT2_VOCAB * d))


def test_flops_per_byte_of_a_plain_gpt_by_hand():
    config = load_preset("tiny", patch_size=1, n_local_encoder_layers=0, n_local_decoder_layers=0, d_local=128)
    d, f, n, t = config.d_model, config.d_ff, config.n_layers, config.max_seq_len
    kv = config.n_kv_heads * d // config.n_heads
    per_layer = d * d + 2 * d * kv + d * d + 3 * d * f
    expected = 6 * n * per_layer + 6 * n * d * (t + 1) + 6 * d * 259
    assert flops_per_byte(config) == pytest.approx(expected)
    pooled = load_preset("tiny")
    assert flops_per_byte(pooled) < flops_per_byte(load_preset("tiny", patch_size=1))


def test_bpe_flops_per_token_by_hand():
    """The BPE baseline's trunk at one token per position plus its tied head (no byte head)."""
    config = STLMConfig(**dict(plain_twin(preset_fields("tiny")), max_seq_len=64))
    d, f, n, t, v = config.d_model, config.d_ff, config.n_layers, config.max_seq_len, 1000
    kv = config.n_kv_heads * d // config.n_heads
    per_layer = d * d + 2 * d * kv + d * d + 3 * d * f
    assert bpe_flops_per_token(config, v) == pytest.approx(6 * n * per_layer + 6 * n * d * (t + 1) + 6 * d * v)
    assert bpe_flops_per_token(config, 259) == pytest.approx(flops_per_byte(config))  # a byte GPT is V = 259


@pytest.mark.parametrize("name", list(PRESET_CONTEXT))
def test_the_plain_twin_of_a_preset_is_a_plain_gpt_with_the_same_trunk(name):
    pooled, plain = load_preset(name), STLMConfig(**plain_twin(preset_fields(name)))
    assert plain.is_plain_gpt and plain.max_seq_len == pooled.max_seq_len
    assert param_table(plain)["trunk"] == param_table(pooled)["trunk"]
    assert flops_per_byte(plain) > flops_per_byte(pooled)


def test_the_plain_twin_keeps_trunk_options_and_drops_pooling_ones():
    fields = dict(d_model=64, n_heads=4, mlp="relu2", qk_norm=True, patching="dynamic", ngram_max=4,
                  pooling="attention", d_local=32, local_heads=2, n_local_encoder_layers=2)
    twin = plain_twin(fields)
    assert twin == dict(d_model=64, n_heads=4, mlp="relu2", qk_norm=True, patch_size=1, n_local_encoder_layers=0,
                        n_local_decoder_layers=0, d_local=64, local_heads=4)
    assert STLMConfig(**twin).is_plain_gpt and fields["patching"] == "dynamic"  # the input is not changed


def test_load_preset_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="valid: micro, stlm-100m, stlm-10m, stlm-50m, tiny"):
        load_preset("stlm-20m")
    bad = tmp_path / "bad.yaml"
    bad.write_text("d_model: 64\nn_head: 4\n")
    with pytest.raises(UserError, match="unknown field 'n_head'.*n_heads"):
        load_preset(str(bad))
    bad.write_text("patch_size: 0\n")
    with pytest.raises(UserError, match="patch_size"):
        load_preset(str(bad))


def test_stlm_params_prints_the_table(capsys):
    assert main(["params", "stlm-10m"]) == 0
    out = capsys.readouterr().out
    table = param_table(load_preset("stlm-10m"))
    for label in ("byte embedding + local encoder", "global trunk", "local decoder + head", "total",
                  "GPT-2 vocabulary (tied)", "GPT-2 vocabulary (untied)", "saved vs GPT-2"):
        assert label in out
    assert f"{table['trunk']:,}" in out and f"{table['total']:,}" in out
    assert f"{table['gpt2_total_untied']:,}" in out
    assert f"{100 * table['saved_embedding_head_tied']:.1f}% (tied)" in out


def test_stlm_params_unknown_preset_is_a_one_line_error(capsys):
    assert main(["params", "stlm-7m"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model preset 'stlm-7m'") and err.count("\n") == 1


def test_the_value_head_is_its_own_part_and_the_parts_add_up():
    config = load_preset("tiny", value_head=True)
    table = param_table(config)
    assert table["value_head"] == config.d_model + 1  # Linear(d_model, 1) with bias
    assert table["total"] == table["embedding_encoder"] + table["trunk"] + table["decoder_head"] + table["value_head"]
    assert param_table(load_preset("tiny"))["value_head"] == 0


@pytest.mark.parametrize("decoder_context", [True, False])
def test_flops_count_the_decoder_s_last_layer_at_the_read_slots_only(decoder_context):
    """Decoder layers but the last: W / P slots per byte; the last: keys/values at W / P slots, its
    queries, output projection and FFN at one slot per byte, a query at slot s over s + 1 keys."""
    from stlm_selfplay.model.flops import build_on_meta, decoder_flops

    config = load_preset("tiny", patch_size=4, n_local_decoder_layers=2, decoder_context=decoder_context)
    dl, fl, p = config.d_local, config.local_ff, 4
    c = p if decoder_context else 0
    w = c + p
    m_kv, m_rest = 2 * dl * dl, 2 * dl * dl + 3 * dl * fl  # W_kv; W_q, W_o and the SwiGLU FFN
    first = w / p * (6 * (m_kv + m_rest) + 6 * dl * (w + 1))
    last = w / p * 6 * m_kv + 6 * m_rest + 6 * dl * sum(s + 1 for s in range(c, w)) * 2 / p
    assert decoder_flops(config, build_on_meta(config).decoder) == pytest.approx(first + last)
    one = load_preset("tiny", patch_size=4, n_local_decoder_layers=1, decoder_context=decoder_context)
    assert flops_per_byte(config) - flops_per_byte(one) == pytest.approx(first)  # one more full-window layer


def test_flops_count_decoder_layers_above_the_context_layers_over_the_current_patch():
    """decoder_context_layers = 1 of 3: layer 0 over the W-slot window, layers 1-2 over P slots (one per
    byte, attention over P + 1 / 2 keys on average), the last one's queries already at one slot per byte."""
    from stlm_selfplay.model.flops import build_on_meta, decoder_flops

    config = load_preset("tiny", patch_size=4, n_local_decoder_layers=3, decoder_context_layers=1)
    dl, fl, p = config.d_local, config.local_ff, 4
    m_kv, m_rest = 2 * dl * dl, 2 * dl * dl + 3 * dl * fl
    first = 2 * (6 * (m_kv + m_rest) + 6 * dl * (8 + 1))
    middle = 6 * (m_kv + m_rest) + 6 * dl * (p + 1)
    last = 6 * (m_kv + m_rest) + 6 * dl * (p + 1)
    assert decoder_flops(config, build_on_meta(config).decoder) == pytest.approx(first + middle + last)
    assert flops_per_byte(config) < flops_per_byte(load_preset("tiny", patch_size=4, n_local_decoder_layers=3))
