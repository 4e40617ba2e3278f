"""Data source registry: a config name -> a function yielding documents (one string each).

A source is one file defining `@register_source("name", keys=(...)) def documents(cfg)`, plus one
import line in `data/__init__.py` (the plugin pattern of `stlm_selfplay.registry`). `keys` names the `DataConfig` fields the source reads:
they (and the packing options) key the preprocessed cache, so changing one rebuilds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from stlm_selfplay.registry import Registry

DocumentFn = Callable[..., Iterator[str]]


@dataclass(frozen=True)
class Source:
    name: str
    documents: DocumentFn  # documents(cfg: DataConfig) -> Iterator[str]
    keys: tuple[str, ...]  # DataConfig fields this source reads (part of the cache key)
    fingerprint: Callable[..., dict] | None = None  # extra cache-key facts, e.g. file sizes


SOURCES = Registry("data source")


def register_source(name: str, keys: tuple[str, ...], fingerprint: Callable[..., dict] | None = None):
    def wrap(fn: DocumentFn) -> DocumentFn:
        SOURCES.register(name, Source(name, fn, keys, fingerprint))
        return fn

    return wrap


def get_source(name: str) -> Source:
    return SOURCES.get(name)
