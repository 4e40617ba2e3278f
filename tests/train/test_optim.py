"""Optimizer parameter groups and learning-rate schedules against hand computation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from stlm_selfplay.config import OptimizerConfig, ScheduleConfig
from stlm_selfplay.train.optim import Muon, build_optimizer, lr_factor, set_lr, split_parameters


class StandIn(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.trunk = nn.ModuleList([nn.Linear(8, 8), nn.LayerNorm(8)])
        self.local = nn.Linear(8, 8, bias=False)
        self.frozen = nn.Parameter(torch.zeros(3, 3), requires_grad=False)


def names(pairs):
    return sorted(n for n, _ in pairs)


def test_groups_exclude_norms_biases_embeddings_from_decay():
    groups = split_parameters(StandIn(), use_muon=False)
    assert names(groups["no_decay"]) == ["embed.weight", "trunk.0.bias", "trunk.1.bias", "trunk.1.weight"]
    assert names(groups["decay"]) == ["local.weight", "trunk.0.weight"]
    assert groups["muon"] == []
    with_muon = split_parameters(StandIn(), use_muon=True)
    assert names(with_muon["muon"]) == ["trunk.0.weight"] and names(with_muon["decay"]) == ["local.weight"]


def test_muon_and_adamw_step_together_and_round_trip_state():
    torch.manual_seed(0)
    model = StandIn()
    opt = build_optimizer(model, OptimizerConfig(name="muon"), torch.device("cpu"))
    assert [type(o).__name__ for o in opt.optimizers] == ["AdamW", "Muon"]
    before = model.trunk[0].weight.detach().clone()
    loss = (model.trunk[0](model.embed(torch.tensor([1, 2]))) ** 2).sum() + model.local.weight.sum()
    loss.backward()
    opt.step()
    assert not torch.equal(before, model.trunk[0].weight)
    state = opt.state_dict()
    again = build_optimizer(model, OptimizerConfig(name="muon"), torch.device("cpu"))
    again.load_state_dict(state)
    assert torch.equal(again.optimizers[1].state[model.trunk[0].weight]["momentum_buffer"],
                       opt.optimizers[1].state[model.trunk[0].weight]["momentum_buffer"])


@pytest.mark.parametrize("kind, step, expected", [
    ("cosine", 0, 1 / 10),  # warmup: (s + 1) / w
    ("cosine", 9, 1.0),
    ("cosine", 10, 1.0),  # p = 0
    ("cosine", 55, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5))),  # p = 45 / 90
    ("cosine", 100, 0.1),
    ("linear", 55, 1 - 0.9 * 0.5),
    ("constant", 80, 1.0),
    ("wsd", 79, 1.0),  # decay starts at 100 - 20 = 80
    ("wsd", 90, 1 - 0.9 * 10 / 20),
    ("wsd", 100, 0.1),
])
def test_schedule_values(kind, step, expected):
    cfg = ScheduleConfig(steps=100, kind=kind, warmup_steps=10, min_lr_ratio=0.1, decay_fraction=0.2)
    assert lr_factor(step, cfg) == pytest.approx(expected)


def test_set_lr_scales_each_groups_peak():
    opt = build_optimizer(StandIn(), OptimizerConfig(name="muon", lr=0.01, muon_lr=0.02), torch.device("cpu"))
    set_lr(opt, 0.5)
    assert sorted(g["lr"] for g in opt.param_groups) == [0.005, 0.005, 0.01]


def test_muon_scope_all_adds_the_local_matrices_but_not_embeddings_or_one_wide_heads():
    model = StandIn()
    model.value = nn.Linear(8, 1)  # a 1-wide head: orthogonalising one row would only normalise it
    groups = split_parameters(model, use_muon=True, muon_scope="all")
    assert names(groups["muon"]) == ["local.weight", "trunk.0.weight"]
    assert names(groups["decay"]) == ["value.weight"] and "embed.weight" in names(groups["no_decay"])
    opt = build_optimizer(model, OptimizerConfig(name="muon", muon_scope="all"), torch.device("cpu"))
    assert {id(p) for g in opt.optimizers[1].param_groups for p in g["params"]} == {id(model.local.weight),
                                                                                   id(model.trunk[0].weight)}


def test_batched_muon_matches_torch_muon_per_matrix():
    """Our Muon batches Newton-Schulz over same-shape matrices: the same update as torch.optim.Muon."""
    torch.manual_seed(0)
    shapes = [(16, 16), (16, 16), (40, 16), (40, 16), (16, 24), (24, 16)]  # square, tall, wide, one of a kind
    ours = [nn.Parameter(torch.randn(s) * 0.1) for s in shapes]
    theirs = [nn.Parameter(p.detach().clone()) for p in ours]
    opt_ours = Muon(ours, lr=0.02, weight_decay=0.1, momentum=0.95)
    opt_theirs = torch.optim.Muon(theirs, lr=0.02, weight_decay=0.1, momentum=0.95)
    for _ in range(3):
        for a, b in zip(ours, theirs):
            a.grad = torch.randn(a.shape)
            b.grad = a.grad.clone()
        opt_ours.step()
        opt_theirs.step()
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)
        assert torch.allclose(opt_ours.state[a]["momentum_buffer"], opt_theirs.state[b]["momentum_buffer"], atol=1e-7)
