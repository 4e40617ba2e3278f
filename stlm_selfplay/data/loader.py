"""Reading packed shards: fixed val set, and a deterministic, prefetched train batch stream.

Train order: micro-batch m (counted over the whole run, m = step * grad_accum + micro) takes the
global batch of G = batch_size * world_size sequences

    perm_e = default_rng([seed, e]).permutation(num_sequences),   e = m // batches_per_epoch
    global batch m = perm_e[j * G : (j + 1) * G],                  j = m % batches_per_epoch

and rank r takes its slice [r * batch_size, (r + 1) * batch_size). The batch is a pure function of
(seed, m), so resuming at micro-batch m needs only m, and one process with batch 2b sees exactly
the sequences two ranks with batch b see. The last partial global batch of an epoch is dropped.

Sequence i of a shard covers ids [i (L - 1) + shift_e, i (L - 1) + shift_e + L). shift_e = 0 unless
`shift_epochs`: then shift_0 = 0 and shift_e = default_rng([seed, e, 1]).integers(L - 1) for e >= 1,
so a repeated epoch reads new windows of the same text (and, with fixed patching, new patch
boundaries: the trunk sees new patches), and each shard holds back its last L - 2 ids to fit them.
"""

from __future__ import annotations

import functools
import queue
import threading
from pathlib import Path

import numpy as np
import torch

from stlm_selfplay.data.cache import read_meta
from stlm_selfplay.data.packing import DTYPE, sequence_count
from stlm_selfplay.errors import UserError


class PackedSequences:
    """Sequences of `seq_len` ids (stride seq_len - 1) over the memmapped shards of one split;
    `shift_epochs`: every epoch after the first reads them shifted (module docstring)."""

    def __init__(self, folder: Path, split: str, seq_len: int, shift_epochs: bool = False):
        self.seq_len, self.shift_epochs = seq_len, shift_epochs
        shards = read_meta(folder)["splits"][split]
        self.shards = [np.memmap(Path(folder) / s["file"], dtype=DTYPE, mode="r", shape=(s["tokens"],))
                       for s in shards if s["tokens"] > 0]
        held_back = seq_len - 2 if shift_epochs else 0  # room for the largest shift
        counts = [sequence_count(len(s) - held_back, seq_len) for s in self.shards]
        self.starts = np.cumsum([0] + counts)  # first global sequence index of each shard
        self.num_tokens = sum(len(s) for s in self.shards)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def epoch_shift(self, seed: int, epoch: int) -> int:
        """shift_e of the module docstring: 0 for epoch 0 or without `shift_epochs`."""
        if not self.shift_epochs or epoch == 0:
            return 0
        return int(np.random.default_rng([seed, epoch, 1]).integers(self.seq_len - 1))

    def get(self, indices: np.ndarray, shift: int = 0) -> np.ndarray:
        """[len(indices), seq_len] uint16; sequence i starts `shift` ids after its place i (seq_len - 1)."""
        out = np.empty((len(indices), self.seq_len), dtype=DTYPE)
        shard_of = np.searchsorted(self.starts, indices, side="right") - 1
        stride = self.seq_len - 1
        for row, (idx, s) in enumerate(zip(indices, shard_of)):
            offset = (int(idx) - int(self.starts[s])) * stride + shift
            out[row] = self.shards[s][offset:offset + self.seq_len]
        return out


def val_sequences(folder: Path, seq_len: int, max_sequences: int = 0, split: str = "val") -> np.ndarray:
    """The fixed val set: [N, seq_len] uint16 covering the val stream, the last row PAD-filled.

    Rows overlap by one id, so every val id after the first is a target exactly once (when
    `max_sequences` does not cut the set short). `split="train"` cuts the train stream the same
    way (a memorisation check: the NLL of text the model trained on).
    """
    from stlm_selfplay.model.tokenizer import PAD_ID

    meta = read_meta(folder)["splits"][split]
    ids = np.concatenate([np.fromfile(Path(folder) / s["file"], dtype=DTYPE) for s in meta]) if meta else np.empty(0, DTYPE)
    stride = seq_len - 1
    starts = list(range(0, max(len(ids) - 1, 0), stride))
    if max_sequences:
        starts = starts[:max_sequences]
    out = np.full((len(starts), seq_len), PAD_ID, dtype=DTYPE)
    for row, start in enumerate(starts):
        chunk = ids[start:start + seq_len]
        out[row, :len(chunk)] = chunk
    return out


@functools.lru_cache(maxsize=2)
def epoch_permutation(num_sequences: int, seed: int, epoch: int) -> np.ndarray:
    """The order of all train sequences in one epoch (cached: computed once per epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(num_sequences)


def batch_indices(micro_step: int, num_sequences: int, global_batch: int, seed: int) -> np.ndarray:
    """The global batch of sequence indices for micro-batch `micro_step` (see module docstring)."""
    epoch = epoch_of(micro_step, num_sequences, global_batch)
    j = micro_step - epoch * (num_sequences // global_batch)
    return epoch_permutation(num_sequences, seed, epoch)[j * global_batch:(j + 1) * global_batch]


def epoch_of(micro_step: int, num_sequences: int, global_batch: int) -> int:
    """e = m // batches_per_epoch (module docstring)."""
    return micro_step // (num_sequences // global_batch)


def check_one_batch_fits(data: PackedSequences, global_batch: int) -> None:
    """A UserError unless the train split holds at least one global batch (called by the trainer
    before it writes the run folder, and by `BatchStream`)."""
    if len(data) < global_batch:
        raise UserError(f"the train split has {len(data)} sequences of {data.seq_len} ids, fewer than one global "
                        f"batch ({global_batch}); use more data or lower data.batch_size / data.seq_len")


class BatchStream:
    """Iterator of this rank's micro-batches (LongTensor [batch_size, seq_len]) from `start`.

    With `prefetch > 0` a background thread prepares that many batches ahead (pinned when
    `pin_memory`). `micro_step` is the index of the next batch `next()` returns.
    """

    def __init__(self, data: PackedSequences, batch_size: int, seed: int, start: int = 0,
                 rank: int = 0, world_size: int = 1, prefetch: int = 4, pin_memory: bool = False):
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.rank, self.world_size, self.pin_memory = rank, world_size, pin_memory
        self.global_batch = batch_size * world_size
        check_one_batch_fits(data, self.global_batch)
        self.micro_step = start
        self._queue: queue.Queue | None = None
        self._stop = threading.Event()
        if prefetch > 0:
            self._queue = queue.Queue(maxsize=prefetch)
            self._thread = threading.Thread(target=self._fill, args=(start,), daemon=True)
            self._thread.start()

    def load(self, micro_step: int) -> torch.Tensor:
        """This rank's batch for `micro_step` (no state change)."""
        indices = batch_indices(micro_step, len(self.data), self.global_batch, self.seed)
        shift = self.data.epoch_shift(self.seed, epoch_of(micro_step, len(self.data), self.global_batch))
        ids = self.data.get(indices[self.rank * self.batch_size:(self.rank + 1) * self.batch_size], shift)
        batch = torch.from_numpy(ids.astype(np.int64))
        return batch.pin_memory() if self.pin_memory else batch

    def _fill(self, start: int) -> None:
        m = start
        while not self._stop.is_set():
            item = self.load(m)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            m += 1

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        batch = self._queue.get() if self._queue is not None else self.load(self.micro_step)
        self.micro_step += 1
        return batch

    def close(self) -> None:
        """Stop the prefetch thread and wait for it: a daemon thread still inside a torch op when
        the interpreter exits can abort the process ("terminate called without an active exception")."""
        self._stop.set()
        if self._queue is not None and self._thread.is_alive():
            self._thread.join(timeout=10)
