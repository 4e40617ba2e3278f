"""Model levers of issue 14 (STLMConfig options, off by default): hashed byte n-gram embeddings,
ReLU-squared FFN, zero-initialised output projections, logit soft-cap; each is exact in training,
the KV-cached sampler and the scorer, and counted by flops_per_byte."""

from __future__ import annotations

import pytest
import torch
from _model_fixtures import assert_cached_sampler_matches, small_config, text_bytes, train_steps

from stlm_selfplay.model import STLMForCausalLM, flops_per_byte, generate
from stlm_selfplay.model.layers import CacheStep, rope_angles
from stlm_selfplay.model.ngrams import BEFORE, HASH_BASE, HASH_MOD, row_ngram_buckets
from stlm_selfplay.model.patching import make_layout
from stlm_selfplay.model.sampling import next_byte_logits

PROMPTS = [b"", b"ROMEO:", b"First Citizen:\nBefore we proceed", b"the ", b"O", b"What say you, my lord? "]


def _hand_bucket(ids: list[int], t: int, n: int, buckets: int) -> int:
    """hash_n(t) = sum_i (x[t-i] + 1) A^i mod M, x[<0] = BEFORE; then mod buckets + (n-3) buckets."""
    h = sum(((ids[t - i] if t - i >= 0 else BEFORE) + 1) * HASH_BASE ** i for i in range(n)) % HASH_MOD
    return h % buckets + (n - 3) * buckets


def test_ngram_buckets_equal_the_hand_formula_and_do_not_depend_on_later_bytes():
    ids = list(b"hello, world")
    got = row_ngram_buckets(torch.tensor([ids]), 5, 97)
    assert got.shape == (1, len(ids), 3)
    for t in range(len(ids)):
        assert got[0, t].tolist() == [_hand_bucket(ids, t, n, 97) for n in (3, 4, 5)]
    prefix = row_ngram_buckets(torch.tensor([ids[:7]]), 5, 97)
    assert torch.equal(prefix[0], got[0, :7])  # causal: a byte's n-grams see only earlier bytes
    assert torch.equal(row_ngram_buckets(torch.tensor([ids]), 5, 97), got)  # deterministic


def test_layout_places_each_byte_ngrams_where_the_byte_goes_and_left_padding_changes_nothing():
    config = small_config(ngram_max=4, ngram_buckets=50)
    ids = torch.tensor([list(b"abcdefghij")])
    layout = make_layout(ids, None, config)
    hashes = row_ngram_buckets(ids, 4, 50)[0]
    for t in range(10):
        assert layout.enc_ngrams[0, t // 4, t % 4].tolist() == hashes[t].tolist()
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 10, dtype=torch.long)], dim=1)
    shifted = make_layout(padded, mask, config).enc_ngrams[:, :3]
    valid = layout.enc_valid[..., None].expand_as(shifted)  # real bytes' slots (pads moved to the end differ)
    assert torch.equal(shifted[valid], layout.enc_ngrams[valid])


def _trained(**overrides) -> STLMForCausalLM:
    torch.manual_seed(0)
    model = STLMForCausalLM(small_config(**overrides))
    train_steps(model, text_bytes(50_000), 30, seq_len=64, batch=8)
    return model


@pytest.mark.parametrize("overrides", [
    dict(ngram_max=8, ngram_buckets=512),
    dict(ngram_max=6, ngram_buckets=256, patching="dynamic"),
    dict(mlp="relu2", zero_init_proj=True, logit_softcap=15.0),
    dict(decoder_context=False, ngram_max=4),
    dict(decoder_context=False, patching="dynamic"),
    dict(n_local_decoder_layers=3, decoder_context_layers=1),
    dict(n_local_decoder_layers=2, decoder_context_layers=1, patching="dynamic", ngram_max=4),
    dict(decoder_attention="stream", n_local_decoder_layers=2),
    dict(decoder_attention="stream", decoder_lookback=6, patching="dynamic", ngram_max=4),
    dict(decoder_attention="stream", n_local_encoder_layers=0, decoder_lookback=3, patch_size=3),
    dict(decoder_attention="stream", encoder_attention="stream", n_local_encoder_layers=2),
    dict(decoder_attention="stream", encoder_attention="stream", patching="dynamic", decoder_lookback=5),
    dict(pooling="concat", patching="dynamic", min_patch_size=1),
    dict(pooling="concat", decoder_attention="stream", n_local_encoder_layers=0),
    dict(pooling="concat", decoder_attention="stream", encoder_attention="stream"),
])
def test_cached_sampler_equals_the_full_forward_and_the_scorer(overrides):
    """The KV-cached sampler (n-gram tails kept per row) == uncached full forward; score() of the
    sampled text returns the sampler's log-probs (temperature 1)."""
    model = _trained(**overrides)
    assert_cached_sampler_matches(model, PROMPTS, seed=1)


def test_ngram_embeddings_change_the_patches_and_the_training_loss_uses_them():
    model = _trained(ngram_max=5, ngram_buckets=64)
    ids = torch.tensor([list(b"to be or not to be")])
    with torch.no_grad():
        base = next_byte_logits(model, ids, torch.ones_like(ids))
        model.ngram_embed.table.weight.zero_()
        assert not torch.allclose(next_byte_logits(model, ids, torch.ones_like(ids)), base, atol=1e-4)
    fresh = STLMForCausalLM(small_config(ngram_max=5, ngram_buckets=64))
    fresh(ids, labels=ids).loss.backward()
    assert fresh.ngram_embed.table.weight.grad.abs().sum() > 0


def test_concat_pooling_equals_the_hand_formula_and_keeps_the_bytes_order():
    """pool(h) = W_cat [v_1 h_1; ...; v_Pm h_Pm]: a 2-byte patch fills slots 1-2, slots 3-4 read zeros.
    Without encoder layers mean pooling cannot tell "ab" from "ba" (sum_j pos_j is the same); concat can."""
    torch.manual_seed(0)
    concat = STLMForCausalLM(small_config(pooling="concat", n_local_encoder_layers=0))
    assert concat.encoder.pos is None and concat.encoder.proj.weight.shape == (64, 4 * 32)
    h = torch.randn(1, 4, 32)
    valid = torch.tensor([[True, True, False, False]])
    want = concat.encoder.proj.weight[:, :64] @ torch.cat([h[0, 0], h[0, 1]])
    torch.testing.assert_close(concat.encoder(h, valid)[0], want)
    torch.testing.assert_close(concat.encoder(h[:, :2], valid[:, :2]), concat.encoder(h, valid))  # short grids pad
    mean = STLMForCausalLM(small_config(n_local_encoder_layers=0))
    full = torch.ones(1, 4, dtype=torch.bool)
    gaps = {}
    for name, model in (("mean", mean), ("concat", concat)):
        ab, ba = (model.encoder(model.embed_bytes(torch.tensor([list(t)])), full) for t in (b"abcd", b"badc"))
        gaps[name] = (ab - ba).abs().max().item()
    assert gaps["mean"] < 1e-5 and gaps["concat"] > 1e-3
    assert flops_per_byte(small_config(pooling="concat")) == pytest.approx(
        flops_per_byte(small_config()) + 6 * 3 * 32 * 64 / 4)  # W_cat: P_max d_local x d_model per patch


def test_decoder_windows_without_context_hold_only_the_current_patch():
    """x = "abcdefg", P = 4: windows of x' = [BOS] + x; without context window m is x'[4m..4m+3]."""
    ids = torch.tensor([list(b"abcdefg")])
    a = ord("a")
    bos, pad = 257, 256
    with_ctx = make_layout(ids, None, small_config()).dec_ids[0].tolist()
    without = make_layout(ids, None, small_config(decoder_context=False)).dec_ids[0].tolist()
    assert without == [[bos, a, a + 1, a + 2], [a + 3, a + 4, a + 5, a + 6]]
    assert with_ctx == [[pad] * 4 + without[0], without[0] + without[1]]


def test_relu2_zero_init_and_softcap_do_what_they_say():
    model = STLMForCausalLM(small_config(mlp="relu2", zero_init_proj=True, logit_softcap=2.0))
    block = model.trunk.layers[0]
    assert not hasattr(block.ffn, "w_gate_up") and block.ffn.w_up.weight.shape == (128, 64)
    x = torch.randn(3, 64)
    assert torch.allclose(block.ffn(x), block.ffn.w_down(torch.relu(block.ffn.w_up(x)) ** 2))
    for b in [*model.trunk.layers, *model.encoder.layers, *model.decoder.layers]:
        assert b.attn.wo.weight.abs().sum() == 0 and b.ffn.w_down.weight.abs().sum() == 0
    with torch.no_grad():
        model.byte_embed.weight.mul_(1000)  # huge raw logits
    hidden = torch.randn(2, 32)
    raw = hidden @ model.byte_embed.weight.T
    capped = model.head(hidden)[:, :256]
    assert torch.allclose(capped, 2.0 * torch.tanh(raw[:, :256] / 2.0)) and capped.abs().max() <= 2.0


def test_logit_scale_multiplies_the_raw_logits_before_the_cap():
    """z = m h E^T, then c tanh(z / c); m = 1 leaves the head exactly as before."""
    torch.manual_seed(0)
    plain = STLMForCausalLM(small_config())
    scaled = STLMForCausalLM(small_config(logit_scale=4.0, logit_softcap=3.0))
    scaled.load_state_dict(plain.state_dict())
    hidden = torch.randn(2, 32)
    raw = plain.head(hidden)[:, :256]
    assert torch.equal(raw, (hidden @ plain.byte_embed.weight.T)[:, :256])
    assert torch.allclose(scaled.head(hidden)[:, :256], 3.0 * torch.tanh(4.0 * raw / 3.0), atol=1e-6)


def test_flops_per_byte_counts_each_option_by_hand():
    base = small_config()
    f0 = flops_per_byte(base)
    # n-grams: K = 6 tables (n = 3..8), one add of d_local per table and byte, x3 (fwd + bwd)
    assert flops_per_byte(small_config(ngram_max=8)) == pytest.approx(f0 + 3 * 6 * 32)
    # soft-cap: 3 elementwise ops per logit, x3; counted once per decoder pass
    assert flops_per_byte(small_config(logit_softcap=30.0)) == pytest.approx(f0 + 9 * 259)
    assert flops_per_byte(small_config(logit_scale=8.0)) == pytest.approx(f0 + 3 * 259)  # one multiply, x3
    # relu2 drops the gate matrix: trunk d*f per layer (2 layers, per patch of 4 bytes), local d_l*f_l per
    # block: the encoder's at every byte, the decoder's one (last) layer's at one read slot per byte
    f_local = base.local_ff
    saved = 6 * 2 * 64 * 128 / 4 + 6 * 1 * 32 * f_local + 6 * 1 * 32 * f_local
    assert flops_per_byte(small_config(mlp="relu2")) == pytest.approx(f0 - saved)
    assert flops_per_byte(small_config(zero_init_proj=True)) == f0
    # the decoder's one layer is its last: keys/values at all W / 4 slots per byte, the rest at the read
    # slot, a query at slot s over s + 1 keys (mean over the read slots 4..7 with context: 13 / 2 keys)
    m_kv = 32 * 32 * 2  # wkv (2 kv heads of 16 = 32)
    m_dec = 32 * 32 * 2 + m_kv + 3 * 32 * f_local  # wq + wo + wkv + SwiGLU
    with_context = 2 * 6 * m_kv + 6 * (m_dec - m_kv) + 6 * 32 * (4 + 1 + 8)
    without = 1 * 6 * m_dec + 6 * 32 * (4 + 1)  # no context: one slot per byte, attention over 4 + 1 slots
    assert flops_per_byte(small_config(decoder_context=False)) == pytest.approx(f0 - with_context + without)


@pytest.mark.parametrize("bad,match", [
    (dict(mlp="gelu"), "mlp"), (dict(ngram_max=2), "ngram_max"), (dict(logit_softcap=-1.0), "logit_softcap"),
    (dict(logit_scale=0.0), "logit_scale"),
    (dict(mlp="relu2", share_ffn=True), "mlp"),
    (dict(decoder_attention="bytes"), "decoder_attention"), (dict(decoder_lookback=-1), "decoder_lookback"),
    (dict(decoder_attention="stream", n_local_decoder_layers=2, decoder_context_layers=1), "decoder_context_layers"),
    (dict(encoder_attention="stream"), "encoder_attention"),
    (dict(encoder_attention="stream", decoder_attention="stream", ngram_max=4), "encoder_attention"),
])
def test_bad_option_values_name_the_field(bad, match):
    with pytest.raises(ValueError, match=match):
        small_config(**bad)


@pytest.mark.parametrize("overrides", [dict(decoder_context=False), dict(ngram_max=5, patching="dynamic"),
                                       dict(n_local_decoder_layers=2, decoder_context_layers=1),
                                       dict(decoder_attention="stream", n_local_decoder_layers=2),
                                       dict(decoder_attention="stream", decoder_lookback=5, patching="dynamic"),
                                       dict(decoder_attention="stream", encoder_attention="stream", patching="dynamic",
                                            n_local_encoder_layers=2)])
def test_self_speculative_decoding_equals_greedy_with_the_new_options(overrides):
    from stlm_selfplay.model.speculative import speculative_generate

    model = _trained(**overrides).eval()
    prompts = [b"hello there", b"The quick brown fox "]
    full = generate(model, prompts, 40, greedy=True)
    spec, stats = speculative_generate(model, prompts, 40, exit_layer=0, draft_patches=2)
    assert [c.text for c in spec] == [c.text for c in full] and stats.drafted > 10
    for a, b in zip(spec, full):
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=0)


@pytest.mark.parametrize("overrides", [
    dict(n_local_decoder_layers=2, qk_norm=True),
    dict(patching="dynamic", n_kv_heads=1, n_heads=2, local_heads=2),
    dict(decoder_context=False),
])
def test_decoder_outputs_from_equals_the_full_decoder_and_the_logits_are_unchanged(overrides):
    """The training forward runs the decoder's last layer at the current patch's slots only
    (`outputs_from`): those hidden states equal the full decoder's, so the logits equal the ones
    read from the full decoder's output at the layout's read index (the path before the change)."""
    torch.manual_seed(0)
    model = STLMForCausalLM(small_config(**overrides)).eval()
    for p in model.parameters():  # away from init, so every term matters
        p.data.add_(torch.randn_like(p) * 0.05)
    ids = torch.tensor([list(b"First Citizen:\nBefore we proceed any further, hear me speak.")] * 2)
    layout = model.patch_layout(ids)
    batch, n_dec, width = layout.dec_ids.shape
    ctx = model.config.dec_context
    with torch.no_grad():
        state, _ = model.trunk(model.encode_layout(layout), torch.arange(layout.enc_ids.shape[1])[None])
        cond = model.conditions(state, n_dec).reshape(batch * n_dec, -1)
        emb = model.embed_bytes(layout.dec_ids.reshape(batch * n_dec, width))
        slots = torch.arange(width)[None]
        full = model.decoder(emb, cond, slots)
        part = model.decoder(emb, cond, slots, outputs_from=ctx)
        assert part.shape[1] == width - ctx
        torch.testing.assert_close(part, full[:, ctx:], atol=1e-6, rtol=1e-5)
        read = layout.read_index
        expected = model.head(full.reshape(batch, n_dec * width, -1).gather(1, read[..., None].expand(-1, -1, full.shape[-1])))
        torch.testing.assert_close(model(ids).logits, expected, atol=1e-5, rtol=1e-5)


def test_decoder_context_layers_keep_the_previous_patch_from_the_layers_above():
    """With decoder_context_layers = 1 of 2, layer 1 attends over the current patch's slots only: its
    output equals layer 1 run on layer 0's current-patch states alone (slots C.., positions C..), and
    the option at k = n_dec is the default model (every layer reads the context)."""
    torch.manual_seed(0)
    model = STLMForCausalLM(small_config(n_local_decoder_layers=2, decoder_context_layers=1)).eval()
    for p in model.parameters():
        p.data.add_(torch.randn_like(p) * 0.05)
    from stlm_selfplay.model.layers import rope_angles

    ctx, width, dec = model.config.dec_context, model.config.dec_window, model.decoder
    emb, cond = torch.randn(3, width, 32), torch.randn(3, 32)
    slots = torch.arange(width)[None]
    with torch.no_grad():
        got = dec(emb, cond, slots, outputs_from=ctx)
        cos, sin = rope_angles(slots, dec.head_dim, dec.rope_theta)
        h = dec.layers[0](emb + cond[:, None], cos, sin)[:, ctx:]
        by_hand = dec.norm(dec.layers[1](h, cos[:, ctx:], sin[:, ctx:]))
        torch.testing.assert_close(got, by_hand, atol=1e-6, rtol=1e-5)
        with pytest.raises(ValueError, match="outputs_from"):
            dec(emb, cond, slots)
        every = STLMForCausalLM(small_config(n_local_decoder_layers=2, decoder_context_layers=2)).eval()
        every.load_state_dict(model.state_dict())
        default = STLMForCausalLM(small_config(n_local_decoder_layers=2)).eval()
        default.load_state_dict(model.state_dict())
        ids = torch.tensor([list(b"First Citizen:\nBefore we proceed")])
        assert torch.equal(every(ids).logits, default(ids).logits)
        assert not torch.allclose(model(ids).logits, default(ids).logits, atol=1e-4)


@pytest.mark.parametrize("bad", [-1, 3, 1.5])
def test_decoder_context_layers_out_of_range_name_the_field(bad):
    with pytest.raises(ValueError, match="decoder_context_layers"):
        small_config(n_local_decoder_layers=2, decoder_context_layers=bad)


def _perturbed(**overrides) -> STLMForCausalLM:
    torch.manual_seed(0)
    model = STLMForCausalLM(small_config(**overrides)).eval()
    for p in model.parameters():  # away from init, so every term matters
        p.data.add_(torch.randn_like(p) * 0.05)
    return model


def test_stream_decoder_reads_each_byte_once_under_its_own_patch_condition():
    """decoder_attention: stream, P = 4: h_u = dec(E[x'[..u]] + c_{u // 4}) over x' = [BOS] + x at
    positions 0..T, and logit t (predicting x[t+1]) = head(h_{t+1}); c_0 = W_c start,
    c_m = W_c norm(s_{m-1}) (hand wiring of the pieces; left padding changes nothing)."""
    model = _perturbed(decoder_attention="stream", n_local_decoder_layers=2)
    ids = torch.tensor([list(b"First Citizen:\nBefore we proceed")])
    t = ids.shape[1]
    with torch.no_grad():
        layout = model.patch_layout(ids)
        state, _ = model.trunk(model.encode_layout(layout), torch.arange(layout.n_patches)[None])
        conds = model.decoder.cond_proj(torch.cat([model.decoder.start[None, None], model.trunk.norm(state)], 1))
        u = torch.arange(t + 1)
        x_shift = torch.cat([torch.tensor([[257]]), ids], dim=1)
        h = model.embed_bytes(x_shift) + conds[:, u // 4]
        cos, sin = rope_angles(u[None], 16, model.config.rope_theta)
        for layer in model.decoder.layers:
            h = layer(h, cos, sin)
        expected = model.head(model.decoder.norm(h))[:, 1:]
        torch.testing.assert_close(model(ids).logits, expected, atol=1e-5, rtol=1e-5)
        padded = torch.cat([torch.full((1, 3), 256), ids], dim=1)
        mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones_like(ids)], dim=1)
        torch.testing.assert_close(model(padded, attention_mask=mask).logits[:, 3:], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("encoder", ["patch", "stream"])
def test_stream_decoder_is_causal_and_its_first_patch_does_not_read_the_trunk(encoder):
    model = _perturbed(decoder_attention="stream", n_local_decoder_layers=2, patching="dynamic",
                       encoder_attention=encoder)
    ids = torch.tensor([list(b"to be, or not to be: that is the question")])
    changed = ids.clone()
    changed[0, 20:] = torch.tensor(list(b"Z" * (ids.shape[1] - 20)))
    with torch.no_grad():
        base = model(ids).logits
        torch.testing.assert_close(model(changed).logits[:, :20], base[:, :20], atol=0, rtol=0)
        assert not torch.allclose(model(changed).logits[:, 20:], base[:, 20:])
        for p in model.trunk.parameters():
            p.add_(1.0)
        moved = model(ids).logits
    first = int((model.patch_layout(ids).byte_patch[0] == 0).sum())  # x[0..first-1]: patch 0, condition c_0
    torch.testing.assert_close(moved[:, : first - 1], base[:, : first - 1], atol=0, rtol=0)
    assert not torch.allclose(moved[:, first - 1:], base[:, first - 1:])


def test_decoder_lookback_masks_keys_lookback_or_more_positions_back():
    """CacheStep's mask: query q sees keys k with q - lookback < k <= q (hand example), and the
    training decoder with lookback 2 and one layer ignores inputs 2 or more positions back."""
    mask = CacheStep(None, torch.tensor([5]), 8, lookback=3).positions(2)[2][0, 0]
    assert mask.int().tolist() == [[0, 0, 0, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1, 1, 0]]
    model = _perturbed(decoder_attention="stream", decoder_lookback=2)
    emb, cond = torch.randn(1, 12, 32), torch.randn(1, 12, 32)
    moved = emb.clone()
    moved[0, 5] += 3.0
    with torch.no_grad():
        a = model.decoder(emb, cond, torch.arange(12)[None])
        b = model.decoder(moved, cond, torch.arange(12)[None])
    torch.testing.assert_close(a[0, 7:], b[0, 7:], atol=0, rtol=0)  # 5 is 2+ back from 7..11
    assert not torch.allclose(a[0, 5:7], b[0, 5:7])


def test_flops_per_byte_counts_the_stream_decoder_by_hand():
    """Each decoder layer once per byte: 6 M + 12 d_local k, k = mean_{u=1..T} min(u + 1, lookback
    or T + 1) keys per query, T = max_seq_len = 256 (the window decoder's terms replaced)."""
    window = small_config()
    f_local = window.local_ff
    m_kv = 32 * 32 * 2
    m_dec = 32 * 32 * 2 + m_kv + 3 * 32 * f_local
    window_terms = 2 * 6 * m_kv + 6 * (m_dec - m_kv) + 6 * 32 * (4 + 1 + 8)
    keys = (2 + 257) / 2  # mean of u + 1 over u = 1..256
    stream = 6 * m_dec + 12 * 32 * keys
    assert flops_per_byte(small_config(decoder_attention="stream")) == pytest.approx(
        flops_per_byte(window) - window_terms + stream)
    keys_16 = (sum(range(2, 17)) + 16 * (256 - 15)) / 256  # min(u + 1, 16)
    assert flops_per_byte(small_config(decoder_attention="stream", decoder_lookback=16)) == pytest.approx(
        flops_per_byte(window) - window_terms + 6 * m_dec + 12 * 32 * keys_16)


def test_stream_encoder_pools_its_byte_states_and_feeds_them_to_the_decoder():
    """encoder_attention: stream, P = 4, mean pooling: e_u = enc(E[x'[..u]]) (causal, position u),
    patch m = W_in mean_{t in m} norm(e_{t+1}), and the decoder reads e_u + c_{u // 4} (hand wiring)."""
    model = _perturbed(decoder_attention="stream", encoder_attention="stream", n_local_encoder_layers=2,
                       n_local_decoder_layers=1)
    assert model.encoder.pos is None  # no slot embedding: positions come from RoPE over the stream
    ids = torch.tensor([list(b"To be, or not to be: that")])
    t = ids.shape[1]
    u = torch.arange(t + 1)
    cos, sin = rope_angles(u[None], 16, model.config.rope_theta)
    with torch.no_grad():
        e = model.embed_bytes(torch.cat([torch.tensor([[257]]), ids], dim=1))
        for layer in model.encoder.layers:
            e = layer(e, cos, sin)
        normed = model.encoder.norm(e[0, 1:])
        patches = torch.stack([normed[m * 4: m * 4 + 4].mean(0) for m in range(-(-t // 4))])
        patches = model.encoder.proj(patches)[None]
        state, _ = model.trunk(patches, torch.arange(patches.shape[1])[None])
        conds = model.decoder.cond_proj(torch.cat([model.decoder.start[None, None], model.trunk.norm(state)], 1))
        h = e + conds[:, u // 4]
        for layer in model.decoder.layers:
            h = layer(h, cos, sin)
        expected = model.head(model.decoder.norm(h))[:, 1:]
        torch.testing.assert_close(model(ids).logits, expected, atol=1e-5, rtol=1e-5)


def test_flops_per_byte_counts_the_stream_encoder_by_hand():
    """A stream encoder's layers each run once per byte over the whole context: 6 M_enc + 12 n_enc
    d_local k (k = 129.5 keys at T = 256) in place of the in-patch 6 M_enc + 6 n_enc d_local (P + 1)."""
    patch = small_config(decoder_attention="stream")
    stream = small_config(decoder_attention="stream", encoder_attention="stream")
    assert flops_per_byte(stream) == pytest.approx(flops_per_byte(patch) - 6 * 1 * 32 * (4 + 1)
                                                   + 12 * 1 * 32 * (2 + 257) / 2)


@pytest.mark.parametrize("overrides", [
    dict(decoder_attention="stream", n_local_decoder_layers=2),
    dict(decoder_attention="stream", encoder_attention="stream", patching="dynamic", n_local_encoder_layers=2),
])
def test_speculative_rollbacks_replay_exactly_with_stream_local_modules(overrides):
    """Random weights make the early exit disagree with the full model (some drafted bytes are
    rejected), so the rollback and replay paths run: the output still equals greedy decoding."""
    from stlm_selfplay.model.speculative import speculative_generate

    torch.manual_seed(0)
    model = STLMForCausalLM(small_config(n_layers=3, **overrides)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    prompts = [b"hello there", b"The quick brown fox ", b"ROMEO:"]
    full = generate(model, prompts, 60, greedy=True)
    spec, stats = speculative_generate(model, prompts, 60, exit_layer=0, draft_patches=3)
    assert 0 < stats.accepted < stats.drafted
    assert [c.text for c in spec] == [c.text for c in full]
    for a, b in zip(spec, full):
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=0)
