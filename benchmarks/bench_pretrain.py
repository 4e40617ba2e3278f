"""Pretraining throughput: does data loading starve the step?

Trains the same model in one process: with the background prefetch thread (data.prefetch=4,
the default) and with synchronous loading (data.prefetch=0, the baseline). Reports, for each, the
fraction of step time spent waiting on data (goal: < 2% with prefetch) and bytes/s, best of two
interleaved trials each.

    python benchmarks/bench_pretrain.py [--quick] [--steps N] [--threads T] [--data FILE]

Without --quick the model is the `tiny` preset (0.86M parameters), 16 x 256-byte sequences.
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_parser, report  # noqa: E402

from stlm_selfplay.config import load_config  # noqa: E402
from stlm_selfplay.train.pretrain import pretrain  # noqa: E402

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
QUICK_MODEL = ["model.overrides.d_model=64", "model.overrides.n_layers=1", "model.overrides.d_ff=128",
               "model.overrides.d_local=32", "model.overrides.max_seq_len=128"]


def measure(data: Path, work: Path, prefetch: int, steps: int, quick: bool, threads: int, name: str = "") -> dict:
    overrides = [f"run.name={name or f'prefetch{prefetch}'}", f"run.cpu_threads={threads}", f"run.out_dir={work}/runs", "run.resume=never",
                 f"run.checkpoint_every={steps}", f"data.path={data}", f"data.cache_dir={work}/cache",
                 f"data.prefetch={prefetch}", f"data.seq_len={128 if quick else 256}", "data.batch_size=16",
                 f"schedule.steps={steps}", "schedule.warmup_steps=2", f"logging.eval_every={steps}",
                 f"logging.log_every={steps}", "logging.wandb=disabled", "logging.progress=false",
                 "logging.sample_bytes=0", "data.val_max_sequences=4"] + (QUICK_MODEL if quick else [])
    with contextlib.redirect_stdout(io.StringIO()):  # keep the trainer's summary out of the report
        summary = pretrain(load_config(None, overrides))
    return {"loader": f"prefetch={prefetch}" if prefetch else "synchronous (baseline)", "steps": steps,
            "data_wait_pct": 100 * summary["data_wait_fraction"], "bytes_per_s": summary["bytes_per_s"]}


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (run.cpu_threads; 0 = default)")
    parser.add_argument("--data", type=Path, default=SHAKESPEARE, help="a text file (default: tiny shakespeare)")
    args = parser.parse_args()
    steps = args.steps or (8 if args.quick else 60)
    with tempfile.TemporaryDirectory() as work:
        data = args.data
        if not data.is_file():  # no shared data: a synthetic text of the same size class
            data = Path(work) / "text.txt"
            data.write_text("".join(f"line {i}: the quick brown fox {i % 97} jumps\n" for i in range(30000)))
        measure(data, Path(work), 0, 2, args.quick, args.threads, name="warmup")  # builds the cache, warms up torch
        trials = [measure(data, Path(work), p, steps, args.quick, args.threads, name=f"trial{i}-prefetch{p}")
                  for i in range(2) for p in (0, 4)]
    # the best of two interleaved trials per loader: the least disturbed by other load on the machine
    rows = [max((t for t in trials if t["loader"] == name), key=lambda t: t["bytes_per_s"])
            for name in dict.fromkeys(t["loader"] for t in trials)]
    baseline, prefetched = rows
    report("pretrain", rows, args=args,
           ratios={"bytes_per_s_prefetch_over_sync": prefetched["bytes_per_s"] / baseline["bytes_per_s"],
                   "data_wait_prefetch_over_sync": prefetched["data_wait_pct"] / max(baseline["data_wait_pct"], 1e-9)},
           goals={"step_time_not_waiting_on_data": (1 - prefetched["data_wait_pct"] / 100, 0.98)},
           extra={"command": " ".join(sys.argv)})


if __name__ == "__main__":
    main()
