"""bench_lm --quick: every variant (plain, pooled, BPE) runs, each in its own process, and the
BPE baseline is scored over the same val bytes; the stdlib corpus states what it read."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_lm.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_lm_under_test", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def _quick(tmp_path, *extra) -> dict:
    done = subprocess.run([sys.executable, str(BENCH), "--quick", "--json-only", *extra], capture_output=True,
                          text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith('{"benchmark"')))


def test_quick_runs_plain_pooled_and_bpe_each_in_a_fresh_process(tmp_path):
    payload = _quick(tmp_path)
    labels = [row["variant"][:3] for row in payload["rows"]]
    assert labels == ["(b)", "(c)", "(d)"]
    pids = [run["pid"] for runs in payload["per_seed"].values() for run in runs]
    assert len(set(pids)) == 3 and payload["pid"] not in pids
    for row in payload["rows"]:
        assert 0 < row["nats_per_byte"] < 20 and row["steps"] > 0
    for row in payload["rows"][:2]:  # byte variants: scored on a train slice too (the memorisation gap)
        assert 0 < row["train_slice_nats"] < 20 and row["train_slice_nats"] != row["nats_per_byte"]
    assert payload["rows"][2]["train_slice_nats"] is None
    bpe = payload["bpe"]
    assert payload["rows"][2]["val_bytes"] == bpe["val_bytes"] and bpe["vocab"] <= 384
    # the pooled model's embedding + head is the byte table; the BPE model's is vocab x d_model
    assert payload["rows"][2]["embedding_head_params"] == bpe["vocab"] * payload["settings"]["d"]["model"]["d_model"]


def test_quick_on_the_standard_library_states_what_it_read(tmp_path):
    payload = _quick(tmp_path, "--data", "stdlib", "--variants", "c")
    corpus = payload["corpus"]
    assert corpus["corpus"] == "python standard library" and corpus["train_files"] == 40
    assert "argparse.py" in corpus["val_files"] and corpus["val_bytes"] > 100_000


def test_scale_gives_every_variant_the_preset_trunk_and_keeps_b_and_d_plain():
    from stlm_selfplay.model import STLMConfig
    from stlm_selfplay.model.config import load_preset

    bench = _module()
    variants = bench.fresh_variants()
    bench.apply_scale(variants, "stlm-10m")
    preset = load_preset("stlm-10m")
    for name, spec_ in variants.items():
        config = STLMConfig(**spec_["model"], max_seq_len=spec_["seq_len"])
        assert (config.d_model, config.n_layers, config.n_heads, config.n_kv_heads, config.d_ff) == (384, 6, 6, 2, 1024)
        if name == "c":  # the preset itself: pooled, its narrow local modules
            assert (config.patch_size, config.d_local, config.n_local_decoder_layers) == (4, 128, 2)
            assert config == load_preset("stlm-10m", max_seq_len=spec_["seq_len"])
        else:  # plain: one byte per trunk position, no local blocks
            assert (config.patch_size, config.d_local, config.n_local_encoder_layers) == (1, 384, 0)
    # the byte variants read the same bytes per step
    assert variants["b"]["seq_len"] * variants["b"]["batch"] == variants["c"]["seq_len"] * variants["c"]["batch"]
    assert preset.max_seq_len == variants["c"]["seq_len"]


def test_long_budget_settings_and_shifted_epochs_land_where_they_belong():
    from stlm_selfplay.model import STLMConfig

    bench = _module()
    variants = bench.fresh_variants()
    bench.apply_sets(variants, bench.LONG_BUDGET_SETS + ["c.shift_epochs=true"])
    assert (variants["b"]["seq_len"], variants["b"]["batch"]) == (128, 6)  # training settings, not model fields
    assert "seq_len" not in variants["b"]["model"] and variants["c"]["shift_epochs"] is True
    assert variants["b"]["shift_epochs"] is False and "shift_epochs" not in variants["c"]["model"]
    config = STLMConfig(**variants["c"]["model"], max_seq_len=variants["c"]["seq_len"])
    assert (config.d_local, config.local_heads, config.n_local_decoder_layers, config.n_layers) == (128, 4, 3, 2)
    assert config.d_local == STLMConfig(**variants["b"]["model"], max_seq_len=128).d_model  # (b)'s byte width
