"""Shared helpers for the model tests: small configs, a short seeded training loop, and a
trained model cached for the whole session (trained once, read-only afterwards)."""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from conftest import TEST_TEXT, make_tiny_model, tiny_model_config

from stlm_selfplay.model import STLMConfig, STLMForCausalLM

# the tiny model at twice the width, two trunk layers, 4-byte patches, 256-byte context
SMALL = dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=128, d_local=32, max_seq_len=256, patch_size=4)


def small_config(**overrides) -> STLMConfig:
    """A fast CPU config (~0.1M parameters): 2 trunk layers of width 64, local width 32."""
    return tiny_model_config(**{**SMALL, **overrides})


def plain_gpt_config(**overrides) -> STLMConfig:
    """P=1, no local layers, d_local == d_model: a plain byte-level GPT."""
    return small_config(patch_size=1, n_local_encoder_layers=0, n_local_decoder_layers=0, d_local=64, **overrides)


def text_bytes(limit: int | None = None) -> bytes:
    """Real text for training: the first `limit` bytes (all when None) of the test text shipped in
    tests/data (never the sibling shared/ folder, which a user's clone does not have)."""
    return TEST_TEXT.read_bytes()[:limit]


def train_steps(model, data: bytes, steps: int, *, seq_len: int = 128, batch: int = 8, lr: float = 3e-3,
                seed: int = 0, whole_text: bool = False) -> list[float]:
    """Plain AdamW on `batch` random windows of `data` (own generator), or with `whole_text` on
    all of `data` cut into seq_len chunks every step; returns the loss of every step."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.tensor(list(data), dtype=torch.long)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(steps):
        if whole_text:
            x = ids[: len(ids) // seq_len * seq_len].view(-1, seq_len)
        else:
            starts = torch.randint(0, len(ids) - seq_len, (batch,), generator=gen)
            x = torch.stack([ids[s: s + seq_len] for s in starts.tolist()])
        loss = model(x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


@functools.lru_cache(maxsize=None)
def trained_model(patching: str = "fixed", steps: int = 50) -> STLMForCausalLM:
    """A seeded small model trained `steps` steps on real text (not random init, so near-ties
    don't flip greedy choices). Shared by several tests: do not modify it."""
    torch.manual_seed(0)  # the init is seeded; training uses its own generator
    extra = {"patching": "dynamic", "max_patch_size": 6} if patching == "dynamic" else {}
    model = STLMForCausalLM(small_config(**extra))
    train_steps(model, text_bytes(), steps)
    return model


def save_untrained_tiny(folder: Path) -> Path:
    """A seeded, untrained tiny STLM (width 32, one layer, P=2) saved as a Hugging Face folder;
    the caller's global RNG is left as it was."""
    make_tiny_model(seed=0).save_pretrained(str(folder))
    return folder


def assert_cached_sampler_matches(model, prompts: list[bytes], seed: int, new_bytes: int = 40) -> None:
    """The KV-cached sampler == the uncached full forward (same text, log-probs to 1e-5), and
    `score` of each full-length sample returns the sampler's log-probs (temperature 1)."""
    from stlm_selfplay.model import generate, score

    fast = generate(model, prompts, new_bytes, generator=torch.Generator().manual_seed(seed))
    slow = generate(model, prompts, new_bytes, generator=torch.Generator().manual_seed(seed), use_cache=False)
    for a, b in zip(fast, slow):
        assert a.text == b.text
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), rtol=1e-5, atol=1e-5)
    done = [(p, c) for p, c in zip(prompts, fast) if c.stop_reason == "length"]
    for (_, c), s in zip(done, score(model, [p for p, _ in done], [c.text for _, c in done])):
        torch.testing.assert_close(s, torch.tensor(c.logprobs), rtol=1e-5, atol=1e-5)
