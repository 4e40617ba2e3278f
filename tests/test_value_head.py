"""The optional value head (model/value_head.py) and the `value` objective (objectives/value.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _model_fixtures import small_config
from stlm_selfplay.model import STLMForCausalLM
from stlm_selfplay.model.value_head import state_values
from stlm_selfplay.objectives import Batch, build_objective
from stlm_selfplay.objectives.value import explained_variance
from stlm_selfplay.runs import load_model


def build(seed: int = 0, **overrides) -> STLMForCausalLM:
    torch.manual_seed(seed)
    return STLMForCausalLM(small_config(**overrides)).eval()


def ragged_batch():
    """Three prompts of lengths 11, 7 (right-padded) and 8 (left-padded) in one [3, 11] batch
    (the pad slots hold random bytes: only the mask says they are pads)."""
    ids = torch.randint(0, 256, (3, 11), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, :3] = 0
    return ids, mask


def randomize_head(model) -> None:
    with torch.no_grad():
        model.value_head.weight.normal_(generator=torch.Generator().manual_seed(2))
        model.value_head.bias.fill_(0.25)


def test_no_head_model_is_unchanged_and_the_head_draws_no_random_numbers():
    plain, with_head = build(), build(value_head=True)
    assert plain.value_head is None and not any(k.startswith("value_head") for k in plain.state_dict())
    extra = set(with_head.state_dict()) - set(plain.state_dict())
    assert extra == {"value_head.weight", "value_head.bias"}
    for key, tensor in plain.state_dict().items():  # same seed: every shared parameter equal
        assert torch.equal(tensor, with_head.state_dict()[key]), key
    ids, mask = ragged_batch()
    with torch.no_grad():
        assert torch.equal(plain(ids, attention_mask=mask).logits, with_head(ids, attention_mask=mask).logits)
    assert torch.equal(state_values(with_head, ids, mask), torch.zeros(3))  # zero-init: V = 0
    with pytest.raises(ValueError, match="value_head=True"):
        state_values(plain, ids, mask)
    with pytest.raises(ValueError, match="value_head"):
        small_config(value_head="yes")


@pytest.mark.parametrize("patching", ["fixed", "dynamic"])
def test_values_read_the_final_norm_state_of_the_last_prompt_patch(patching):
    model = build(value_head=True, patching=patching)
    randomize_head(model)
    ids, mask = ragged_batch()
    with torch.no_grad():
        values = state_values(model, ids, mask)
        for r, keep in enumerate(mask.bool()):  # each prompt alone, through the LM forward
            row = ids[r][keep][None]
            out = model(row, output_trunk_states=True)
            last = int(out.patch_ids.max())
            if patching == "fixed":  # trunk states are left-aligned: (len - 1) // P
                assert last == (row.shape[1] - 1) // 4
            state = model.trunk.norm(out.trunk_states[-1][0, last])
            expected = state @ model.value_head.weight[0] + model.value_head.bias[0]
            assert abs(float(values[r]) - float(expected)) < 1e-5, (r, values, expected)
    assert values.std() > 0  # not a constant


def test_save_load_round_trip_is_exact(tmp_path):
    model = build(value_head=True)
    randomize_head(model)
    model.save_pretrained(tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.config.value_head is True
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[key]), key
    ids, mask = ragged_batch()
    with torch.no_grad():
        assert torch.equal(state_values(model, ids, mask), state_values(loaded, ids, mask))


@pytest.mark.parametrize("epsilon", [0.2, 0.0, None])
def test_value_loss_equals_its_formula_on_a_hand_example(epsilon):
    values = torch.tensor([0.5, -0.2, 1.0], requires_grad=True)
    batch = Batch(input_ids=torch.zeros(3, 2, dtype=torch.long),
                  extras={"values": values, "returns": torch.tensor([1.0, -1.0, 0.0]),
                          "old_values": torch.tensor([0.0, 0.0, 0.9])})
    objective, weight = build_objective({"name": "value", "weight": 0.5, "epsilon": epsilon})
    assert weight == 0.5
    out = objective(None, batch)
    out.loss.backward()
    if epsilon:
        # unclipped (V - R)^2 = 0.25, 0.64, 1.0; V - V_old = 0.5, -0.2, 0.1 clipped to 0.2, -0.2, 0.1:
        # (V_old + clip - R)^2 = (0.2 - 1)^2 = 0.64, 0.64, 1.0; max = 0.64, 0.64, 1.0 -> 0.5 * 2.28 / 3
        assert out.loss.item() == pytest.approx(0.38, abs=1e-6)
        assert out.metrics["clip_frac"] == pytest.approx(1 / 3)
        # turn 0 is held by the clip (no gradient); the others: (V - R) / 3
        np.testing.assert_allclose(values.grad.numpy(), [0.0, 0.8 / 3, 1 / 3], atol=1e-6)
    else:
        assert out.loss.item() == pytest.approx(0.5 * 1.89 / 3, abs=1e-6)  # 0.5 mean (V - R)^2
        assert out.metrics["clip_frac"] == 0.0
        np.testing.assert_allclose(values.grad.numpy(), [-0.5 / 3, 0.8 / 3, 1 / 3], atol=1e-6)
    assert out.metrics["value_mean"] == pytest.approx(1.3 / 3)


def test_explained_variance_and_value_loss_needs_its_inputs():
    returns = torch.tensor([1.0, -1.0, 1.0, -1.0])
    assert explained_variance(returns, returns) == 1.0
    assert explained_variance(returns, torch.zeros(4)) == 0.0
    # R - V = 0.5, -0.5, 0.5, -0.5: Var 0.25 against Var(R) = 1
    assert explained_variance(returns, returns * 0.5) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="extras"):
        build_objective({"name": "value"})[0](None, Batch(input_ids=torch.zeros(1, 2, dtype=torch.long)))
