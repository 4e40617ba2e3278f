"""The BPE baseline: bits per byte equal a hand computation, the tokenizer round-trips, the
trunk is the STLM's."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from _model_fixtures import small_config

from stlm_selfplay.model.bpe_baseline import EOT, BPEBaselineLM, bpe_nll, token_stream, train_bpe
from stlm_selfplay.model.modeling import Trunk

DOCS = ["the cat sat on the mat. the cat sat.", "a dog — ünïcode bytes — sat too."]


def _model(vocab: int, seq_len: int) -> BPEBaselineLM:
    torch.manual_seed(0)
    return BPEBaselineLM(small_config(patch_size=1, max_seq_len=seq_len, n_local_encoder_layers=0,
                                      n_local_decoder_layers=0, d_local=64), vocab).eval()


def test_tokenizer_is_byte_level_and_round_trips():
    tok = train_bpe(DOCS * 20, 300)
    assert 257 < tok.get_vocab_size() <= 300 and tok.token_to_id(EOT) is not None  # 256 bytes + EOT + merges
    for doc in DOCS:
        ids = tok.encode(doc, add_special_tokens=False).ids
        assert tok.decode(ids) == doc and len(ids) < len(doc.encode())  # merges learned


def test_bits_per_byte_equal_the_hand_computation():
    """sum over tokens of -log p(tok_t | EOT, tok_<t) / UTF-8 bytes: one window, then windows of 5."""
    tok = train_bpe(DOCS * 20, 300)
    eot = tok.token_to_id(EOT)
    stream = token_stream(tok, DOCS)
    model = _model(300, 64)
    with torch.no_grad():
        logp = F.log_softmax(model(torch.tensor([stream])).float(), -1)[0]
    hand = -sum(float(logp[t - 1, stream[t]]) for t in range(1, len(stream)) if stream[t] != eot)
    text_bytes = sum(len(d.encode()) for d in DOCS)
    assert math.isclose(bpe_nll(model, stream, 64, skip_id=eot), hand, rel_tol=1e-5)
    # windows of 5 tokens overlapping by one: token t is scored in the window starting at 4 * floor((t-1)/4)
    hand_windows = 0.0
    with torch.no_grad():
        for start in range(0, len(stream) - 1, 4):
            window = stream[start: start + 5]
            lp = F.log_softmax(model(torch.tensor([window])).float(), -1)[0]
            hand_windows -= sum(float(lp[i - 1, window[i]]) for i in range(1, len(window)) if window[i] != eot)
    assert math.isclose(bpe_nll(model, stream, 5, skip_id=eot, batch_size=3), hand_windows, rel_tol=1e-5)
    bits = bpe_nll(model, stream, 64, skip_id=eot) / text_bytes / math.log(2)
    assert math.isclose(bits, hand / text_bytes / math.log(2), rel_tol=1e-5) and bits > 0


def test_the_trunk_is_the_stlm_trunk_and_the_head_is_tied():
    model = _model(300, 64)
    assert isinstance(model.trunk, Trunk)
    reference = Trunk(model.config)
    assert sum(p.numel() for p in model.trunk.parameters()) == sum(p.numel() for p in reference.parameters())
    assert sum(p.numel() for p in model.parameters()) == 300 * 64 + sum(p.numel() for p in reference.parameters())
    ids = torch.tensor([[1, 2, 3, 4]])
    model.loss(ids).backward()
    assert model.embed.weight.grad.abs().sum() > 0
