"""Model speed: training bytes/s of P=4 vs P=1 (plain byte GPT) at the stlm-10m trunk, and
sampler bytes/s with KV caches vs without.

    python benchmarks/bench_model.py            # full: stlm-10m trunk, 1024-byte rows, 256 new bytes
    python benchmarks/bench_model.py --quick    # smoke run (<= 10 s on CPU)

Goals (issue 2): P=4 >= 2.5x the training bytes/s of P=1; cached sampler >= 10x uncached.
Both ratios are measured in the same run, on the same machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_parser, report, time_it  # noqa: E402

from stlm_selfplay.model import STLMForCausalLM, generate, load_preset  # noqa: E402


def plain_gpt(config):
    """The same trunk as a plain byte GPT: P=1, no local layers, d_local = d_model."""
    return load_preset("stlm-10m", patch_size=1, n_local_encoder_layers=0, n_local_decoder_layers=0,
                       d_local=config.d_model, local_heads=config.n_heads, max_seq_len=config.max_seq_len)


def train_bytes_per_s(config, batch: int, seq_len: int, repeats: int) -> float:
    """Bytes per second of forward + backward + AdamW step on random bytes."""
    torch.manual_seed(0)
    model = STLMForCausalLM(config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (batch, seq_len), generator=gen)

    def step():
        loss = model(x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return batch * seq_len / time_it(step, repeats=repeats, warmup=1)


def sample_bytes_per_s(model, prompts, new_bytes: int, use_cache: bool) -> float:
    gen = torch.Generator().manual_seed(0)
    run = lambda: generate(model, prompts, new_bytes, greedy=True, generator=gen, use_cache=use_cache)  # noqa: E731
    done = run()
    total = sum(len(c.text) for c in done)
    return total / time_it(run, repeats=1, warmup=0)


def main() -> None:
    args = base_parser(__doc__.splitlines()[0]).parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    seq_len, batch, repeats = (256, 1, 1) if args.quick else (1024, 4, 3)
    pooled = load_preset("stlm-10m", max_seq_len=max(seq_len, 512))
    baseline = plain_gpt(pooled)
    rows = []
    p4 = train_bytes_per_s(pooled, batch, seq_len, repeats)
    p1 = train_bytes_per_s(baseline, batch, seq_len, repeats)
    rows += [{"what": "train P=4 (stlm-10m)", "bytes_per_s": p4, "batch": batch, "seq_len": seq_len},
             {"what": "train P=1 plain GPT (same trunk)", "bytes_per_s": p1, "batch": batch, "seq_len": seq_len}]
    new_bytes, n_prompts = (48, 4) if args.quick else (256, 8)
    torch.manual_seed(0)
    model = STLMForCausalLM(pooled).eval()
    prompts = [(b"The quick brown fox jumps over the lazy dog. " * 2)[: 20 + 3 * i] for i in range(n_prompts)]
    cached = sample_bytes_per_s(model, prompts, new_bytes, True)
    uncached = sample_bytes_per_s(model, prompts, new_bytes, False)
    rows += [{"what": f"sample {new_bytes} bytes x {n_prompts}, KV cache", "bytes_per_s": cached},
             {"what": f"sample {new_bytes} bytes x {n_prompts}, no cache", "bytes_per_s": uncached}]
    ratios = {"train_P4_over_P1": p4 / p1, "sampler_cached_over_uncached": cached / uncached}
    goals = {"train_P4_over_P1": (ratios["train_P4_over_P1"], 2.5),
             "sampler_cached_over_uncached": (ratios["sampler_cached_over_uncached"], 10.0)}
    report("bench_model", rows, ratios=ratios, goals=goals, args=args)


if __name__ == "__main__":
    main()
