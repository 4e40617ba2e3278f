"""Mixture-of-Depths: routed trunk blocks (model/mod.py) and the `mod` objective (objectives/mod.py)."""

from types import SimpleNamespace

import pytest
import torch

from stlm_selfplay.errors import UserError
from stlm_selfplay.model import STLMForCausalLM
from stlm_selfplay.model.decoding import DecodeState
from stlm_selfplay.model.flops import flops_per_byte
from stlm_selfplay.model.layers import Block, CacheStep, LayerCache, rope_angles
from stlm_selfplay.model.mod import Router, RouterOutput, capacity_k, routed_block, topk_indices
from stlm_selfplay.objectives import build_objectives
from stlm_selfplay.objectives.base import Batch
from stlm_selfplay.selfplay.loop import rollout_routing

from _model_fixtures import small_config, text_bytes


def _model(**overrides):
    torch.manual_seed(0)
    return STLMForCausalLM(small_config(**{"n_layers": 4, "mod_every": 2, **overrides}))


def test_capacity_one_without_router_scale_equals_the_dense_model():
    dense = _model(mod_every=0).train()
    for every in (1, 2):
        routed = _model(mod_every=every, mod_capacity=1.0, mod_router_scale=False).train()
        missing = routed.load_state_dict(dense.state_dict(), strict=False).missing_keys
        assert missing and all(k.startswith("trunk.routers.") for k in missing)
        ids = torch.randint(0, 256, (3, 45))
        out = routed(ids, routing="topk", output_router_logits=True, output_trunk_states=True)
        ref = dense(ids, output_trunk_states=True)
        assert len(out.router_logits) == 4 // every
        assert all(bool(r.processed.all()) for r in out.router_logits)
        torch.testing.assert_close(out.logits, ref.logits, rtol=0, atol=0)
        for a, b in zip(out.trunk_states, ref.trunk_states):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_routed_layers_config_and_validation():
    assert small_config(n_layers=6, mod_every=2).routed_layers == [1, 3, 5]
    assert small_config(n_layers=3, mod_every=1).routed_layers == [0, 1, 2]
    assert small_config(n_layers=4).routed_layers == []
    assert sorted(_model().trunk.routers) == ["1", "3"]
    for field, value in [("mod_capacity", 0.0), ("mod_capacity", 1.5), ("mod_routing", "random"), ("mod_every", -1)]:
        with pytest.raises(ValueError, match=f"STLMConfig.{field}"):
            small_config(**{field: value})


def test_topk_selects_exactly_k_per_row_in_order_with_earlier_ties_first():
    assert (capacity_k(64, 0.125), capacity_k(30, 0.1), capacity_k(5, 0.125), capacity_k(7, 1.0)) == (8, 3, 1, 7)
    scores = torch.tensor([[1.0, 3.0, 3.0, 0.0, 3.0, 2.0, -1.0, 3.0]])
    assert topk_indices(scores, 0.25).tolist() == [[1, 2]]  # four 3.0s: the two earliest
    assert topk_indices(scores, 0.5).tolist() == [[1, 2, 4, 7]]
    model = _model().train()
    ids = torch.randint(0, 256, (4, 200))  # 50 patches: k = ceil(0.125 * 50) = 7
    for r in model(ids, output_router_logits=True).router_logits:
        assert r.topk.sum(1).tolist() == [7] * 4 and torch.equal(r.processed, r.topk)
        kth = r.logits.sort(1, descending=True).values[:, 6:7]
        assert bool((r.logits[r.topk].view(4, 7) >= kth).all())


def test_layer_dropout_reports_the_rows_that_ran_a_routed_block():
    model = _model(layer_dropout=0.9).train()
    ids = torch.randint(0, 256, (8, 64))
    batch = Batch(ids)
    obj = build_objectives([{"name": "mod"}])
    torch.manual_seed(1)
    out = model(ids, **obj.model_kwargs(batch))  # p_3 = 0.9: most rows skip the last block
    last = out.router_logits[-1]
    assert last.rows is not None and last.logits.shape == (len(last.rows), 16) and len(last.rows) < 8
    assert torch.isfinite(obj(out, batch).loss)


def _toy_block(n: int = 8, d: int = 16, predictor: bool = False):
    """A block and a router that scores a patch by its first feature: z = x[..., 0]."""
    torch.manual_seed(0)
    block = Block(d, 2, 2, 32, qk_norm=False, eps=1e-5, dropout=0.0)
    router = Router(d, predictor)
    with torch.no_grad():
        router.proj.weight.zero_()
        router.proj.weight[0, 0] = 1.0
        router.proj.bias.zero_()
    cos, sin = rope_angles(torch.arange(n)[None], d // 2, 10000.0)
    x = torch.randn(2, n, d)
    x[:, :, 0] = torch.tensor([[1.0, -2.0, 3.0, -1.0, 0.5, -3.0, 2.0, -0.5]])[:, :n]
    return block, router, x, cos, sin


@pytest.mark.parametrize("routing", ["topk", "causal"])
def test_skipped_patches_pass_through_and_are_no_keys(routing):
    """Perturbing skipped patches (orthogonally to the router) changes nothing else."""
    block, router, x, cos, sin = _toy_block()
    kw = dict(routing=routing, capacity=0.25, router_scale=True)
    out, report = routed_block(router, block, x, cos, sin, **kw)
    chosen = torch.tensor([False, False, True, False, False, False, True, False])  # top-2 of z: 3.0, 2.0
    if routing == "causal":
        chosen = x[0, :, 0] > 0  # sigmoid(z) > 0.5
    assert torch.equal(report.processed, chosen.expand(2, -1))
    torch.testing.assert_close(out[:, ~chosen], x[:, ~chosen], rtol=0, atol=0)
    assert not torch.allclose(out[:, chosen], x[:, chosen])
    x2 = x.clone()
    x2[:, ~chosen, 1:] += torch.randn_like(x2[:, ~chosen, 1:])
    out2, _ = routed_block(router, block, x2, cos, sin, **kw)
    torch.testing.assert_close(out2[:, chosen], out[:, chosen])
    torch.testing.assert_close(out2[:, ~chosen], x2[:, ~chosen], rtol=0, atol=0)
    # x + r f(x): the gate is sigmoid(z) of each processed patch
    plain, _ = routed_block(router, block, x, cos, sin, **{**kw, "router_scale": False})
    r = torch.sigmoid(x[:, chosen, 0]).unsqueeze(-1)
    torch.testing.assert_close(out[:, chosen], x[:, chosen] + r * (plain[:, chosen] - x[:, chosen]))


def test_causal_routing_is_causal_and_equals_the_cached_block():
    block, router, x, cos, sin = _toy_block()
    kw = dict(routing="causal", capacity=0.25, router_scale=True)
    out, _ = routed_block(router, block, x, cos, sin, **kw)
    x2 = x.clone()
    x2[:, 5:] = torch.randn_like(x2[:, 5:])
    torch.testing.assert_close(routed_block(router, block, x2, cos, sin, **kw)[0][:, :5], out[:, :5])
    cache = LayerCache(2, 2, 8, 8, x.device, x.dtype)  # prefill 3 patches, then one at a time
    parts = [routed_block(router, block, x[:, :3], cos[:, :3], sin[:, :3], cache,
                          CacheStep(None, torch.zeros(2, dtype=torch.long), 3), **kw)[0]]
    for t in range(3, 8):
        step = CacheStep(None, torch.full((2,), t), t + 1)
        parts.append(routed_block(router, block, x[:, t:t + 1], cos[:, t:t + 1], sin[:, t:t + 1], cache, step, **kw)[0])
    torch.testing.assert_close(torch.cat(parts, 1), out)
    with pytest.raises(ValueError, match="causal"):
        routed_block(router, block, x[:, :1], cos[:, :1], sin[:, :1], cache, step, **{**kw, "routing": "topk"})


@pytest.mark.parametrize("predictor,patching", [(False, "fixed"), (True, "fixed"), (False, "dynamic")])
def test_cached_decoding_equals_a_full_forward_in_eval_mode(predictor, patching):
    extra = {"patching": "dynamic", "max_patch_size": 6} if patching == "dynamic" else {}
    model = _model(mod_predictor=predictor, **extra).eval()
    text = list(text_bytes()[:90])
    prompts = [text[:5], text[:23], []]
    state = DecodeState(model, prompts)
    got = [[state.logits[i]] for i in range(3)]
    for t in range(40):
        tokens = torch.tensor([text[len(p) + t] for p in prompts])
        state.step(tokens)
        for i in range(3):
            got[i].append(state.logits[i])
    for i, p in enumerate(prompts):
        seq = torch.tensor([text[: len(p) + 40]])
        out = model(seq, output_router_logits=True)
        want = out.logits[0, len(p) - 1:] if p else torch.cat([_first_byte_logits(model), out.logits[0]])
        torch.testing.assert_close(torch.stack(got[i]), want.float(), rtol=1e-4, atol=1e-4)
        processed = torch.cat([r.processed for r in out.router_logits])
        assert 0.0 < processed.float().mean() < 1.0  # routing really skips some patches and runs others
    # training forwards told to route causally (self-play's RL forwards) see what sampling saw
    seq = torch.tensor([text[:60]])
    assert rollout_routing(model) == {"routing": "causal"} and rollout_routing(_model(mod_every=0)) == {}
    eval_logits = model(seq).logits
    torch.testing.assert_close(model.train()(seq, **rollout_routing(model)).logits, eval_logits)


def _first_byte_logits(model):
    """Logits of the first byte of an empty row (the decoder's start condition)."""
    return DecodeState(model, [[]]).logits


def test_router_is_on_the_lm_gradient_path_only_through_the_router_scale():
    ids = torch.randint(0, 256, (2, 64))
    for scale in (True, False):
        model = _model(mod_router_scale=scale).train()
        model(ids, labels=ids).loss.backward()
        grads = [p.grad for p in model.trunk.routers.parameters()]
        if scale:
            assert all(g is not None and g.abs().sum() > 0 for g in grads)
        else:
            assert all(g is None for g in grads)


def test_predictor_loss_trains_the_predictor_only():
    model = _model(mod_predictor=True).train()
    ids = torch.randint(0, 256, (2, 64))
    batch = Batch(ids)
    obj = build_objectives([{"name": "mod", "router_weight": 0.0}])
    obj(model(ids, **obj.model_kwargs(batch)), batch).loss.backward()
    for name, p in model.named_parameters():
        if ".predictor." in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None or not p.grad.any(), name  # the predictor's input is detached
    model.zero_grad(set_to_none=True)
    build_objectives([{"name": "mod"}])(model(ids, **obj.model_kwargs(batch)), batch).loss.backward()
    assert model.trunk.layers[0].attn.wq.weight.grad.abs().sum() > 0  # the router term reaches the trunk
    model.zero_grad(set_to_none=True)
    model(ids, labels=ids).loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if ".predictor." in n)


def _hand_bce(s, m, v):
    p = torch.sigmoid(s)
    nll = -(m * torch.log(p) + (1 - m) * torch.log(1 - p))
    return (nll * v).sum() / v.sum()


def test_mod_loss_equals_a_hand_written_bce():
    z = torch.tensor([[2.0, -1.0, 0.5, 0.0], [-0.5, 1.5, -2.0, 3.0]])
    q = torch.tensor([[0.3, -0.2, 1.0, -4.0], [0.7, -1.0, 0.1, 2.0]])
    m = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]])
    patch_ids = torch.tensor([[0, 0, 1, 1, 2, 2, 3, 3], [-1, -1, 0, 0, 1, 1, 2, 2]])  # row 1: patch 3 is a pad
    v = torch.tensor([[1.0, 1, 1, 1], [1, 1, 1, 0]])
    layers = (RouterOutput(z, m.bool(), q, m.bool()), RouterOutput(-z, m.bool(), None, m.bool()))
    out = SimpleNamespace(router_logits=layers, patch_ids=patch_ids)
    obj = build_objectives([{"name": "mod", "router_weight": 0.5, "predictor_weight": 2.0}])
    got = obj(out, Batch(torch.zeros(2, 8, dtype=torch.long)))
    want = (0.5 * _hand_bce(z, m, v) + 2.0 * _hand_bce(q, m, v) + 0.5 * _hand_bce(-z, m, v)) / 2
    torch.testing.assert_close(got.loss, want)
    # agreement of causal routing (q > 0 in layer 0, -z > 0 in layer 1) with m, over the 7 real patches
    agree0 = ((q > 0) == m.bool()).float().mul(v).sum() / 7
    agree1 = ((-z > 0) == m.bool()).float().mul(v).sum() / 7
    assert got.metrics["mod/agreement"] == pytest.approx(float(agree0 + agree1) / 2)
    with pytest.raises(UserError, match="mod_every"):
        obj(SimpleNamespace(router_logits=(), patch_ids=patch_ids), Batch(patch_ids))


def test_flops_count_routed_blocks_at_their_capacity():
    c = small_config(n_layers=4)
    dense = flops_per_byte(c)
    full = flops_per_byte(small_config(n_layers=4, mod_every=2, mod_capacity=1.0))
    router = 6 * c.d_model / c.patch_size  # one d_model -> 1 projection per routed block
    assert full == pytest.approx(dense + 2 * router)
    cap, n_p = 0.25, c.max_seq_len / c.patch_size
    m_layer = sum(m.weight.numel() for m in _model(mod_every=0).trunk.layers[0].modules()
                  if isinstance(m, torch.nn.Linear))
    layer = lambda cc: cc * (6 * m_layer + 6 * c.d_model * (cc * n_p + 1)) / c.patch_size  # noqa: E731
    quarter = flops_per_byte(small_config(n_layers=4, mod_every=2, mod_capacity=cap))
    assert quarter == pytest.approx(full - 2 * (layer(1.0) - layer(cap)))


def _train_and_measure(specs, lr, steps, **overrides):
    """Train on windows of the test text (top-k routing), then measure on its held-out last
    32 x 128 bytes how often causal routing agrees with top-k, and its recall of the top-k patches."""
    model = _model(n_layers=2, max_seq_len=128, **overrides).train()
    obj = build_objectives(specs)
    data = torch.tensor(list(text_bytes()))
    split = len(data) - 32 * 128  # training windows lie before it, the held-out ones after
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    for step in range(steps):
        starts = torch.randint(0, split - 128, (8,), generator=gen).tolist()
        batch = Batch(torch.stack([data[s: s + 128] for s in starts]), step=step, total_steps=steps)
        loss = obj(model(batch.input_ids, **obj.model_kwargs(batch)), batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    held_out = data[split:].view(32, 128)
    with torch.no_grad():
        (r,) = model.eval()(held_out, output_router_logits=True, routing="topk").router_logits
    return float((r.causal == r.topk).float().mean()), float((r.causal & r.topk).sum() / r.topk.sum())


def test_predictor_trained_alone_routes_causally_like_topk():
    """Only the predictor learns (router term off, its input detached): 300 steps. Agreement
    >= 90% (never processing anything would score 1 - C = 87.5%, so recall is checked too)."""
    agreement, recall = _train_and_measure([{"name": "mod", "router_weight": 0.0}], 1e-2, 300, mod_predictor=True)
    assert agreement >= 0.9 and recall >= 0.6, (agreement, recall)


def test_router_bce_beside_ce_makes_causal_routing_agree_with_topk():
    agreement, recall = _train_and_measure([{"name": "ce"}, {"name": "mod"}], 3e-3, 200)
    assert agreement >= 0.9 and recall >= 0.5, (agreement, recall)
