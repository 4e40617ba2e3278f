"""The model's early-exit hooks: exit logits, layer dropout, and the early_exit objective on a real model."""

import math

import pytest
import torch

from stlm_selfplay.model import STLMForCausalLM
from stlm_selfplay.model.modeling import layer_dropout_rates
from stlm_selfplay.objectives import build_objectives
from stlm_selfplay.objectives.base import Batch
from stlm_selfplay.objectives.early_exit import ExitPlan

from _model_fixtures import small_config


def _model(**overrides):
    torch.manual_seed(0)
    return STLMForCausalLM(small_config(**{"n_layers": 4, **overrides}))


def test_exit_logits_are_each_layers_state_through_the_shared_head():
    model = _model().eval()
    ids = torch.randint(0, 256, (2, 37))
    out = model(ids, exit_layers=[0, 2, 3], output_trunk_states=True)
    assert sorted(out.exit_logits) == [0, 2, 3]
    assert out.exit_logits[3] is out.logits
    from stlm_selfplay.model.patching import make_layout
    layout = make_layout(ids, None, model.config)
    for layer in (0, 2):
        torch.testing.assert_close(out.exit_logits[layer], model.logits_from_trunk(out.trunk_states[layer], layout))
    assert not torch.allclose(out.exit_logits[0], out.logits)
    # a callable plan (the objective's ExitPlan) and no extra work when nothing is asked
    planned = model(ids, exit_layers=ExitPlan("rotational", step=5, total_steps=10))
    assert sorted(planned.exit_logits) == [5 % 3, 3]
    assert model(ids).exit_logits is None
    with pytest.raises(ValueError, match="out of range"):
        model(ids, exit_layers=[4])


def test_early_exit_with_only_the_last_layer_equals_ce_on_the_model():
    model = _model().eval()
    ids = torch.randint(0, 256, (2, 40))
    batch = Batch(ids, step=0, total_steps=10)
    ee = build_objectives([{"name": "early_exit", "curriculum": "gradual"}])  # step 0: only the last layer
    ce = build_objectives([{"name": "ce"}])
    out = model(ids, **ee.model_kwargs(batch))
    assert sorted(out.exit_logits) == [3]
    torch.testing.assert_close(ee(out, batch).loss, ce(model(ids), batch).loss)


def test_early_exit_gradients_reach_early_layers_through_their_exits():
    model = _model().train()
    ids = torch.randint(0, 256, (2, 40))
    batch = Batch(ids, step=0, total_steps=10)
    obj = build_objectives([{"name": "early_exit", "curriculum": "none", "scale": "uniform"}])
    obj(model(ids, **obj.model_kwargs(batch)), batch).loss.backward()
    # with all exits on, layer 0's weights get gradient from four exits: compare with the last exit only
    g_all = model.trunk.layers[0].attn.wq.weight.grad.clone()
    model.zero_grad()
    build_objectives([{"name": "ce"}])(model(ids), batch).loss.backward()
    assert not torch.allclose(g_all, model.trunk.layers[0].attn.wq.weight.grad)


def test_layer_dropout_rates_formula():
    rates = layer_dropout_rates(step=5, total_steps=10, n_layers=4, p_max=0.3)
    s = math.exp(5 * math.log(2) / 10) - 1
    assert rates == pytest.approx([s * (math.exp(l * math.log(2) / 3) - 1) * 0.3 for l in range(4)])
    assert layer_dropout_rates(None, 1, 4, 0.3)[-1] == pytest.approx(0.3)  # S = 1 when not from scratch


def test_layer_dropout_skips_layers_per_row_in_training_and_never_in_eval():
    model = _model(layer_dropout=0.9)
    ids = torch.randint(0, 256, (16, 24))
    model.eval()
    ref = model(ids).logits
    torch.testing.assert_close(model(ids, train_progress=(10, 10)).logits, ref)  # eval: off
    model.train()
    torch.manual_seed(1)
    dropped = model(ids, train_progress=(10, 10)).logits  # S(T) = 1: last layer dropped with p 0.9
    assert not torch.allclose(dropped, ref)
    # the same seed drops the same rows; a row keeps all layers with p (1-.23)(1-.53)(1-.9) = 0.036,
    # so most rows differ from the eval output
    torch.manual_seed(1)
    torch.testing.assert_close(model(ids, train_progress=(10, 10)).logits, dropped)
    changed = sum((dropped[r] - ref[r]).abs().max().item() > 1e-5 for r in range(16))
    assert changed >= 10
    # from scratch at step 0, S(0) = 0: nothing is dropped
    torch.testing.assert_close(model(ids, train_progress=(0, 10)).logits, ref)
    # gradients still reach every layer's weights (zero rows are fine: DDP needs every parameter used)
    model(ids, train_progress=(10, 10)).logits.sum().backward()
    assert all(p.grad is not None for p in model.trunk.parameters())


def test_mtp_heads_condition_on_older_states():
    """Plain byte GPT (logits_t = E norm(s_t)) with W_i = 0 at init: head i's entry t is the
    ordinary logits at t - i (the state i bytes older), and the start condition before that."""
    from _model_fixtures import plain_gpt_config
    torch.manual_seed(0)
    model = STLMForCausalLM(plain_gpt_config(mtp_heads=2)).eval()
    ids = torch.randint(0, 256, (2, 20))
    out = model(ids, output_mtp_logits=True)
    assert len(out.mtp_logits) == 2 and model(ids).mtp_logits is None
    for i, logits in enumerate(out.mtp_logits, start=1):
        torch.testing.assert_close(logits[:, i:], out.logits[:, :-i])
        start = model.head(model.decoder.cond_proj(model.decoder.start))
        torch.testing.assert_close(logits[:, i - 1], start.expand(2, -1))


def test_mtp_objective_trains_only_through_its_heads_and_the_shared_model():
    torch.manual_seed(0)
    model = _model(mtp_heads=2).train()
    ids = torch.randint(0, 256, (2, 40))
    batch = Batch(ids, step=0, total_steps=10)
    mtp = build_objectives([{"name": "mtp"}])
    out = model(ids, **mtp.model_kwargs(batch))
    loss = mtp(out, batch).loss
    nll = [torch.nn.functional.cross_entropy(l[:, :-1].reshape(-1, l.shape[-1]), ids[:, 1:].reshape(-1))
           for l in out.mtp_logits]
    torch.testing.assert_close(loss, nll[0] + nll[1])
    loss.backward()
    assert all(h.weight.grad is not None and h.weight.grad.abs().sum() > 0 for h in model.mtp_heads)
    # the ordinary CE never touches the multi-byte heads
    model.zero_grad()
    build_objectives([{"name": "ce"}])(model(ids), batch).loss.backward()
    assert all(h.weight.grad is None for h in model.mtp_heads)


def test_flops_count_extra_exits_and_mtp_heads():
    from stlm_selfplay.model.flops import flops_per_byte
    base = small_config(n_layers=4)
    f0, f1 = flops_per_byte(base), flops_per_byte(base, extra_exits=1.0)
    f_mtp = flops_per_byte(small_config(n_layers=4, mtp_heads=1))
    c = base
    head_w = 6 * c.d_model ** 2 / c.patch_size
    assert f1 > f0 and f_mtp == pytest.approx(f1 + head_w)


def test_exit_layer_sampling_matches_the_exit_logits_of_a_full_forward():
    from stlm_selfplay.model import generate
    model = _model().eval()
    prompts = [b"abc", b"hello world, ", b"x"]
    fast = generate(model, prompts, 20, greedy=True, exit_layer=1)
    slow = generate(model, prompts, 20, greedy=True, exit_layer=1, use_cache=False)
    full = generate(model, prompts, 20, greedy=True)
    assert [c.text for c in fast] == [c.text for c in slow] and [c.text for c in fast] != [c.text for c in full]
    for c, p in zip(fast, prompts):  # each greedy byte is the argmax of exit 1's logits in a full forward
        ids = torch.tensor([list(p + c.text)])
        exit_logits = model(ids, exit_layers=[1]).exit_logits[1][0, len(p) - 1:-1]
        assert exit_logits.argmax(-1).tolist() == list(c.text)
        torch.testing.assert_close(torch.tensor(c.logprobs), exit_logits.log_softmax(-1).max(-1).values, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="exit_layer"):
        generate(model, prompts, 5, exit_layer=4)


@pytest.mark.parametrize("patching", ["fixed", "dynamic"])
def test_self_speculative_greedy_equals_full_greedy_and_reports_acceptance(patching):
    from stlm_selfplay.model import generate
    from stlm_selfplay.model.speculative import speculative_generate
    model = _model(patching=patching, max_patch_size=6).eval()
    with torch.no_grad():  # make the upper layers matter, so drafts from early exits get rejected
        for layer in model.trunk.layers[2:]:
            layer.ffn.w_down.weight.mul_(30)
            layer.attn.wo.weight.mul_(30)
    prompts = [b"hello there", b"a", b"The quick brown fox "]
    full = generate(model, prompts, 80, greedy=True, stop=[b"zz"])
    for exit_layer, draft_patches in [(0, 2), (1, 4), (3, 3)]:
        spec, stats = speculative_generate(model, prompts, 80, exit_layer=exit_layer, draft_patches=draft_patches,
                                           stop=[b"zz"])
        assert [c.text for c in spec] == [c.text for c in full]
        assert [c.stop_reason for c in spec] == [c.stop_reason for c in full]
        for a, b in zip(spec, full):
            torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=0)
        assert stats.drafted > 50 and stats.rounds > 5
        if exit_layer == 3:  # the last layer drafts for itself: everything is accepted
            assert stats.acceptance_rate == 1.0
        else:
            assert stats.accepted < stats.drafted
    if patching == "fixed":
        assert speculative_generate(model, [b"x"], 0, exit_layer=1)[0][0].text == b""
        with pytest.raises(ValueError, match="draft_patches"):
            speculative_generate(model, [b"x"], 5, exit_layer=1, draft_patches=0)


@pytest.mark.parametrize("curriculum", ["none", "rotational", "gradual"])
def test_mean_extra_exits_is_the_average_of_the_curriculum(curriculum):
    from stlm_selfplay.objectives.early_exit import enabled_exits, mean_extra_exits
    total = 4000
    counted = sum(len(enabled_exits(curriculum, t, total, 4)) - 1 for t in range(total)) / total
    assert mean_extra_exits(curriculum, 4) == pytest.approx(counted, abs=1e-3)
