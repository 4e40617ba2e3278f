"""Config options declared with their help and choices, TRL-style (`GRPOConfig`'s field metadata).

    @dataclass
    class ScheduleConfig:
        kind: str = option("cosine", "learning-rate shape after warmup: ...", choices=LR_SCHEDULES)
        steps: int = option(1000, "optimizer steps in the run")
        stages: List[StageConfig] = option(help="the curriculum", factory=lambda: [default_stage()])

`option` is `dataclasses.field(default=..., metadata={"help": ..., "choices": ...})`. That one
declaration is read by:

    validation     `check_choices(cfg, prefix)`: a value outside an option's `choices` is a
                   one-line `UserError` naming the key and the allowed values (`choice_error`)
    --print-config `commented_yaml(cfg)`: the resolved config as YAML, each option's help as a
                   comment above it
    docs / tests   `option_help(field)`, `schema_options(cls)`: every option of a schema, nested

`choices` is any iterable of names (a tuple, or a `Registry`, read when checked so plugins
count); `""` among them means "empty is allowed" (shown as "or empty").
"""

from __future__ import annotations

import copy
import dataclasses
import textwrap
import typing
from typing import Any, Callable, Iterable, Iterator

from stlm_selfplay.errors import UserError, closest, shorten

_NO_DEFAULT = dataclasses.MISSING


def option(default: Any = _NO_DEFAULT, help: str = "", choices: Iterable[str] | None = None, *,
           factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field with its `help` (required) and optional `choices` as metadata. A list or
    dict default is copied per instance; `factory` builds other mutable defaults (a dataclass)."""
    if not help:
        raise ValueError("every config option needs a help text")
    metadata = {"help": help} if choices is None else {"help": help, "choices": choices}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def option_help(f: dataclasses.Field) -> str:
    """The declared help of a field ("" when it has none)."""
    return f.metadata.get("help", "")


def option_choices(f: dataclasses.Field) -> tuple[str, ...] | None:
    """The declared choices of a field (None when any value goes)."""
    choices = f.metadata.get("choices")
    return None if choices is None else tuple(choices)


def choice_error(label: str, value: Any, choices: Iterable[str]) -> UserError:
    """`<label> must be one of a, b[ or empty], got 'v' (did you mean 'a'?)`."""
    choices = tuple(choices)
    names = [str(c) for c in choices if c != ""]
    listed = ", ".join(names) + (" or empty" if "" in choices else "")
    return UserError(f"{label} must be one of {listed}, got '{shorten(value)}'{closest(value, names)}")


def check_choices(cfg: Any, prefix: str = "", skip: Iterable[str] = (), label: str = "config key '{}'") -> None:
    """`choice_error` for the first option of `cfg` (a dataclass instance; nested dataclasses and
    lists of them walked too, except the fields named in `skip`) whose value is not one of its
    choices. The message names the dotted key (`prefix` + name) where `label` has `{}`."""
    for f in dataclasses.fields(cfg):
        if f.name in skip:
            continue
        value, key = getattr(cfg, f.name), f"{prefix}{f.name}"
        choices = option_choices(f)
        if choices is not None and value not in choices:
            raise choice_error(label.replace("{}", key, 1), value, choices)
        if dataclasses.is_dataclass(value):
            check_choices(value, key + ".", label=label)
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                if dataclasses.is_dataclass(item):
                    check_choices(item, f"{key}[{i}].", label=label)


def _dataclass_of(annotation: Any) -> type | None:
    """The dataclass an annotation names, directly or as the item of a list (else None)."""
    if dataclasses.is_dataclass(annotation):
        return annotation
    if typing.get_origin(annotation) in (list, tuple):
        args = [a for a in typing.get_args(annotation) if dataclasses.is_dataclass(a)]
        return args[0] if args else None
    return None


def schema_options(cls: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field]]:
    """(dotted key, field) of every option of a schema class, nested sections included (the items
    of a list of sections as `key[]`)."""
    try:
        hints = typing.get_type_hints(cls)
    except NameError:  # an annotation naming what only type checkers import (transformers' config fields)
        hints = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        yield key, f
        inner = _dataclass_of(hints.get(f.name))
        if inner is not None:
            item = "[]" if typing.get_origin(hints.get(f.name)) in (list, tuple) else ""
            yield from schema_options(inner, f"{key}{item}.")


def commented_yaml(cfg: Any, width: int = 100) -> str:
    """`cfg` (a dataclass instance) as YAML with each option's help as comment lines above it;
    it loads back to the same values as `OmegaConf.to_yaml` of the config."""
    from omegaconf import OmegaConf

    def lines(obj: Any, indent: int) -> Iterator[str]:
        pad = " " * indent
        plain = OmegaConf.to_container(OmegaConf.structured(obj))
        for f in dataclasses.fields(obj):
            text = option_help(f)
            if text:
                for line in textwrap.wrap(text, max(width - indent - 2, 40), break_on_hyphens=False):
                    yield f"{pad}# {line}\n"
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value) and dataclasses.fields(value):
                yield f"{pad}{f.name}:\n"
                yield from lines(value, indent + 2)
            else:
                chunk = OmegaConf.to_yaml(OmegaConf.create({f.name: plain[f.name]}))
                yield "".join(pad + line for line in chunk.splitlines(keepends=True))

    return "".join(lines(cfg, 0))
