"""The byte-pooled model: causality, padding invariance, the plain-GPT special case, loss,
patch ids, config validation, save/load and overfitting a small text."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _model_fixtures import plain_gpt_config, small_config, text_bytes, train_steps
from transformers import AutoModelForCausalLM

import stlm_selfplay  # noqa: F401  (registers the Auto classes)
from stlm_selfplay.model import STLMConfig, STLMForCausalLM, STLMOutput
from stlm_selfplay.model.patching import dynamic_patch_ids
from stlm_selfplay.model.modeling import NEVER_EMITTED_LOGIT
from stlm_selfplay.model.tokenizer import BOS_ID, PAD_ID

CAUSAL_CONFIGS = {
    "P1-local": dict(patch_size=1),
    "P1-plain": dict(patch_size=1, n_local_encoder_layers=0, n_local_decoder_layers=0, d_local=64),
    "P2-attention-pool": dict(patch_size=2, pooling="attention"),
    "P4-qknorm-shared-ffn": dict(patch_size=4, qk_norm=True, share_ffn=True, lora_rank=4),
    "P8-2dec": dict(patch_size=8, n_local_decoder_layers=2, n_local_encoder_layers=0),
    "dynamic": dict(patching="dynamic", min_patch_size=2, max_patch_size=6),
    "dynamic-min1-attention": dict(patching="dynamic", min_patch_size=1, max_patch_size=4, pooling="attention"),
}


def make_model(seed: int = 0, **overrides) -> STLMForCausalLM:
    torch.manual_seed(seed)
    return STLMForCausalLM(small_config(**overrides)).eval()


def sample_text(n: int, seed: int) -> torch.Tensor:
    """Random bytes with spaces and punctuation mixed in, so dynamic patches vary in length."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(97, 123, (n,), generator=gen)
    ids[torch.rand(n, generator=gen) < 0.25] = 32
    ids[torch.rand(n, generator=gen) < 0.05] = ord(".")
    return ids


@pytest.mark.parametrize("name", list(CAUSAL_CONFIGS))
def test_perturbing_byte_t_never_changes_logits_before_t(name):
    model = make_model(seed=len(name), **CAUSAL_CONFIGS[name])
    x = sample_text(33, seed=1)[None]
    with torch.no_grad():
        base = model(x).logits
        for t in range(0, 33, 3):
            y = x.clone()
            y[0, t] = ord(".") if y[0, t] != ord(".") else ord("q")  # also moves dynamic boundaries
            logits = model(y).logits
            # shapes of intermediate tensors may change with the boundaries: float noise only
            torch.testing.assert_close(logits[0, :t], base[0, :t], rtol=0, atol=1e-5)
            assert (logits[0, t:] - base[0, t:]).abs().max() > 1e-4  # the change is seen from t on


@pytest.mark.parametrize("name", ["P4-qknorm-shared-ffn", "dynamic", "P1-plain"])
def test_a_rows_logits_do_not_depend_on_its_padding(name):
    model = make_model(**CAUSAL_CONFIGS[name])
    rows = [sample_text(n, seed=n) for n in (23, 30, 9)]
    width = 30
    ids = torch.full((3, width), PAD_ID)
    mask = torch.zeros(3, width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = r
        mask[i, width - len(r):] = 1
    with torch.no_grad():
        batched = model(ids, attention_mask=mask)
        for i, r in enumerate(rows):
            alone = model(r[None]).logits[0]
            torch.testing.assert_close(batched.logits[i, width - len(r):], alone, rtol=0, atol=1e-5)
            assert (batched.patch_ids[i, : width - len(r)] == -1).all()
            assert batched.patch_ids[i, width - len(r)] == 0


def test_plain_gpt_is_embedding_trunk_norm_tied_head():
    torch.manual_seed(0)
    model = STLMForCausalLM(plain_gpt_config()).eval()
    x = sample_text(20, seed=3)[None]
    with torch.no_grad():
        h = model.byte_embed(x) * 64 ** 0.5  # input embeddings are scaled by sqrt(d_local)
        state, _ = model.trunk(h, torch.arange(20)[None])
        expected = model.trunk.norm(state) @ model.byte_embed.weight.T
        expected[..., [PAD_ID, BOS_ID]] = NEVER_EMITTED_LOGIT  # the model never emits pad or bos
        torch.testing.assert_close(model(x).logits, expected, rtol=1e-5, atol=1e-5)


def test_labels_give_shifted_cross_entropy_ignoring_minus_100():
    model = make_model()
    x = sample_text(17, seed=4)[None]
    labels = x.clone()
    labels[0, 5:9] = -100
    out = model(x, labels=labels)
    assert isinstance(out, STLMOutput)
    logp = torch.log_softmax(out.logits[0, :-1].float(), -1)
    targets = x[0, 1:]
    keep = labels[0, 1:] != -100
    manual = -logp[torch.arange(16), targets][keep].mean()
    torch.testing.assert_close(out.loss, manual)


def test_trunk_states_and_patch_ids_for_fixed_patches():
    model = make_model(patch_size=4, n_layers=3)
    x = sample_text(10, seed=5)[None]
    out = model(x, output_trunk_states=True)
    assert out.logits.shape == (1, 10, 259)
    assert len(out.trunk_states) == 3 and out.trunk_states[0].shape == (1, 3, 64)
    assert out.patch_ids[0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert model(x).trunk_states is None
    assert (out.exit_logits, out.router_logits, out.mtp_logits) == (None, None, None)
    assert model(x, logits_to_keep=1).logits.shape == (1, 1, 259)
    torch.testing.assert_close(model(x, logits_to_keep=1).logits[0, 0], out.logits[0, -1])


def test_dynamic_patches_end_after_whitespace_or_punctuation_within_min_and_max():
    ids = torch.tensor([list(b"a b cdefghij, k")])
    pid = dynamic_patch_ids(ids, min_size=2, max_size=4)[0].tolist()
    # "a " | "b c" ("b " is only... no: 'b',' ' -> len 2 ends) -> check by hand:
    # a(0) ' '(0, len2 ends) | b(1) ' '(1 ends) | c d e f (2, len 4 ends) | g h i j (3) | , (4) ' '(4 ends) | k (5)
    assert pid == [0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 5, 5]
    min_one = dynamic_patch_ids(torch.tensor([list(b" x")]), min_size=1, max_size=4)[0].tolist()
    assert min_one == [0, 1, 1]


@pytest.mark.parametrize("field,value,allowed", [
    ("n_heads", 5, "divisor of d_model"),
    ("patch_size", 0, "integer >= 1"),
    ("pooling", "max", "mean | attention"),
    ("patching", "bpe", "fixed | dynamic"),
    ("n_kv_heads", 3, "divisor of n_heads"),
])
def test_invalid_config_names_field_and_allowed_values(field, value, allowed):
    with pytest.raises(ValueError) as err:
        STLMConfig(**{field: value})
    assert field in str(err.value) and allowed in str(err.value)


def test_multi_byte_patches_need_a_decoder_layer():
    with pytest.raises(ValueError, match="n_local_decoder_layers"):
        STLMConfig(patch_size=4, n_local_decoder_layers=0)


def test_save_and_load_round_trip_is_exact(tmp_path):
    model = make_model(patching="dynamic", pooling="attention", share_ffn=True, tie_embeddings=False)
    for p in model.parameters():  # make every tensor differ from its init
        p.data.add_(torch.randn_like(p) * 0.01)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, STLMForCausalLM)
    drop = lambda d: {k: v for k, v in d.items() if k != "_name_or_path"}  # noqa: E731
    assert drop(loaded.config.to_dict()) == drop(model.config.to_dict())
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    x = sample_text(25, seed=6)[None]
    assert torch.equal(model(x).logits, loaded(x).logits)


def test_shared_ffn_saves_parameters_and_its_lora_learns():
    plain = make_model(n_layers=4)
    shared = make_model(n_layers=4, share_ffn=True, lora_rank=4)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(shared) < count(plain)
    x = sample_text(16, seed=7)[None]
    shared.train()
    shared(x, labels=x).loss.backward()
    assert shared.trunk.layers[1].lora.up.weight.grad.abs().sum() > 0


@pytest.mark.slow  # minutes on a shared 2-core machine
def test_tiny_model_overfits_4kb_to_under_0_1_bits_per_byte_in_300_steps():
    data = text_bytes()[:4096]
    torch.manual_seed(0)
    model = STLMForCausalLM(small_config(d_model=128, d_ff=256, d_local=64, max_seq_len=256))
    losses = train_steps(model, data, 300, seq_len=256, lr=3e-3, whole_text=True)
    chunks = torch.tensor(list(data)).view(-1, 256)
    with torch.no_grad():
        nll = F.cross_entropy(model(chunks).logits[:, :-1].reshape(-1, 259), chunks[:, 1:].reshape(-1))
    bpb = nll.item() / math.log(2)
    assert losses[-1] < losses[0]
    assert bpb < 0.1, f"bits per byte {bpb:.3f} after 300 steps"
