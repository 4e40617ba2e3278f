"""The objective interface shared by pretraining and self-play.

An objective is called with the model's `STLMOutput` and a `Batch` and returns
`ObjectiveOutput(loss, metrics)`. Options are a dataclass (`Options`) declared on the class,
each field an `option(default, help, choices=...)` (stlm_selfplay/options.py); unknown or
mistyped options, and values outside an option's choices, are user errors.

Alignment convention (HF causal LM): `output.logits[:, t]` is the distribution of
`input_ids[:, t + 1]`. `loss_mask[:, t]` is aligned with `input_ids`: 1 where byte t is a
prediction target (so `loss_mask[:, 0]` is never used).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from stlm_selfplay.options import check_choices


@dataclass
class Batch:
    """What every objective may read. RL fields are None in pretraining."""

    input_ids: torch.Tensor  # [B, T] long: byte ids 0-255, then pad/bos/eos
    attention_mask: torch.Tensor | None = None  # [B, T] 1 = real token, 0 = pad
    loss_mask: torch.Tensor | None = None  # [B, T] 1 = input_ids[:, t] is a target
    step: int = 0  # optimizer step (0-based), for curricula and schedules
    total_steps: int = 1  # planned optimizer steps in this run
    old_logprobs: torch.Tensor | None = None  # [B, T] per-target log-probs at rollout time
    advantages: torch.Tensor | None = None  # [B] or [B, T]
    ref_logprobs: torch.Tensor | None = None  # [B, T] log-probs of the reference policy
    extras: dict[str, Any] = field(default_factory=dict)  # objective-specific inputs

    def target_mask(self) -> torch.Tensor:
        """[B, T-1] float mask over targets input_ids[:, 1:] (pads never count)."""
        ids = self.input_ids
        mask = torch.ones_like(ids, dtype=torch.float32) if self.loss_mask is None else self.loss_mask.float()
        if self.attention_mask is not None:
            mask = mask * self.attention_mask.float()
        return mask[:, 1:]


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor  # scalar, differentiable
    metrics: dict[str, float] = field(default_factory=dict)


class Objective(nn.Module):
    """Base class. Subclasses set `name`, `Options` and `forward`, and `model_kwargs` when they read
    extra model outputs (e.g. `{"exit_layers": ...}` for `exit_logits`): the trainer passes the
    union of every objective's `model_kwargs` to the model's forward, and the objective raises a
    `UserError` naming the missing part when the model cannot produce it.
    """

    name: ClassVar[str] = ""

    @dataclass
    class Options:
        pass

    def __init__(self, options: "Objective.Options | None" = None):
        super().__init__()
        self.options = options if options is not None else self.Options()
        check_choices(self.options, label=f"objective '{self.name}': {{}}")

    def model_kwargs(self, batch: Batch) -> dict[str, Any]:
        """Extra keyword arguments for the model's forward (e.g. which exits to compute)."""
        return {}

    def forward(self, output, batch: Batch) -> ObjectiveOutput:  # pragma: no cover - abstract
        raise NotImplementedError


def option_fields(options_cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(options_cls)}
