"""The preprocessed-data cache: one folder of uint16 shards per (source, options) hash.

    <cache_dir>/<source>-<sha256(source options, packing options)[:16]>/
        meta.json  train_000.bin ...  val_000.bin ...

A second run with the same data options reuses the folder and skips preprocessing. A folder is
built under a temp name and renamed into place only when complete (meta.json written last), so a
crash mid-build never leaves a folder that looks usable.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

from stlm_selfplay.data.packing import pack_documents
from stlm_selfplay.data.sources import get_source
from stlm_selfplay.errors import UserError

CACHE_VERSION = 1  # bump when the shard format changes
PACKING_KEYS = ("split", "val_fraction", "max_documents", "max_bytes", "shard_tokens")


def cache_root(cfg) -> Path:
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    env = os.environ.get("STLM_DATA_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "stlm_selfplay" / "data"


def cache_inputs(cfg) -> dict:
    """Everything that determines the shards' content (and nothing else: not seq_len)."""
    source = get_source(cfg.source)

    def plain(value):
        return dict(value) if isinstance(value, dict) else list(value) if isinstance(value, (list, tuple)) else value

    inputs = {"version": CACHE_VERSION, "source": cfg.source}
    inputs.update({k: plain(getattr(cfg, k)) for k in source.keys + PACKING_KEYS})
    if source.fingerprint is not None:
        inputs["fingerprint"] = source.fingerprint(cfg)
    return inputs


def cache_folder(cfg) -> Path:
    digest = hashlib.sha256(json.dumps(cache_inputs(cfg), sort_keys=True).encode()).hexdigest()[:16]
    return cache_root(cfg) / f"{cfg.source}-{digest}"


def read_meta(folder: Path) -> dict:
    return json.loads((Path(folder) / "meta.json").read_text())


def prepare_data(cfg) -> Path:
    """The cache folder for `cfg` (a `DataConfig`), building it first if needed."""
    folder = cache_folder(cfg)
    if (folder / "meta.json").is_file():
        return folder
    source = get_source(cfg.source)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".tmp-{folder.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        meta = pack_documents(source.documents(cfg), tmp, cfg.split, cfg.val_fraction, cfg.shard_tokens,
                              cfg.max_documents, cfg.max_bytes)
        if meta["bytes"] == 0:
            raise UserError(f"data source '{cfg.source}' produced no text ({meta['documents']} documents); "
                            "check data.path / data.hf_name and data.text_field")
        meta["inputs"] = cache_inputs(cfg)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished the same folder first
            if not (folder / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
