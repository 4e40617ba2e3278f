"""Model speed: training bytes/s of P=4 vs P=1 (plain byte GPT) at the stlm-10m trunk, sampler
bytes/s with KV caches vs without, and early-exit self-speculative decoding vs full decoding.

    python benchmarks/bench_model.py            # full: stlm-10m trunk, 1024-byte rows, 256 new bytes
    python benchmarks/bench_model.py --quick    # smoke run (<= 10 s on CPU)

Goals (issue 2): P=4 >= 2.5x the training bytes/s of P=1; cached sampler >= 10x uncached.
Both ratios are measured in the same run, on the same machine. The cached sampler is timed on
8 ragged prompts (their patches close at different steps, as in self-play) and, for reference,
on 8 prompts of one length (every row closes its patch at the same step); the full run also
times 32 ragged prompts (a rollout-sized batch) with and without cache.

Self-speculation (issue 8): the `tiny` preset (4 trunk layers) is first trained with the
`early_exit` objective on tiny Shakespeare (`--data`), then greedy decoding of 256 bytes after
val-text prompts, one prompt at a time: full model vs the exit after layer 1 drafting 4 patches
per verification (`speculative_generate`), with the acceptance rate. The outputs are asserted equal.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_parser, report, time_it  # noqa: E402

from stlm_selfplay.model import STLMForCausalLM, generate, load_preset, speculative_generate  # noqa: E402
from stlm_selfplay.objectives import build_objectives  # noqa: E402
from stlm_selfplay.objectives.base import Batch  # noqa: E402

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


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


def train_early_exit(text: bytes, steps: int, seq_len: int = 256, batch: int = 16) -> STLMForCausalLM:
    """The tiny preset trained with LayerSkip's early-exit loss (every exit on) on random windows."""
    torch.manual_seed(0)
    model = STLMForCausalLM(load_preset("tiny", max_seq_len=512)).train()  # room for prompt + 256 new bytes
    objective = build_objectives([{"name": "early_exit", "curriculum": "none", "scale": "uniform"}])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    data = torch.tensor(list(text), dtype=torch.long)
    for step in range(steps):
        starts = torch.randint(0, len(data) - seq_len, (batch,), generator=gen)
        ids = torch.stack([data[s: s + seq_len] for s in starts.tolist()])
        b = Batch(ids, step=step, total_steps=steps)
        loss = objective(model(ids, **objective.model_kwargs(b)), b).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


def self_speculation_rows(text: bytes, steps: int, new_bytes: int, n_prompts: int) -> tuple[list[dict], float, float]:
    split = int(len(text) * 0.9)
    model = train_early_exit(text[:split], steps)
    val = text[split:]
    prompts = [val[i * 997: i * 997 + 64] for i in range(n_prompts)]
    exit_layer, draft_patches = 1, 4
    timings = {}

    def full():
        return [generate(model, [p], new_bytes, greedy=True)[0] for p in prompts]

    def spec():
        return [speculative_generate(model, [p], new_bytes, exit_layer=exit_layer, draft_patches=draft_patches)
                for p in prompts]

    for name, fn in (("full", full), ("spec", spec)):
        timings[name] = time_it(fn, repeats=1, warmup=1)
    full_out, spec_out = full(), spec()
    assert [c.text for c in full_out] == [s[0][0].text for s in spec_out], "self-speculation changed the output"
    drafted, accepted = sum(s[1].drafted for s in spec_out), sum(s[1].accepted for s in spec_out)
    total = sum(len(c.text) for c in full_out)
    acceptance = accepted / drafted if drafted else 0.0
    rows = [{"what": f"greedy {new_bytes} bytes x {n_prompts} prompts, batch 1, full (tiny, early-exit trained)",
             "bytes_per_s": total / timings["full"]},
            {"what": f"same, self-speculative: exit {exit_layer} drafts {draft_patches} patches",
             "bytes_per_s": total / timings["spec"], "acceptance_rate": acceptance}]
    return rows, timings["full"] / timings["spec"], acceptance


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHAKESPEARE), help="text file for the early-exit model")
    args = parser.parse_args()
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
    aligned = sample_bytes_per_s(model, [prompts[-1]] * n_prompts, new_bytes, True)
    rows += [{"what": f"sample {new_bytes} bytes x {n_prompts} ragged prompts, KV cache", "bytes_per_s": cached},
             {"what": f"sample {new_bytes} bytes x {n_prompts} ragged prompts, no cache", "bytes_per_s": uncached},
             {"what": f"sample {new_bytes} bytes x {n_prompts} equal-length prompts, KV cache", "bytes_per_s": aligned}]
    ratios = {"train_P4_over_P1": p4 / p1, "sampler_cached_over_uncached": cached / uncached}
    if not args.quick:  # a rollout-sized batch: the trunk's weight reads are shared by more rows
        big = [(b"The quick brown fox jumps over the lazy dog. " * 2)[: 20 + i] for i in range(32)]
        cached32, uncached32 = (sample_bytes_per_s(model, big, new_bytes, c) for c in (True, False))
        rows += [{"what": f"sample {new_bytes} bytes x 32 ragged prompts, KV cache", "bytes_per_s": cached32},
                 {"what": f"sample {new_bytes} bytes x 32 ragged prompts, no cache", "bytes_per_s": uncached32}]
        ratios["sampler_cached_over_uncached_batch32"] = cached32 / uncached32
    path = Path(args.data)
    text = path.read_bytes() if path.is_file() else (b"To be, or not to be, that is the question. " * 400)
    spec_rows, spec_speedup, acceptance = self_speculation_rows(
        text, *((5, 32, 1) if args.quick else (600, 256, 4)))
    rows += spec_rows
    ratios.update(self_speculative_over_full=spec_speedup, self_speculative_acceptance=acceptance)
    goals = {"train_P4_over_P1": (ratios["train_P4_over_P1"], 2.5),
             "sampler_cached_over_uncached": (ratios["sampler_cached_over_uncached"], 10.0)}
    report("bench_model", rows, ratios=ratios, goals=goals, args=args)


if __name__ == "__main__":
    main()
