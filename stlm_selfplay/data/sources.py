"""Data source registry: a config name -> a function yielding documents (one string each).

A source is one file defining `@register_source("name", keys=(...)) def documents(cfg)`, plus one
import line at the bottom of this file. `keys` names the `DataConfig` fields the source reads:
they (and the packing options) key the preprocessed cache, so changing one rebuilds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from stlm_selfplay.errors import unknown_name

DocumentFn = Callable[..., Iterator[str]]


@dataclass(frozen=True)
class Source:
    name: str
    documents: DocumentFn  # documents(cfg: DataConfig) -> Iterator[str]
    keys: tuple[str, ...]  # DataConfig fields this source reads (part of the cache key)
    fingerprint: Callable[..., dict] | None = None  # extra cache-key facts, e.g. file sizes


SOURCES: dict[str, Source] = {}


def register_source(name: str, keys: tuple[str, ...], fingerprint: Callable[..., dict] | None = None):
    def wrap(fn: DocumentFn) -> DocumentFn:
        SOURCES[name] = Source(name, fn, keys, fingerprint)
        return fn

    return wrap


def get_source(name: str) -> Source:
    if name not in SOURCES:
        raise unknown_name("data source", name, SOURCES)
    return SOURCES[name]


from stlm_selfplay.data import text_files, hf_hub, games  # noqa: E402,F401  (register text, hf, games)
