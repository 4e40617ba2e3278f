"""Language modelling at equal wall clock: plain byte GPT vs pooled STLM vs a BPE model with the same trunk.

Variants (`--variants`, default b,c,d): (a) nanoGPT's shakespeare_char CPU recipe (4 layers,
4 heads, 128 wide, context 64, batch 12, 2,000 iterations, lr 1e-3 cosine to 1e-4, warmup 100)
reproduced with our P=1 model; (b) our plain byte GPT (P=1); (c) our best pooled STLM; (d) the
BPE baseline (`stlm_selfplay/model/bpe_baseline.py`): (b)'s trunk over byte-level BPE tokens with
a tied embedding, the tokenizer learned on the train split (GPT-2's own merges cannot be loaded
offline). (b)-(d) train until `--seconds` of wall clock have passed, the schedule laid over the
budget's fraction elapsed (virtual step = elapsed / seconds * 10,000).

Every (seed, variant) runs in its own process (forked from this one before any torch work),
interleaved seed by seed, so load changes on a shared machine hit every variant alike; byte
variants with the same batch shape see the same data order (the loader's (seed, step) order).
Each is scored on the same full val split: byte variants on every val byte after the first, in
windows of their own context; (d) on the same val documents tokenised, its summed token NLL
divided by their UTF-8 bytes (separators left out on both sides).

    python benchmarks/bench_lm.py [--quick] [--data shakespeare|stdlib|FILE] [--seconds S] [--seeds N]
                                  [--threads T] [--variants b,c,d] [--scale PRESET] [--long-budget]
                                  [--set KEY=VALUE ...]

`--data stdlib` is the running Python's standard-library sources (`data/stdlib_corpus.py`, fixed
held-out files as val); the JSON states what was read. `--set c.ngram_max=8 d.vocab=4096 ...`
overrides a variant's settings (training keys, else model fields). Reported: nats/byte and
bits/byte on val, parameters (total and embedding+head), training bytes/s, steps, mean +- std
over seeds, and for the byte variants `train_slice_nats`: nats/byte on as many rows of the train
split as val has (text it trained on; train_slice_nats far below nats_per_byte = memorising).
Goals (issue 14): (c) <= 1.70 nats/byte at S = 136 on tinyshakespeare, (c) below (b) and within
0.02 nats/byte of (d) beyond the seed spread.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_parser, report  # noqa: E402

from stlm_selfplay.config import DataConfig, OptimizerConfig, ScheduleConfig  # noqa: E402
from stlm_selfplay.data.cache import prepare_data, read_meta  # noqa: E402
from stlm_selfplay.data.loader import BatchStream, PackedSequences, val_sequences  # noqa: E402
from stlm_selfplay.data.packing import DTYPE, ShardWriter  # noqa: E402
from stlm_selfplay.model import STLMConfig, STLMForCausalLM  # noqa: E402
from stlm_selfplay.model.config import plain_twin, preset_fields  # noqa: E402
from stlm_selfplay.model.bpe_baseline import EOT, BPEBaselineLM, bpe_nll, token_stream, train_bpe  # noqa: E402
from stlm_selfplay.model.tokenizer import EOS_ID, NUM_BYTES  # noqa: E402
from stlm_selfplay.train.evaluate import nll_sums  # noqa: E402
from stlm_selfplay.train.optim import build_optimizer, lr_factor, set_lr  # noqa: E402

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
NANOGPT_VAL = 1.8857  # nanoGPT's published CPU-recipe val loss (nats/char = nats/byte: ASCII text)
VIRTUAL_STEPS = 10_000  # schedule resolution of the time-budgeted variants

PLAIN = dict(patch_size=1, n_local_encoder_layers=0, n_local_decoder_layers=0)
TRUNK = dict(d_model=128, n_layers=4, n_heads=4, n_kv_heads=4, d_ff=344)
TRAIN_DEFAULTS = dict(optimizer="adamw", muon_lr=0.02, muon_scope="trunk", schedule="cosine", kind="byte",
                      shift_epochs=False)
# Each variant: model fields, then training settings (seq_len = context in ids, steps = 0 -> train
# for the budget). (b) and (c) were picked by short one-seed runs (benchmarks/RESULTS.md,
# bench_lm): lr 2e-3 over 3e-3 and 128 over 192 wide for (b); for (c) a 128-wide trunk with
# 96-wide local modules, a 2-layer local decoder and 8 x 128-byte sequences. (d)'s context is in
# tokens (~4 bytes each on English text), vocab its BPE vocabulary size. Muon (lr 0.02) for every
# matrix was the one issue-14 lever that paid for both (b) and (c) in 136 s (RESULTS.md, "tuning the
# three variants"): (b) and (d) use it on their trunk, (c) on its local modules too (muon_scope all).
# (c) since 2026-12-06 (RESULTS.md, "stream local modules"): a 2-layer patch trunk over mean-pooled
# byte embeddings and 4 decoder layers over the whole byte sequence (decoder_attention: stream), level
# with the best (b) at 600 s; the hourglass (encoder_attention: stream) was 0.012 behind there. The
# window-decoder (c) of the grid above it was 4 trunk + 1 encoder + 2 decoder layers.
VARIANTS = {
    "a": {"label": "(a) nanoGPT CPU recipe, our P=1", "model": dict(PLAIN, **TRUNK, d_local=128, local_heads=4),
          "seq_len": 64, "batch": 12, "lr": 1e-3, "steps": 2000, "warmup": 100},
    "b": {"label": "(b) plain byte GPT (P=1)", "model": dict(PLAIN, **TRUNK, d_local=128, local_heads=4),
          "seq_len": 64, "batch": 12, "lr": 2e-3, "steps": 0, "warmup": 100, "optimizer": "muon"},
    "c": {"label": "(c) pooled STLM (P=4, stream decoder)", "model": dict(TRUNK, n_layers=2, patch_size=4,
          d_local=96, local_heads=2, n_local_encoder_layers=0, n_local_decoder_layers=4,
          decoder_attention="stream"), "seq_len": 128, "batch": 8, "lr": 3e-3, "steps": 0,
          "warmup": 100, "optimizer": "muon", "muon_scope": "all"},
    "d": {"label": "(d) BPE baseline, (b)'s trunk", "kind": "bpe", "model": dict(PLAIN, **TRUNK, d_local=128,
          local_heads=4), "vocab": 2048, "seq_len": 64, "batch": 12, "lr": 2e-3, "steps": 0, "warmup": 100,
          "optimizer": "muon"},
}
# `--scale PRESET` (e.g. stlm-10m): (c) becomes the preset (its trunk, patching and local modules), every
# other variant its plain twin (`plain_twin`: the preset's trunk, P=1, d_local = d_model). Training settings at a
# preset scale: the byte variants read 4,096 bytes per step ((c) at the preset's 1,024-byte context,
# (b) at 512 bytes: attention over 1,024 single-byte positions would cost (b) ~45% more per byte),
# (d) 4 x 320 tokens (~1,000 bytes of context on English or Python text); one lr for all three.
SCALE_TRAIN = {"a": {}, "b": dict(seq_len=512, batch=8, lr=2e-3), "c": dict(seq_len=1024, batch=4, lr=2e-3),
               "d": dict(seq_len=320, batch=4, lr=2e-3)}
# `--long-budget`: the settings that were best at 600 s (RESULTS.md, "the pooled model with the plain model's
# byte width"): (b) at 6 x 128 bytes (5 layers were no better); (c) with (b)'s 128-wide byte layers, 3 stream
# decoder layers under the 2-layer trunk (96-wide byte layers, best at 136 s, fall behind with training time).
LONG_BUDGET_SETS = ["b.seq_len=128", "b.batch=6", "c.d_local=128", "c.local_heads=4", "c.n_local_decoder_layers=3"]
QUICK_MODEL = dict(d_model=32, d_local=32, n_layers=1, n_heads=2, n_kv_heads=2, d_ff=64, local_heads=2)


def fresh_variants() -> dict:
    """A copy of VARIANTS, each with TRAIN_DEFAULTS under its own settings (safe to edit)."""
    return {k: {**TRAIN_DEFAULTS, **v, "model": dict(v["model"])} for k, v in VARIANTS.items()}


def apply_scale(variants: dict, preset: str) -> None:
    """Give every variant the trunk of model preset `preset` (module comment above SCALE_TRAIN)."""
    fields = preset_fields(preset)
    fields.pop("max_seq_len", None)
    for name, spec in variants.items():
        if name == "c":  # the preset as it is: none of the 0.8M (c)'s own model fields carried over
            spec["model"] = dict(fields)
        else:
            spec["model"].update(plain_twin(fields))
        spec.update(SCALE_TRAIN[name])


def apply_sets(variants: dict, sets: list[str]) -> None:
    """`x.key=value`: a training setting of variant x (lr, batch, seq_len, ...) or else a model field.
    Values are parsed like config overrides (OmegaConf dotlist: 3 -> int, 3e-3 -> float, true -> bool)."""
    for key, value in OmegaConf.to_container(OmegaConf.from_dotlist(sets)).items():
        for field, parsed in value.items():
            target = variants[key] if field in variants[key] else variants[key]["model"]
            target[field] = parsed


# ---------------------------------------------------------------------------------------- data
def read_corpus(data: str, work: Path, quick: bool) -> tuple[Path, dict]:
    """The byte-level cache folder of `data` and a description of what was read."""
    if data == "stdlib":
        from stlm_selfplay.data.stdlib_corpus import write_stdlib_corpus

        info = write_stdlib_corpus(work / "stdlib.jsonl", max_train_files=40 if quick else 0)
        cfg = DataConfig(path=str(work / "stdlib.jsonl"), split="tail", val_fraction=info["val_fraction"],
                         cache_dir=f"{work}/cache")
        return prepare_data(cfg), dict(info, corpus="python standard library")
    path = SHAKESPEARE if data == "shakespeare" else Path(data)
    info = {"corpus": str(path), "split": "last 10% of the bytes"}
    if not path.is_file():  # no shared data: a synthetic text, so the script still runs
        path = work / "text.txt"
        path.write_text("".join(f"line {i}: the quick brown fox {i % 97} jumps\n" for i in range(3000)))
        info["corpus"] = "synthetic (tinyshakespeare not found)"
    folder = prepare_data(DataConfig(path=str(path), split="tail", val_fraction=0.1, cache_dir=f"{work}/cache"))
    return folder, info


def split_documents(folder: Path, split: str, max_bytes: int = 0) -> tuple[list[str], int]:
    """A split's id stream cut at EOS into UTF-8 documents, and its number of byte ids."""
    ids = np.concatenate([np.fromfile(folder / s["file"], dtype=DTYPE) for s in read_meta(folder)["splits"][split]])
    if max_bytes:
        ids = ids[:max_bytes]
    cuts = np.flatnonzero(ids == EOS_ID)
    pieces = np.split(ids, cuts + 1)
    docs = [bytes(p[p < NUM_BYTES].astype(np.uint8)).decode("utf-8", errors="replace") for p in pieces]
    return [d for d in docs if d], int((ids < NUM_BYTES).sum())


def prepare_bpe(folder: Path, work: Path, vocab: int, quick: bool) -> dict:
    """Learn the BPE on the train split, write its token stream as shards, tokenise val."""
    train_docs, _ = split_documents(folder, "train", 200_000 if quick else 0)
    val_docs, val_bytes = split_documents(folder, "val", 20_000 if quick else 0)
    start = time.perf_counter()
    tokenizer = train_bpe(train_docs, vocab)
    out = work / f"bpe{vocab}"
    out.mkdir(exist_ok=True)
    writer = ShardWriter(out, "train", 1 << 28)
    train_tokens = token_stream(tokenizer, train_docs)
    writer.append(np.asarray(train_tokens, dtype=DTYPE))
    writer.flush()
    (out / "meta.json").write_text(__import__("json").dumps({"splits": {"train": writer.shards, "val": []}}))
    val = token_stream(tokenizer, val_docs)
    np.save(out / "val.npy", np.asarray(val, dtype=np.int64))
    train_bytes = sum(len(d.encode()) for d in train_docs)
    return {"folder": str(out), "vocab": tokenizer.get_vocab_size(), "eot": tokenizer.token_to_id(EOT),
            "val_bytes": val_bytes, "train_tokens": len(train_tokens), "val_tokens": len(val),
            "train_bytes_per_token": train_bytes / max(len(train_tokens), 1),
            "tokenizer_s": time.perf_counter() - start}


# ------------------------------------------------------------------------------------ training
def build(spec: dict, bpe: dict | None):
    config = STLMConfig(**{"dropout": 0.0, **spec["model"]}, max_seq_len=spec["seq_len"])
    if spec["kind"] == "bpe":
        model = BPEBaselineLM(config, bpe["vocab"])
        return model, model.loss, model.embed.weight.numel()
    model = STLMForCausalLM(config)
    embed = sum(p.numel() for m in (model.byte_embed, model.ngram_embed, model.lm_head) if m is not None
                for p in m.parameters())
    return model, (lambda ids: model(ids, labels=ids).loss), embed


def train(spec: dict, model, loss_fn, data: PackedSequences, seconds: float, seed: int) -> dict:
    """`spec['steps']` steps (capped at `seconds`), or for `seconds` if steps == 0."""
    optimizer = build_optimizer(model, OptimizerConfig(name=spec["optimizer"], lr=spec["lr"], betas=[0.9, 0.99],
                                                       weight_decay=0.1, muon_lr=spec["muon_lr"],
                                                       muon_scope=spec["muon_scope"]), torch.device("cpu"))
    fixed_steps = spec["steps"]
    schedule = ScheduleConfig(steps=fixed_steps or VIRTUAL_STEPS, kind=spec["schedule"], min_lr_ratio=0.1,
                              warmup_steps=spec["warmup"] if fixed_steps else round(VIRTUAL_STEPS * spec["warmup"] / 2000))
    stream = BatchStream(data, spec["batch"], seed, prefetch=0)
    step, start = 0, time.perf_counter()
    while True:
        elapsed = time.perf_counter() - start
        if elapsed >= seconds or (fixed_steps and step >= fixed_steps):
            break
        set_lr(optimizer, lr_factor(step if fixed_steps else int(elapsed / seconds * VIRTUAL_STEPS), schedule))
        loss_fn(next(stream)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
    train_s = time.perf_counter() - start
    stream.close()
    return {"steps": step, "train_s": train_s, "ids_per_s": step * spec["batch"] * (spec["seq_len"] - 1) / train_s}


def run_variant(spec: dict, folder: str, bpe: dict | None, seconds: float, seed: int, threads: int,
                quick: bool) -> dict:
    """One (variant, seed) in a fresh process: build, train for the budget, score on val."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model, loss_fn, embed = build(spec, bpe)
    is_bpe = spec["kind"] == "bpe"
    data = PackedSequences(Path(bpe["folder"] if is_bpe else folder), "train", spec["seq_len"], spec["shift_epochs"])
    stats = train(spec, model, loss_fn, data, seconds, seed)
    start = time.perf_counter()
    if is_bpe:
        nats = bpe_nll(model, np.load(Path(bpe["folder"]) / "val.npy").tolist(), spec["seq_len"], skip_id=bpe["eot"])
        val_bytes = bpe["val_bytes"]
        stats["bytes_per_s"] = stats["ids_per_s"] * bpe["train_bytes_per_token"]
    else:
        val = val_sequences(Path(folder), spec["seq_len"], 8 if quick else 0)
        sums = nll_sums(model, val, 64, torch.device("cpu"))
        nats, val_bytes = float(sums[2]), int(sums[3])
        stats["bytes_per_s"] = stats["ids_per_s"]
        seen = nll_sums(model, val_sequences(Path(folder), spec["seq_len"], len(val), split="train"), 64,
                        torch.device("cpu"))  # as many rows of the train split: the memorisation gap
        stats["train_slice_nats"] = float(seen[2] / seen[3])
    return dict(stats, nats_per_byte=nats / val_bytes, bits_per_byte=nats / val_bytes / math.log(2),
                val_bytes=val_bytes, eval_s=time.perf_counter() - start,
                params=sum(p.numel() for p in model.parameters()), embedding_head_params=embed, pid=os.getpid())


def in_fresh_process(fn, *args):
    """fn(*args) in a forked child (a fresh allocator and thread pool per run); its return value."""
    with ProcessPoolExecutor(1, mp_context=get_context("fork")) as pool:
        return pool.submit(fn, *args).result()


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--data", default="shakespeare", help="shakespeare (default) | stdlib | a text file")
    parser.add_argument("--seconds", type=float, default=136.0, help="wall-clock training budget per variant and seed")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per variant (first-seed, first-seed + 1, ...)")
    parser.add_argument("--first-seed", type=int, default=0, help="the first seed (e.g. 1 to add a second seed to a run of seed 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--variants", default="b,c,d", help="which variants to run, comma-separated (a, b, c, d)")
    parser.add_argument("--scale", default="", help="a model preset (stlm-10m, ...) whose trunk every variant takes; "
                        "default: the ~0.8M models written in VARIANTS")
    parser.add_argument("--long-budget", action="store_true", help="the settings tuned at 600 s (LONG_BUDGET_SETS), "
                        "applied before --set")
    parser.add_argument("--set", nargs="*", default=[], help="overrides such as c.ngram_max=8 d.vocab=4096 b.lr=3e-3")
    args = parser.parse_args()
    variants = fresh_variants()
    if args.scale:
        apply_scale(variants, args.scale)
    if args.quick:
        args.seconds, args.seeds = 0.5, 1
        for spec in variants.values():
            spec["model"].update(QUICK_MODEL)
            spec.update(steps=min(spec["steps"], 20), warmup=2)
        variants["d"]["vocab"] = 384
    apply_sets(variants, (LONG_BUDGET_SETS if args.long_budget else []) + args.set)
    names = args.variants.split(",")
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # no tokenizer threads before forking
    wall = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder, corpus = read_corpus(args.data, work, args.quick)
        bpe = prepare_bpe(folder, work, variants["d"]["vocab"], args.quick) if "d" in names else None
        runs: dict[str, list[dict]] = {n: [] for n in names}
        for seed in seeds:
            for name in names:  # interleaved, one fresh process each
                runs[name].append(in_fresh_process(run_variant, variants[name], str(folder), bpe, args.seconds, seed,
                                                   args.threads, args.quick))
    rows = []
    for name in names:
        nats, nats_std = mean_std([r["nats_per_byte"] for r in runs[name]])
        first = runs[name][0]
        rows.append({"variant": variants[name]["label"], "params": first["params"],
                     "embedding_head_params": first["embedding_head_params"],
                     "nats_per_byte": nats, "nats_std": nats_std, "bits_per_byte": nats / math.log(2),
                     "bytes_per_s": statistics.fmean(r["bytes_per_s"] for r in runs[name]),
                     "steps": statistics.fmean(r["steps"] for r in runs[name]),
                     "train_s": statistics.fmean(r["train_s"] for r in runs[name]), "val_bytes": first["val_bytes"],
                     "train_slice_nats": (statistics.fmean(r["train_slice_nats"] for r in runs[name])
                                          if "train_slice_nats" in first else None)})
    by = dict(zip(names, rows))
    ratios, goals = {}, {}
    if "c" in by:
        c = by["c"]
        goals["c_nats_at_most_1.70 (1.70 / c >= 1)"] = (1.70 / c["nats_per_byte"], 1.0)
        ratios["c_nats_over_nanogpt_published"] = c["nats_per_byte"] / NANOGPT_VAL
        for other, target in (("b", 0.0), ("d", -0.02)):
            if other in by:
                spread = max(c["nats_std"], by[other]["nats_std"])
                gap = by[other]["nats_per_byte"] - c["nats_per_byte"]
                ratios[f"{other}_minus_c_nats"] = gap
                goals[f"{other}_minus_c_minus_seed_spread (> {target})"] = (gap - spread - target, 1e-9)
        if "d" in by:
            ratios["c_embedding_head_over_d"] = c["embedding_head_params"] / by["d"]["embedding_head_params"]
    report("lm", rows, args=args, ratios=ratios, goals=goals,
           extra={"command": " ".join(sys.argv), "seconds": args.seconds, "seeds": seeds,
                  "threads": args.threads, "settings": {n: variants[n] for n in names}, "corpus": corpus,
                  "bpe": bpe, "per_seed": runs, "wall_s": time.perf_counter() - wall, "pid": os.getpid(),
                  "nanogpt_published_val": NANOGPT_VAL})


if __name__ == "__main__":
    main()
