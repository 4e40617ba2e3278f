"""`early_exit`: LayerSkip's early-exit loss, exit curricula and layer-dropout rates
(Elhoushi et al. 2024, "LayerSkip: Enabling Early Exit Inference and Self-Speculative Decoding").

Trunk layers l = 0..L-1. Every exit reads the shared head: final norm + local decoder + byte head
(`logits_from_trunk`), so each enabled exit costs one decoder pass. With C(t, l) in {0, 1} the
curriculum (is exit l on at step t) and e(l) the scale,

    e(l)      = e_scale * f(l)  for l < L-1,     e(L-1) = f(L-1)
    e~(t, l)  = C(t, l) e(l) / sum_i C(t, i) e(i)
    J         = sum_l e~(t, l) CE_l,     CE_l = sum_t m_t nll_l(t) / sum_t m_t   (as `ce`)

with f on the 1-based layer number n = l + 1:
    uniform: 1    linear_l: n    sum_l: n (n + 1) / 2    sqrt_l: sqrt(n)    inv_l: 1 / n

Curricula (the last layer is always on; t = step, T = total steps):
    none:        every layer
    rotational:  one non-final exit per step: layer t mod (L-1)
    gradual:     layer l once t / T >= 0.5 (L-1-l) / (L-1)       (layer 0 from half-way)

Layer dropout (applied by the model's trunk while training, off in eval mode):
    p_l  = S(t) D(l) p_max,  D(l) = exp(l ln2 / (L-1)) - 1,
    S(t) = exp(t ln2 / T) - 1 when pretraining from scratch, else 1     (`layer_dropout_rates`)

Model contract. `model_kwargs` asks for `exit_layers=ExitPlan(...)`: the model calls
`plan(n_layers)` (a sorted list of layer indices, always holding L-1) and returns
`output.exit_logits` as a dict {layer: [B, T, V] logits} holding at least those layers (the final
layer's entry is the ordinary `output.logits`), or a list/tuple of length L with None for layers
not computed. With only the last layer on, J equals `ce` on the same logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from stlm_selfplay.errors import UserError
from stlm_selfplay.model.modeling import layer_dropout_rates as model_layer_dropout_rates
from stlm_selfplay.objectives.base import Batch, Objective, ObjectiveOutput
from stlm_selfplay.objectives.ce import bits_per_byte, byte_target_mask, token_nll
from stlm_selfplay.objectives.registry import register
from stlm_selfplay.options import option

SCALES = {
    "uniform": lambda n: 1.0,
    "linear_l": lambda n: float(n),
    "sum_l": lambda n: n * (n + 1) / 2.0,
    "sqrt_l": lambda n: math.sqrt(n),
    "inv_l": lambda n: 1.0 / n,
}
CURRICULA = ("none", "rotational", "gradual")


def enabled_exits(curriculum: str, step: int, total_steps: int, n_layers: int) -> list[int]:
    """Sorted layer indices whose exit is on at `step` (formulas in the module docstring)."""
    last = n_layers - 1
    if curriculum == "none" or last == 0:
        return list(range(n_layers))
    if curriculum == "rotational":
        return sorted({step % last, last})
    if curriculum == "gradual":  # t/T >= 0.5 (L-1-l)/(L-1), in integers: 2 t (L-1) >= T (L-1-l)
        return [l for l in range(n_layers) if 2 * step * last >= max(total_steps, 1) * (last - l)]
    raise ValueError(f"unknown curriculum '{curriculum}'; valid: {', '.join(CURRICULA)}")


def mean_extra_exits(curriculum: str, n_layers: int) -> float:
    """Non-final exits computed per step, averaged over a run (for FLOPs accounting):

        none: L-1     rotational: 1     gradual: sum_{l<L-1} (1 - 0.5 (L-1-l)/(L-1)) = (L-1) - L/4
    """
    if n_layers <= 1:
        return 0.0
    return {"none": n_layers - 1.0, "rotational": 1.0, "gradual": n_layers - 1.0 - n_layers / 4.0}[curriculum]


def exit_scales(layers: Sequence[int], n_layers: int, scale: str, e_scale: float) -> list[float]:
    """e~(l) for the enabled `layers`: e(l) normalized to sum 1."""
    raw = [SCALES[scale](l + 1) * (e_scale if l < n_layers - 1 else 1.0) for l in layers]
    total = sum(raw)
    return [r / total for r in raw]


def layer_dropout_rates(step: int, total_steps: int, n_layers: int, p_max: float, from_scratch: bool) -> list[float]:
    """[p_0 .. p_{L-1}], p_l = S(t) D(l) p_max (module docstring); the model's trunk applies
    them (`stlm_selfplay.model.modeling.layer_dropout_rates`, one formula for both)."""
    return model_layer_dropout_rates(step if from_scratch else None, total_steps, n_layers, p_max)


@dataclass(frozen=True)
class ExitPlan:
    """What `early_exit` asks the model for: `plan(n_layers)` -> the layers whose exits to compute."""

    curriculum: str
    step: int
    total_steps: int

    def __call__(self, n_layers: int) -> list[int]:
        return enabled_exits(self.curriculum, self.step, self.total_steps, n_layers)


def _exit_table(exit_logits) -> tuple[dict[int, torch.Tensor], int]:
    """Model output -> ({layer: logits}, L). Dicts hold the final layer, so L = max key + 1."""
    if exit_logits is None:
        raise UserError("objective 'early_exit' needs per-layer exit logits, which this model does not compute "
                        "(its forward must honour exit_layers=...)")
    if isinstance(exit_logits, Mapping):
        table = {int(k): v for k, v in exit_logits.items() if v is not None}
        return table, max(int(k) for k in exit_logits) + 1
    return {l: v for l, v in enumerate(exit_logits) if v is not None}, len(exit_logits)


@register("early_exit")
class EarlyExit(Objective):
    """LayerSkip early-exit loss J = sum_l e~(t, l) CE_l over the enabled exits."""

    @dataclass
    class Options:
        scale: str = option("sum_l", "exit weight f(l) of layer l (the module docstring)", choices=SCALES)
        e_scale: float = option(1.0, "extra factor on every non-final exit's weight (LayerSkip's e_scale)")
        curriculum: str = option("none", "which exits are on at step t: none (all), rotational or gradual",
                                 choices=CURRICULA)

        def __post_init__(self):
            if self.e_scale < 0:
                raise ValueError(f"e_scale must be >= 0, got {self.e_scale}")

    def model_kwargs(self, batch: Batch) -> dict:
        return {"exit_layers": ExitPlan(self.options.curriculum, batch.step, batch.total_steps)}

    def forward(self, output, batch: Batch) -> ObjectiveOutput:
        table, n_layers = _exit_table(getattr(output, "exit_logits", None))
        layers = enabled_exits(self.options.curriculum, batch.step, batch.total_steps, n_layers)
        missing = [l for l in layers if l not in table]
        if missing:
            raise ValueError(f"early_exit: the model did not return exit logits for layers {missing}")
        scales = exit_scales(layers, n_layers, self.options.scale, self.options.e_scale)
        mask = batch.target_mask().to(table[layers[-1]].device)
        count = mask.sum().clamp_min(1.0)
        loss = None
        metrics: dict[str, float] = {"exits_on": float(len(layers))}
        with torch.no_grad():
            bmask = byte_target_mask(batch.input_ids, mask)
        for layer, weight in zip(layers, scales):
            nll = token_nll(table[layer], batch.input_ids)
            ce = (nll * mask).sum() / count
            loss = weight * ce if loss is None else loss + weight * ce
            with torch.no_grad():
                metrics[f"exit{layer}_bpb"] = bits_per_byte((nll * bmask).sum().item(), bmask.sum().item())
        assert loss is not None
        metrics["loss"] = loss.item()
        metrics["bpb"] = metrics[f"exit{n_layers - 1}_bpb"]
        return ObjectiveOutput(loss, metrics)
