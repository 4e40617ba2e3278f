"""Objective registry: config names -> classes, and the weighted sum a run trains on.

A config lists objectives as `[{name: ce}, {name: early_exit, weight: 1.0, curriculum: gradual}]`.
`build_objectives(specs)` validates every name and option (a `UserError` naming the closest
valid one otherwise) and returns an `ObjectiveSet`, whose loss is sum_i weight_i * loss_i and
whose metrics are namespaced `<name>/<metric>`.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from stlm_selfplay.errors import UserError, closest
from stlm_selfplay.objectives.base import Batch, Objective, ObjectiveOutput
from stlm_selfplay.registry import Registry, named

REGISTRY = Registry("objective")  # name -> Objective subclass


def register(name: str):
    """Class decorator: `@register("ce")` makes the class available as `name: ce`."""
    return named(REGISTRY, name)


def _check_type(obj_name: str, key: str, value: Any, annotation: Any) -> Any:
    """Coerce ints to floats where a float is declared; reject other mismatches."""
    if isinstance(annotation, str):
        annotation = {"int": int, "float": float, "str": str, "bool": bool}.get(annotation, Any)
    if annotation in (float,) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float, str, bool) and not isinstance(value, annotation):
        raise UserError(
            f"objective '{obj_name}' option '{key}' must be {annotation.__name__}, got {value!r}"
        )
    return value


def make_options(cls: type[Objective], options: Mapping[str, Any]):
    """Build `cls.Options` from a mapping; unknown keys and wrong types are `UserError`s."""
    fields = {f.name: f for f in dataclasses.fields(cls.Options)}
    hints = typing.get_type_hints(cls.Options) if fields else {}
    kwargs = {}
    for key, value in options.items():
        if key not in fields:
            valid = ", ".join(sorted(fields)) or "none"
            raise UserError(
                f"objective '{cls.name}' has no option '{key}'{closest(key, fields)}; valid options: {valid}"
            )
        kwargs[key] = _check_type(cls.name, key, value, hints.get(key, Any))
    try:
        return cls.Options(**kwargs)
    except (TypeError, ValueError) as err:
        raise UserError(f"objective '{cls.name}': {err}") from None


def build_objective(spec: Mapping[str, Any]) -> tuple[Objective, float]:
    """One `{name: ..., weight: ..., **options}` entry -> (objective, weight)."""
    spec = dict(spec)
    if "name" not in spec:
        raise UserError(f"objective entry {spec} has no 'name'; valid names: {', '.join(sorted(REGISTRY))}")
    name = spec.pop("name")
    weight = spec.pop("weight", 1.0)
    cls = REGISTRY.get(name)  # unknown name -> UserError naming the closest
    if not isinstance(weight, (int, float)) or isinstance(weight, bool):
        raise UserError(f"objective '{name}' weight must be a number, got {weight!r}")
    return cls(make_options(cls, spec)), float(weight)


class ObjectiveSet(nn.Module):
    """The weighted sum of several objectives: loss = sum_i w_i * loss_i."""

    def __init__(self, objectives: Iterable[tuple[Objective, float]]):
        super().__init__()
        pairs = list(objectives)
        if not pairs:
            raise UserError("no objectives configured; add e.g. `objectives: [{name: ce}]`")
        self.objectives = nn.ModuleList([o for o, _ in pairs])
        self.weights = [w for _, w in pairs]

    def model_kwargs(self, batch: Batch) -> dict[str, Any]:
        """Union of what each objective asks the model's forward to compute."""
        kwargs: dict[str, Any] = {}
        for o in self.objectives:
            kwargs.update(o.model_kwargs(batch))
        return kwargs

    def forward(self, output, batch: Batch) -> ObjectiveOutput:
        total = None
        metrics: dict[str, float] = {}
        names = [o.name for o in self.objectives]
        for obj, weight in zip(self.objectives, self.weights):
            out = obj(output, batch)
            total = weight * out.loss if total is None else total + weight * out.loss
            prefix = obj.name if names.count(obj.name) == 1 else f"{obj.name}{names.index(obj.name)}"
            metrics.update({f"{prefix}/{k}": float(v) for k, v in out.metrics.items()})
        assert total is not None
        metrics["loss"] = float(total.detach())
        return ObjectiveOutput(total, metrics)


def build_objectives(specs: Iterable[Mapping[str, Any]]) -> ObjectiveSet:
    return ObjectiveSet(build_objective(s) for s in specs)
