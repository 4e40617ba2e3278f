"""`hf` source: any Hugging Face dataset with a text column (TinyStories, FineWeb-Edu, ...).

    datasets.load_dataset(data.hf_name, data.hf_config or None, split=data.hf_split,
                          streaming=data.streaming)

Cap streaming corpora with `data.max_bytes` or `data.max_documents`.
"""

from __future__ import annotations

from typing import Iterator

from stlm_selfplay.data.sources import register_source
from stlm_selfplay.errors import UserError


@register_source("hf", keys=("hf_name", "hf_config", "hf_split", "text_field"))
def hf_documents(cfg) -> Iterator[str]:
    import datasets

    if not cfg.hf_name:
        raise UserError("data.hf_name is empty; set it to a hub dataset, e.g. data.hf_name=roneneldan/TinyStories")
    try:
        rows = datasets.load_dataset(cfg.hf_name, cfg.hf_config or None, split=cfg.hf_split, streaming=cfg.streaming)
    except Exception as err:  # network, unknown name, bad split: one line
        raise UserError(f"cannot load dataset '{cfg.hf_name}': {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    for row in rows:
        if cfg.text_field not in row:
            raise UserError(f"dataset '{cfg.hf_name}' has no field '{cfg.text_field}' (fields: {', '.join(row)}); set data.text_field")
        yield row[cfg.text_field]
