"""Bits-per-byte of any text, with sliding windows.

The text is one document, packed as pretraining packs it (`document_ids`: its UTF-8 bytes, then
EOS), giving ids x_0 .. x_{n-1}. Windows of W ids (default: the model's `max_seq_len`) start every S
ids (the stride, 1 <= S <= W - 1); each id is predicted once, in the first window that holds it
as a target, so later windows score only their last S ids and read the W - S ids before as context:

    window k   = x[kS : kS + W]                  (the last one PAD-filled)
    scored in k: positions p with  e_{k-1} <= p < min(kS + W, n),   e_{-1} = 1,  e_k = kS + W
    windows    : k = 0, 1, ... while e_{k-1} < n
    bpb        = bits_per_byte(sum of -log p(x_p | window) over scored byte targets, #byte targets)

With S = W - 1 (the default) and W = the run's `data.seq_len` the windows are exactly the trainer's
packed val sequences (`val_sequences`: stride W - 1, every id after the first a target once), so
the number equals its val bpb; a smaller S
gives every prediction at least W - S - 1 bytes of context. `token_nll`, `byte_target_mask` and
`bits_per_byte` come from `objectives/ce.py`, the one definition of bits-per-byte.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from stlm_selfplay.data.packing import document_ids
from stlm_selfplay.errors import UserError
from stlm_selfplay.model.tokenizer import PAD_ID
from stlm_selfplay.objectives.base import Batch
from stlm_selfplay.objectives.ce import bits_per_byte, byte_target_mask, token_nll


def window_starts(num_ids: int, window: int, stride: int) -> list[int]:
    """Starts kS of the windows: k = 0, then k >= 1 while the previous window ended before n."""
    starts = [0]
    while (len(starts) - 1) * stride + window < num_ids:
        starts.append(len(starts) * stride)
    return starts


def window_batch(ids: np.ndarray, starts: list[int], window: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids [B, W] PAD-filled, loss_mask [B, W]: 1 where the position is scored in that window)."""
    inputs = np.full((len(starts), window), PAD_ID, dtype=np.int64)
    loss_mask = np.zeros((len(starts), window), dtype=np.float32)
    for row, start in enumerate(starts):
        chunk = ids[start:start + window]
        inputs[row, :len(chunk)] = chunk
        first = 1 if start == 0 else start - stride + window  # e_{k-1}, absolute
        loss_mask[row, first - start:len(chunk)] = 1.0
    return torch.from_numpy(inputs), torch.from_numpy(loss_mask)


@torch.no_grad()
def sliding_bpb(model: nn.Module, ids: np.ndarray, window: int, stride: int | None = None,
                batch_size: int = 16) -> dict:
    """{bpb, byte_targets, nll_sum, windows, window, stride} of `model` on the id stream `ids`."""
    stride = window - 1 if stride is None else int(stride)
    if window < 2:
        raise UserError(f"a bpb window needs at least 2 ids (got {window}); use a model with max_seq_len >= 2")
    if not 1 <= stride <= window - 1:
        raise UserError(f"--stride {stride} is out of range; use 1 .. {window - 1} "
                        f"(the window of {window} ids minus one, which is also the default)")
    if len(ids) < 2:
        raise UserError("the text is empty: there is no byte to predict; pass a non-empty --text file")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    starts = window_starts(len(ids), window, stride)
    nll_sum = torch.zeros((), dtype=torch.float64)
    count = torch.zeros((), dtype=torch.float64)
    for i in range(0, len(starts), batch_size):
        inputs, loss_mask = window_batch(ids, starts[i:i + batch_size], window, stride)
        inputs, loss_mask = inputs.to(device), loss_mask.to(device)
        attention_mask = (inputs != PAD_ID).long()
        logits = model(inputs, attention_mask=attention_mask).logits
        mask = Batch(inputs, attention_mask=attention_mask, loss_mask=loss_mask).target_mask()
        byte_mask = byte_target_mask(inputs, mask).double()
        nll_sum += (token_nll(logits, inputs).double() * byte_mask).sum().cpu()
        count += byte_mask.sum().cpu()
    model.train(was_training)
    return {"bpb": bits_per_byte(float(nll_sum), float(count)), "byte_targets": int(count),
            "nll_sum": float(nll_sum), "windows": len(starts), "window": window, "stride": stride}


def check_text_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--text '{path}' does not exist; pass a text file to measure bits-per-byte on")
    return path


def text_file_bpb(model: nn.Module, path: str | Path, stride: int | None = None, batch_size: int = 16,
                  window: int | None = None) -> dict:
    """Bits-per-byte of a text file read as one document (its bytes, then EOS)."""
    path = check_text_file(path)
    max_len = int(model.config.max_seq_len)
    if window is not None and not 2 <= window <= max_len:
        raise UserError(f"--window {window} is out of range; use 2 .. {max_len} (the model's max_seq_len)")
    ids = document_ids(path.read_bytes()).astype(np.int64)
    result = sliding_bpb(model, ids, window or max_len, stride, batch_size)
    return {"text": str(path), **result}
