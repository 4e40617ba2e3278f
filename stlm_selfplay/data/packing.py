"""Packing: documents -> one stream of uint16 ids -> fixed-length sequences.

    stream = utf8(doc_0) EOS utf8(doc_1) EOS ...            (ids 0-255 are bytes, EOS = 258)
    sequence k = stream[k * (T - 1) : k * (T - 1) + T]       (consecutive sequences share one id)

so every id after the first is a prediction target exactly once, and a stream of n ids gives
(n - 1) // (T - 1) full sequences. Streams are written as flat uint16 shard files (memmapped by
the loader); the train/val split happens here:

- `tail`: the last `val_fraction` of the stream's ids form val (nanoGPT's shakespeare split);
- `hash`: a document goes to val when sha1(bytes) / 2^160 < val_fraction (stable across runs).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

import numpy as np

from stlm_selfplay.model.tokenizer import EOS_ID

DTYPE = np.uint16


def document_ids(doc: str | bytes) -> np.ndarray:
    """UTF-8 bytes of a document followed by EOS, as uint16 ids."""
    raw = doc if isinstance(doc, bytes) else doc.encode("utf-8")
    ids = np.empty(len(raw) + 1, dtype=DTYPE)
    ids[:-1] = np.frombuffer(raw, dtype=np.uint8)
    ids[-1] = EOS_ID
    return ids


def in_val_by_hash(doc: str | bytes, val_fraction: float) -> bool:
    raw = doc if isinstance(doc, bytes) else doc.encode("utf-8")
    return int.from_bytes(hashlib.sha1(raw).digest(), "big") < val_fraction * 2**160


def sequence_count(num_ids: int, seq_len: int) -> int:
    """Full sequences of `seq_len` ids with stride `seq_len - 1` in a stream of `num_ids` ids."""
    return max(0, (num_ids - 1) // (seq_len - 1))


class ShardWriter:
    """Appends ids to `<prefix>_000.bin`, `<prefix>_001.bin`, ... of at most `shard_tokens` ids."""

    def __init__(self, folder: Path, prefix: str, shard_tokens: int, buffer_tokens: int = 1 << 22):
        self.folder, self.prefix, self.shard_tokens, self.buffer_tokens = Path(folder), prefix, shard_tokens, buffer_tokens
        self.shards: list[dict] = []  # [{"file": name, "tokens": n}]
        self._pending: list[np.ndarray] = []
        self._pending_len = 0

    def append(self, ids: np.ndarray) -> None:
        self._pending.append(ids)
        self._pending_len += len(ids)
        if self._pending_len >= self.buffer_tokens:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        data = np.concatenate(self._pending)
        self._pending, self._pending_len = [], 0
        while len(data):
            if not self.shards or self.shards[-1]["tokens"] >= self.shard_tokens:
                self.shards.append({"file": f"{self.prefix}_{len(self.shards):03d}.bin", "tokens": 0})
            shard = self.shards[-1]
            room = self.shard_tokens - shard["tokens"]
            with open(self.folder / shard["file"], "ab") as f:
                f.write(data[:room].tobytes())
            shard["tokens"] += min(room, len(data))
            data = data[room:]

    @property
    def tokens(self) -> int:
        return sum(s["tokens"] for s in self.shards) + self._pending_len


def move_tail(train: ShardWriter, val: ShardWriter, num_ids: int) -> None:
    """Move the last `num_ids` ids of the (flushed) train shards to the val writer, in order."""
    tail: list[np.ndarray] = []
    while num_ids > 0 and train.shards:
        shard = train.shards[-1]
        path = train.folder / shard["file"]
        take = min(num_ids, shard["tokens"])
        ids = np.fromfile(path, dtype=DTYPE)
        tail.insert(0, ids[len(ids) - take:].copy())
        keep = len(ids) - take
        if keep:
            ids[:keep].tofile(path)
            shard["tokens"] = keep
        else:
            path.unlink()
            train.shards.pop()
        num_ids -= take
    for ids in tail:
        val.append(ids)


def pack_documents(documents: Iterable[str | bytes], folder: Path, split: str, val_fraction: float,
                   shard_tokens: int, max_documents: int = 0, max_bytes: int = 0) -> dict:
    """Write train/val shards for `documents` into `folder`; returns the split metadata."""
    train = ShardWriter(folder, "train", shard_tokens)
    val = ShardWriter(folder, "val", shard_tokens)
    num_docs = num_bytes = 0
    for doc in documents:
        ids = document_ids(doc)
        if max_bytes and num_bytes + len(ids) - 1 > max_bytes:
            ids = np.append(ids[: max_bytes - num_bytes], ids[-1]).astype(DTYPE)
        if split == "hash" and in_val_by_hash(doc, val_fraction):
            val.append(ids)
        else:
            train.append(ids)
        num_docs += 1
        num_bytes += len(ids) - 1
        if (max_documents and num_docs >= max_documents) or (max_bytes and num_bytes >= max_bytes):
            break
    train.flush()
    if split == "tail":
        move_tail(train, val, int(round(train.tokens * val_fraction)))
    val.flush()
    return {"documents": num_docs, "bytes": num_bytes,
            "splits": {"train": train.shards, "val": val.shards}}
