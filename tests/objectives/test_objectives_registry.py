"""The objective registry and the `ce` objective against hand computations."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from stlm_selfplay.errors import UserError
from stlm_selfplay.objectives import REGISTRY, Batch, build_objective, build_objectives
from stlm_selfplay.objectives.ce import bits_per_byte


def _fixed_batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 259, generator=g)
    input_ids = torch.tensor([[10, 20, 30, 258, 40], [256, 256, 65, 66, 67]])  # eos in row 0; pads in row 1
    attention_mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    return SimpleNamespace(logits=logits), Batch(input_ids=input_ids, attention_mask=attention_mask)


def test_ce_equals_hand_computation_and_bpb_skips_eos_and_pads():
    out, batch = _fixed_batch()
    result = build_objective({"name": "ce"})[0](out, batch)
    logp = torch.log_softmax(out.logits, -1)
    # targets counted: row 0 -> t=1..4 (20, 30, eos, 40); row 1 -> t=3, 4 (66, 67): target at t=2 (65)
    # follows a pad position, and attention_mask[:, 2] = 1 so 65 counts too.
    terms, byte_terms = [], []
    for b, t in [(0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (1, 3), (1, 4)]:
        nll = -logp[b, t - 1, batch.input_ids[b, t]].item()
        terms.append(nll)
        if batch.input_ids[b, t] < 256:
            byte_terms.append(nll)
    assert result.loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-6)
    assert result.metrics["bpb"] == pytest.approx(sum(byte_terms) / (math.log(2) * len(byte_terms)), rel=1e-6)
    assert result.metrics["byte_targets"] == len(byte_terms)


def test_weighted_sum_and_namespaced_metrics():
    out, batch = _fixed_batch()
    single = build_objective({"name": "ce"})[0](out, batch)
    combo = build_objectives([{"name": "ce", "weight": 0.25}])(out, batch)
    torch.testing.assert_close(combo.loss, 0.25 * single.loss)
    assert combo.metrics["ce/bpb"] == pytest.approx(single.metrics["bpb"])
    assert combo.metrics["loss"] == pytest.approx(0.25 * single.loss.item())


def test_unknown_objective_lists_valid_names():
    with pytest.raises(UserError) as err:
        build_objective({"name": "cee"})
    msg = str(err.value)
    assert "unknown objective 'cee'" in msg and "did you mean 'ce'" in msg
    assert all(name in msg for name in REGISTRY)
    assert "\n" not in msg


def test_unknown_option_and_bad_weight_are_user_errors():
    with pytest.raises(UserError, match="objective 'ce' has no option 'temperatur'"):
        build_objective({"name": "ce", "temperatur": 2.0})
    with pytest.raises(UserError, match="weight must be a number"):
        build_objective({"name": "ce", "weight": "heavy"})
    with pytest.raises(UserError, match="no objectives configured"):
        build_objectives([])


def test_bits_per_byte_definition():
    assert bits_per_byte(math.log(2) * 12, 12) == pytest.approx(1.0)
