"""`mod`: trains Mixture-of-Depths causal routing to agree with top-k routing (Raposo et al. 2024,
"Mixture-of-Depths: Dynamically allocating compute in transformer-based language models").

Per routed block l (model/mod.py), with z_l the router logits, q_l the predictor logits (a model
with `mod_predictor`) and m_l the top-k mask (k = ceil(C N) highest z per row, no gradient):

    loss = 1/|R| sum_l [ a BCE(z_l, m_l) + b BCE(q_l, m_l) ]
    BCE(s, m) = -mean_i v_i [m_i log sigmoid(s_i) + (1 - m_i) log(1 - sigmoid(s_i))] / mean_i v_i

over the patches i of every row, v_i = 1 for a patch holding bytes (pad patches do not count),
a = router_weight, b = predictor_weight (0 without a predictor). The predictor reads the trunk
state through a stop-gradient, so its term trains the predictor only; the router term also
reaches the trunk through z. Causal routing processes patch i when s_i > 0 (s = q with a
predictor, else z): the `agreement` metric is the fraction of patches where that equals m.
Used beside `ce`: `objectives: [{name: ce}, {name: mod}]` with `model.overrides.mod_every: 2`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from stlm_selfplay.errors import UserError
from stlm_selfplay.objectives.base import Batch, Objective, ObjectiveOutput
from stlm_selfplay.objectives.registry import register
from stlm_selfplay.options import option


def bce(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Masked mean binary cross-entropy with logits (formula in the module docstring)."""
    nll = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    return (nll * valid).sum() / valid.sum().clamp_min(1.0)


def patch_valid(patch_ids: torch.Tensor | None, n: int, device) -> torch.Tensor:
    """[B, N] float: 1 for patches holding bytes (patch_ids [B, T], -1 for pads; None: all)."""
    if patch_ids is None:
        return torch.ones(1, n, device=device)
    last = patch_ids.to(device).max(1).values  # rows are left-aligned: patches 0..last hold bytes
    return (torch.arange(n, device=device)[None] <= last[:, None]).float()


@register("mod")
class MixtureOfDepths(Objective):
    """BCE of the router (and predictor) logits against each routed block's top-k mask."""

    @dataclass
    class Options:
        router_weight: float = option(1.0, "a: weight of BCE(router logits, top-k); makes z > 0 the causal rule")
        predictor_weight: float = option(1.0, "b: weight of BCE(predictor logits, top-k) when the model has a "
                                         "predictor")

        def __post_init__(self):
            if self.router_weight < 0 or self.predictor_weight < 0:
                raise ValueError("router_weight and predictor_weight must be >= 0")

    def model_kwargs(self, batch: Batch) -> dict:
        return {"output_router_logits": True}

    def forward(self, output, batch: Batch) -> ObjectiveOutput:
        routes = getattr(output, "router_logits", None)
        if not routes:
            raise UserError("objective 'mod' needs routed trunk blocks, which this model does not have; "
                            "set model.overrides.mod_every (e.g. 2)")
        a, b = self.options.router_weight, self.options.predictor_weight
        total = 0.0
        sums = {"router_bce": 0.0, "predictor_bce": 0.0, "agreement": 0.0, "causal_fraction": 0.0}
        for r in routes:
            valid = patch_valid(output.patch_ids, r.logits.shape[1], r.logits.device)
            if r.rows is not None and valid.shape[0] > 1:  # layer dropout ran the block on these rows
                valid = valid[r.rows.to(valid.device)]
            valid = valid.expand_as(r.logits)
            router = bce(r.logits, r.topk, valid)
            total = total + a * router
            sums["router_bce"] += router.item()
            if r.predictor_logits is not None:
                pred = bce(r.predictor_logits, r.topk, valid)
                total = total + b * pred
                sums["predictor_bce"] += pred.item()
            with torch.no_grad():
                count = valid.sum().clamp_min(1.0)
                sums["agreement"] += ((r.causal == r.topk).float() * valid).sum().item() / count.item()
                sums["causal_fraction"] += (r.causal.float() * valid).sum().item() / count.item()
        loss = total / len(routes)
        metrics = {k: v / len(routes) for k, v in sums.items()}
        if routes[0].predictor_logits is None:
            del metrics["predictor_bce"]
        metrics["loss"] = loss.item()
        return ObjectiveOutput(loss, metrics)
