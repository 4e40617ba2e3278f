"""Parameter accounting and training FLOPs per byte.

`param_table(config)` splits parameters into byte embedding (+ n-gram tables) + local encoder, trunk, local
decoder + head, and compares the embedding+head with a GPT-2-vocabulary model (50,257 tokens)
that has the same trunk (tied: V*d; untied: 2*V*d).

`flops_per_byte(config)` estimates training FLOPs per byte (forward + backward = 3x forward):

    F = sum_l c_l [6 M_l + 6 d_model (c_l N_p + 1)] / P       (trunk, once per patch)
      + 6 n_routed M_router / P                                (Mixture-of-Depths routers)
      + 6 M_enc + 6 n_enc d_local (P_max + 1)                  (local encoder, every byte)
      + (W / P_max) [6 M_dec' + 6 (n_dec - 1) d_local (W + 1)]  (decoder layers but the last: every window slot)
      + (W / P_max) 6 M_kv + 6 (M_last - M_kv) + 6 d_local (C + 1 + W)   (the last decoder layer)
        (decoder_attention: stream: sum_l [6 M_l + 12 d_local k], k = mean keys per query, `stream_keys`;
         encoder_attention: stream: the encoder term is 6 M_enc + 12 n_enc d_local k, no lookback)
      + 6 d_local d_model (2 / P)                              (pool projection + condition)
        (pooling: concat: the projection reads P_max d_local inputs, 6 d_local d_model (P_max + 1) / P)
      + 6 d_local V                                            (byte head)
      + 3 K d_local                                            (K hashed n-gram tables: one add each)
      + 9 V                                                    (logit soft-cap: z / c, tanh, * c)
      + (H + X) [decoder + condition + byte head terms]         (H multi-byte heads, X extra exits)
      + H 6 d_model^2 / P                                      (each multi-byte head's W_i)

M_l is trunk block l's weights (a relu2 FFN has two matrices, SwiGLU three) (with the shared FFN when share_ffn). c_l = mod_capacity C for a
routed block (top-k training: a C share of the patches runs it, attending over C N_p keys), else 1;
M_router is one router's weights (plus its predictor). The causal routing of evaluation and
sampling, as implemented, computes every patch and masks (dense cost).

X is the number of extra early exits an objective computes per step on average (each is one
more pass of the shared decoder and head; `early_exit_passes` gives it for a curriculum).

M_x is the number of matrix-multiply weights a token passes through in module x (a shared FFN
counts once per layer that uses it), 6 M is the usual 2 (forward) + 4 (backward) FLOPs per
weight, and causal attention over L keys costs 2 * 2 * d * (L + 1)/2 forward FLOPs per query
(scores and values), i.e. 6 d (L + 1) for training. N_p = max_seq_len / P patches per context;
P is patch_size, or (min_patch_size + max_patch_size) / 2 assumed for dynamic patching.
W = config.dec_window: 2 P_max window slots (previous + current patch), or P_max without
`decoder_context`; C = W - P_max, the context slots. A window serves the P_max bytes of its current
patch, so every decoder layer but the last runs W / P_max slots per byte (M_dec' their weights). The
training forward reads logits at the current patch's slots only (`LocalDecoder.forward`'s
`outputs_from`), so the last layer computes keys and values (M_kv, its W_kv) at every slot but its
queries, output projection and FFN (M_last - M_kv) at one slot per byte, and its query at slot s
attends s + 1 keys: 12 d_local mean_{s = C..W-1} (s + 1) = 6 d_local (C + 1 + W) per byte. A layer
above `decoder_context_layers` counts with C = 0 and W = P_max (it sees the current patch only).
Elementwise work is otherwise not counted; the n-gram sums and the soft-cap are, with the same
3x for forward + backward, because they are all that those options add. Zero-initialised
projections change no count.

`bpe_flops_per_token(config, V)` is the same count per token for the BPE baseline
(`bpe_baseline.py`: `config`'s trunk over a V-token vocabulary, tied embedding):

    F = sum_l c_l [6 M_l + 6 d_model (c_l N + 1)] + 6 n_routed M_router + 6 d_model V

with N = max_seq_len tokens per context: the trunk term above at one token per position (P = 1)
and the tied head (the embedding lookup is free). A plain byte GPT's `flops_per_byte` (no
soft-cap, logit scale, n-grams or extra heads) is the same formula with V = 259.
"""

from __future__ import annotations

import torch
from torch import nn

from stlm_selfplay.model.config import STLMConfig
from stlm_selfplay.model.ngrams import ngram_sizes

GPT2_VOCAB = 50257


def _params(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def _matmul_weights(module: nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Linear))


def build_on_meta(config: STLMConfig):
    """The model with meta tensors: shapes without memory or init cost."""
    from stlm_selfplay.model.modeling import STLMForCausalLM

    with torch.device("meta"):
        return STLMForCausalLM(config)


def param_table(config: STLMConfig) -> dict:
    """Parameter counts by part, and the GPT-2-vocabulary comparison (see module docstring)."""
    model = build_on_meta(config)
    embed = _params(model.byte_embed) + _params(model.ngram_embed)  # n-gram tables are embeddings too
    head = _params(model.lm_head)
    encoder = _params(model.encoder)
    trunk = _params(model.trunk)
    decoder = _params(model.decoder)
    value = _params(model.value_head)  # 0 without one (model/value_head.py)
    total = _params(model)
    gpt2_tied = GPT2_VOCAB * config.d_model
    ours_embed_head = embed + head
    ours_local = embed + head + encoder + decoder
    return {
        "embedding_encoder": embed + encoder,
        "trunk": trunk,
        "decoder_head": decoder + head,
        "value_head": value,
        "total": total,
        "embedding_head": ours_embed_head,
        "gpt2_embedding_head_tied": gpt2_tied,
        "gpt2_embedding_head_untied": 2 * gpt2_tied,
        "gpt2_total_tied": trunk + gpt2_tied,
        "gpt2_total_untied": trunk + 2 * gpt2_tied,
        # share of embedding+head parameters saved vs the GPT-2 vocabulary (tied, untied)
        "saved_embedding_head_tied": 1 - ours_embed_head / gpt2_tied,
        "saved_embedding_head_untied": 1 - ours_embed_head / (2 * gpt2_tied),
        # the stricter count: everything outside the trunk (embedding, encoder, decoder, head)
        "saved_all_local_tied": 1 - ours_local / gpt2_tied,
        "saved_all_local_untied": 1 - ours_local / (2 * gpt2_tied),
    }


def expected_patch_size(config: STLMConfig) -> float:
    if config.patching == "fixed":
        return float(config.patch_size)
    return (config.min_patch_size + config.max_patch_size) / 2


def trunk_flops(config: STLMConfig, trunk: nn.Module, positions: float) -> float:
    """Training FLOPs of `trunk` per position, over contexts of `positions` positions:
    sum_l c_l [6 M_l + 6 d_model (c_l N + 1)] + 6 n_routed M_router (module docstring)."""
    shared = 0 if trunk.shared_ffn is None else _matmul_weights(trunk.shared_ffn)
    routed = set(config.routed_layers)
    total = 6 * sum(_matmul_weights(router) for router in trunk.routers.values())
    for l, layer in enumerate(trunk.layers):
        c = config.mod_capacity if l in routed else 1.0
        total += c * (6 * (_matmul_weights(layer) + shared) + 6 * config.d_model * (c * positions + 1))
    return total


def stream_keys(config: STLMConfig, lookback: int = 0) -> float:
    """Mean keys a stream layer's query reads in training, mean_{u=1..T} min(u + 1, lookback or T + 1)
    (T = max_seq_len; queries at positions 1..T of x')."""
    t, w = config.max_seq_len, lookback or config.max_seq_len + 1
    return sum(min(u + 1, w) for u in range(1, t + 1)) / t


def decoder_flops(config: STLMConfig, decoder: nn.Module) -> float:
    """Training FLOPs per byte of the local decoder's layers (module docstring: every layer but the
    last at all W / P_max window slots per byte, the last one's queries at the current patch only;
    a layer above `decoder_context_layers` has a window of P_max slots and no context). A stream
    decoder runs each layer once per byte: 6 M + 12 d_local k per layer, k the mean keys a query
    reads, mean_{u=1..T} min(u + 1, lookback or T + 1) (T = max_seq_len: queries at positions 1..T)."""
    total, pm, dl = 0.0, config.max_patch, config.d_local
    if config.decoder_attention == "stream":
        keys = stream_keys(config, config.decoder_lookback)
        return sum(6 * _matmul_weights(layer) + 12 * dl * keys for layer in decoder.layers)
    for i, layer in enumerate(decoder.layers):
        ctx = config.dec_context if i < config.dec_context_layers else 0
        w = ctx + pm
        m, m_kv = _matmul_weights(layer), layer.attn.wkv.weight.numel()
        if i < len(decoder.layers) - 1:
            total += w / pm * (6 * m + 6 * dl * (w + 1))
        else:
            total += w / pm * 6 * m_kv + 6 * (m - m_kv) + 6 * dl * (ctx + 1 + w)
    return total


def flops_per_byte(config: STLMConfig, extra_exits: float = 0.0) -> float:
    """Training FLOPs per byte of the formula in the module docstring."""
    model = build_on_meta(config)
    p, pm = expected_patch_size(config), config.max_patch
    trunk = trunk_flops(config, model.trunk, config.max_seq_len / p) / p
    m_enc = sum(_matmul_weights(layer) for layer in model.encoder.layers)
    if config.encoder_attention == "stream":  # every layer once per byte over the whole context
        encoder = 6 * m_enc + 12 * config.n_local_encoder_layers * config.d_local * stream_keys(config)
    else:
        encoder = 6 * m_enc + 6 * config.n_local_encoder_layers * config.d_local * (pm + 1)
    m_dec = sum(_matmul_weights(layer) for layer in model.decoder.layers)
    decoder = decoder_flops(config, model.decoder)
    pool = 6 * (_matmul_weights(model.encoder) - m_enc) / p
    condition = 6 * (_matmul_weights(model.decoder) - m_dec) / p
    head = (6 * config.d_local * config.vocab_size + (9 * config.vocab_size if config.logit_softcap else 0)
            + (3 * config.vocab_size if config.logit_scale != 1.0 else 0))
    ngrams = 3 * len(ngram_sizes(config)) * config.d_local
    exit_pass = decoder + condition + head  # one more read of the shared decoder + head
    mtp = config.mtp_heads * (exit_pass + 6 * config.d_model ** 2 / p)
    return float(trunk + encoder + ngrams + pool + exit_pass * (1 + extra_exits) + mtp)


def bpe_flops_per_token(config: STLMConfig, vocab_size: int) -> float:
    """Training FLOPs per token of the BPE baseline with `config`'s trunk (module docstring)."""
    from stlm_selfplay.model.bpe_baseline import BPEBaselineLM

    with torch.device("meta"):
        model = BPEBaselineLM(config, vocab_size)
    return float(trunk_flops(config, model.trunk, config.max_seq_len) + 6 * config.d_model * vocab_size)
