"""Language modelling at equal wall clock: nanoGPT's CPU recipe vs our plain byte GPT vs a pooled STLM.

In one process, in turn, for each seed: (a) nanoGPT's shakespeare_char CPU recipe (4 layers,
4 heads, 128 wide, context 64, batch 12, 2,000 iterations, lr 1e-3 cosine to 1e-4, warmup 100,
dropout 0) reproduced with our P=1 model, stopped early if it exceeds the budget; (b) our best
plain byte GPT (P=1) for the budget; (c) our best pooled STLM for the budget. (b) and (c) train
until `--seconds` of wall clock have passed, with the cosine schedule laid over the budget's
fraction elapsed (virtual step = elapsed / seconds * 10,000). Every variant is then scored on
the same full val set (the last 10% of the file, `split: tail`; every val byte after the first
is a target exactly once, each model reading it in windows of its own context).

    python benchmarks/bench_lm.py [--quick] [--data FILE] [--seconds S] [--seeds N] [--threads T]
                                  [--variants a,b,c] [--set KEY=VALUE ...]

`--set b.lr=2e-3 c.patch_size=2 ...` overrides a variant's settings (for the tuning runs).
Reported: nats/byte and bits/byte on val, parameters, training bytes/s, steps, mean +- std over
seeds. Goal: (c) <= 1.70 nats/byte at S = 136 (0.90x nanoGPT's 1.8857) and below (b) by more
than the seed spread.
"""

from __future__ import annotations

import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_parser, report  # noqa: E402

from stlm_selfplay.config import DataConfig, OptimizerConfig, ScheduleConfig  # noqa: E402
from stlm_selfplay.data.cache import prepare_data  # noqa: E402
from stlm_selfplay.data.loader import BatchStream, PackedSequences, val_sequences  # noqa: E402
from stlm_selfplay.model import STLMConfig, STLMForCausalLM  # noqa: E402
from stlm_selfplay.objectives import Batch, build_objectives  # noqa: E402
from stlm_selfplay.train.evaluate import nll_sums  # noqa: E402
from stlm_selfplay.train.optim import build_optimizer, lr_factor, set_lr  # noqa: E402

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
NANOGPT_VAL = 1.8857  # nanoGPT's published CPU-recipe val loss (nats/char = nats/byte: ASCII text)
VIRTUAL_STEPS = 10_000  # schedule resolution of the time-budgeted variants

PLAIN = dict(patch_size=1, n_local_encoder_layers=0, n_local_decoder_layers=0)
# Each variant: model fields, then training settings (seq_len = context, steps = 0 -> train for the budget).
# (b) and (c) were picked by short one-seed runs (benchmarks/RESULTS.md, bench_lm): lr 2e-3 over
# 3e-3 and 128 over 192 wide for (b); for (c) a 128-wide trunk with 96-wide local modules, a
# 2-layer local decoder and 8 x 128-byte sequences beat 64/128-wide local modules, one decoder
# layer, 256- or 64-byte contexts, 192/256-wide trunks and P=2 in 45-second runs.
VARIANTS = {
    "a": {"label": "(a) nanoGPT CPU recipe, our P=1", "model": dict(PLAIN, d_model=128, d_local=128, n_layers=4, n_heads=4,
          n_kv_heads=4, d_ff=344, local_heads=4), "seq_len": 64, "batch": 12, "lr": 1e-3, "steps": 2000, "warmup": 100},
    "b": {"label": "(b) plain byte GPT (P=1)", "model": dict(PLAIN, d_model=128, d_local=128, n_layers=4, n_heads=4,
          n_kv_heads=4, d_ff=344, local_heads=4), "seq_len": 64, "batch": 12, "lr": 2e-3, "steps": 0, "warmup": 100},
    "c": {"label": "(c) pooled STLM (P=4)", "model": dict(patch_size=4, d_model=128, n_layers=4, n_heads=4, n_kv_heads=4,
          d_ff=344, d_local=96, local_heads=2, n_local_encoder_layers=1, n_local_decoder_layers=2),
          "seq_len": 128, "batch": 8, "lr": 3e-3, "steps": 0, "warmup": 100},
}
QUICK_MODEL = dict(d_model=32, d_local=32, n_layers=1, n_heads=2, n_kv_heads=2, d_ff=64, local_heads=2)


def apply_sets(variants: dict, sets: list[str]) -> None:
    """`x.key=value`: a training setting of variant x (lr, batch, seq_len, ...) or else a model field.
    Values are parsed like config overrides (OmegaConf dotlist: 3 -> int, 3e-3 -> float, true -> bool)."""
    for key, value in OmegaConf.to_container(OmegaConf.from_dotlist(sets)).items():
        for field, parsed in value.items():
            target = variants[key] if field in variants[key] else variants[key]["model"]
            target[field] = parsed


def train(spec: dict, folder: Path, seconds: float, seed: int) -> tuple[STLMForCausalLM, dict]:
    """Train one variant: `spec['steps']` steps (capped at `seconds`), or for `seconds` if steps == 0."""
    config = STLMConfig(**spec["model"], max_seq_len=spec["seq_len"], dropout=0.0)
    torch.manual_seed(seed)
    model = STLMForCausalLM(config)
    device = torch.device("cpu")
    optimizer = build_optimizer(model, OptimizerConfig(lr=spec["lr"], betas=[0.9, 0.99], weight_decay=0.1), device)
    fixed_steps = spec["steps"]
    schedule = ScheduleConfig(steps=fixed_steps or VIRTUAL_STEPS, kind="cosine", min_lr_ratio=0.1,
                              warmup_steps=spec["warmup"] if fixed_steps else round(VIRTUAL_STEPS * spec["warmup"] / 2000))
    stream = BatchStream(PackedSequences(folder, "train", spec["seq_len"]), spec["batch"], seed, prefetch=0)
    objective = build_objectives([{"name": "ce"}])
    step, start = 0, time.perf_counter()
    while True:
        elapsed = time.perf_counter() - start
        if elapsed >= seconds or (fixed_steps and step >= fixed_steps):
            break
        set_lr(optimizer, lr_factor(step if fixed_steps else int(elapsed / seconds * VIRTUAL_STEPS), schedule))
        ids = next(stream)
        objective(model(ids), Batch(ids)).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
    train_s = time.perf_counter() - start
    stream.close()
    return model, {"steps": step, "train_s": train_s, "bytes_per_s": step * spec["batch"] * (spec["seq_len"] - 1) / train_s}


def evaluate(model: STLMForCausalLM, folder: Path, seq_len: int, max_sequences: int = 0) -> dict:
    """nats and bits per byte over the whole val split (or its first windows), in windows of the model's context."""
    sums = nll_sums(model, val_sequences(folder, seq_len, max_sequences), 64, torch.device("cpu"))
    nats = float(sums[2] / sums[3])
    return {"nats_per_byte": nats, "bits_per_byte": nats / math.log(2), "val_bytes": int(sums[3])}


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHAKESPEARE, help="a text file (default: tiny shakespeare)")
    parser.add_argument("--seconds", type=float, default=136.0, help="wall-clock training budget per variant and seed")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per variant (0, 1, ...)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--variants", default="a,b,c", help="which variants to run, comma-separated")
    parser.add_argument("--set", nargs="*", default=[], help="overrides such as b.lr=2e-3 c.patch_size=2 c.d_model=192")
    args = parser.parse_args()
    variants = {k: dict(v, model=dict(v["model"])) for k, v in VARIANTS.items()}
    if args.quick:
        args.seconds, args.seeds = 0.5, 1
        for spec in variants.values():
            spec["model"].update(QUICK_MODEL)
            spec.update(steps=min(spec["steps"], 20), warmup=2)
    apply_sets(variants, args.set)
    names = args.variants.split(",")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as work:
        data = args.data
        if not data.is_file():  # no shared data: a synthetic text, so the script still runs
            data = Path(work) / "text.txt"
            data.write_text("".join(f"line {i}: the quick brown fox {i % 97} jumps\n" for i in range(3000)))
        folder = prepare_data(DataConfig(path=str(data), split="tail", val_fraction=0.1, cache_dir=f"{work}/cache"))
        runs: dict[str, list[dict]] = {n: [] for n in names}
        for seed in range(args.seeds):
            for name in names:  # interleaved: load changes on a shared machine hit every variant alike
                model, stats = train(variants[name], folder, args.seconds, seed)
                runs[name].append(dict(stats, **evaluate(model, folder, variants[name]["seq_len"], 8 if args.quick else 0),
                                       params=model.num_parameters()))
    rows = []
    for name in names:
        nats, nats_std = mean_std([r["nats_per_byte"] for r in runs[name]])
        rows.append({"variant": variants[name]["label"], "params": runs[name][0]["params"],
                     "nats_per_byte": nats, "nats_std": nats_std, "bits_per_byte": nats / math.log(2),
                     "bytes_per_s": statistics.fmean(r["bytes_per_s"] for r in runs[name]),
                     "steps": statistics.fmean(r["steps"] for r in runs[name]),
                     "train_s": statistics.fmean(r["train_s"] for r in runs[name]),
                     "val_bytes": runs[name][0]["val_bytes"]})
    by = dict(zip(names, rows))
    ratios, goals = {}, {}
    if "c" in by:
        c = by["c"]
        ratios["c_nats_over_nanogpt_published"] = c["nats_per_byte"] / NANOGPT_VAL
        goals["nanogpt_published_over_c (c <= 0.90x)"] = (NANOGPT_VAL / c["nats_per_byte"], 1 / 0.90)
        if "b" in by:
            spread = max(c["nats_std"], by["b"]["nats_std"])
            ratios["b_minus_c_nats"] = by["b"]["nats_per_byte"] - c["nats_per_byte"]
            goals["b_minus_c_minus_seed_spread (> 0)"] = (ratios["b_minus_c_nats"] - spread, 1e-9)
    report("lm", rows, args=args, ratios=ratios, goals=goals,
           extra={"command": " ".join(sys.argv), "seconds": args.seconds, "seeds": list(range(args.seeds)),
                  "threads": args.threads, "settings": {n: variants[n] for n in names},
                  "per_seed": runs, "nanogpt_published_val": NANOGPT_VAL})


if __name__ == "__main__":
    main()
