"""The BPE baseline: the STLM trunk over BPE tokens, scored in bits per byte of the same text.

It exists to measure what byte pooling saves (DESIGN.md); it is no part of the byte model.

    logits_t = E norm(Trunk(E[tok_0..tok_t]))        (tied token embedding E [V, d_model])
    nats/byte = sum_t -log p(tok_t | tok_<t) / (UTF-8 bytes of the scored text)

The tokenizer is byte-level BPE in GPT-2's style (the `tokenizers` library: GPT-2's
pre-tokenizer regex and byte alphabet, `<|endoftext|>` between documents). GPT-2's own merges
(tiktoken's `gpt2`) need a download from openaipublic.blob.core.windows.net; where that is
unreachable `train_bpe` learns merges of the chosen vocabulary size from the training split.

Scoring (`bpe_nll`): the token stream starts with `<|endoftext|>`, so every token of the text is a
target exactly once (windows of `seq_len` tokens overlapping by one); separator tokens between
documents are not counted, as the byte model's EOS targets are not (`bench_lm`).
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from stlm_selfplay.model.config import STLMConfig

EOT = "<|endoftext|>"


def train_bpe(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE `tokenizers.Tokenizer` with `vocab_size` ids (EOT included) learned on `texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def token_stream(tokenizer, documents: list[str]) -> list[int]:
    """[EOT] + doc_0 + [EOT] + doc_1 + ...: the documents' tokens, each preceded by EOT."""
    eot = tokenizer.token_to_id(EOT)
    out = []
    for enc in tokenizer.encode_batch(documents, add_special_tokens=False):
        out.append(eot)
        out.extend(enc.ids)
    return out


class BPEBaselineLM(nn.Module):
    """Token embedding (tied head) around the same `Trunk` the STLM uses (`config`: its trunk
    fields; max_seq_len = the context in tokens)."""

    def __init__(self, config: STLMConfig, vocab_size: int):
        super().__init__()
        from stlm_selfplay.model.modeling import Trunk

        self.config, self.vocab_size = config, vocab_size
        self.embed = nn.Embedding(vocab_size, config.d_model)
        self.trunk = Trunk(config)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=config.initializer_range)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, T] -> logits [B, T, V]; entry t is the distribution of ids[:, t + 1]."""
        x = self.embed(ids) * self.config.d_model ** 0.5
        state, _ = self.trunk(x, torch.arange(ids.shape[1], device=ids.device)[None])
        return F.linear(self.trunk.norm(state), self.embed.weight)

    def loss(self, ids: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy over ids[:, 1:]."""
        logits = self(ids)
        return F.cross_entropy(logits[:, :-1].float().reshape(-1, self.vocab_size), ids[:, 1:].reshape(-1))


@torch.no_grad()
def bpe_nll(model: BPEBaselineLM, stream: list[int], seq_len: int, skip_id: int | None = None,
            batch_size: int = 32) -> float:
    """Summed NLL (nats) of stream[1:], each token scored once in windows of `seq_len` tokens
    that overlap by one (the first token of a window is context only); targets equal to
    `skip_id` (the separator) are left out."""
    was_training = model.training
    model.eval()
    starts = list(range(0, max(len(stream) - 1, 0), seq_len - 1))
    total = 0.0
    for b in range(0, len(starts), batch_size):
        rows = [stream[s: s + seq_len] for s in starts[b: b + batch_size]]
        width = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        keep = torch.zeros(len(rows), width - 1, dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            keep[i, : len(r) - 1] = True
        targets = ids[:, 1:]
        if skip_id is not None:
            keep &= targets != skip_id
        nll = F.cross_entropy(model(ids)[:, :-1].float().transpose(1, 2), targets, reduction="none")
        total += float(nll[keep].double().sum())
    model.train(was_training)
    return total
