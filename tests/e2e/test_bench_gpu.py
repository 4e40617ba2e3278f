"""bench_gpu --dry-run: the plain byte GPT, the pooled STLM and the BPE baseline each report bytes/s
and MFU, with the FLOP counts of the model package; the variants are built from a preset alone."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from stlm_selfplay.model import STLMConfig, flops_per_byte, load_preset
from stlm_selfplay.model.config import plain_twin, preset_fields
from stlm_selfplay.model.flops import bpe_flops_per_token

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_gpu.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_gpu_under_test", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_dry_run_rows_carry_plain_pooled_and_bpe_with_bytes_per_s_and_mfu(tmp_path):
    done = subprocess.run([sys.executable, str(BENCH), "--dry-run", "--json-only"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    payload = json.loads(next(line for line in done.stdout.splitlines() if line.startswith('{"benchmark"')))
    bench = _module()
    train = [row for row in payload["rows"] if row["preset"] != "sampler"]
    assert [row["variant"] for row in train] == ["plain", "pooled", "bpe"] == payload["variants"]
    plain, pooled, bpe = train
    for row in train:
        assert row["bytes_per_s"] > 0 and 0 < row["mfu"] < math.inf and row["flops_per_byte"] > 0
        assert row["mfu"] == pytest.approx(row["bytes_per_s"] * row["flops_per_byte"] / payload["peak_flops"])
    assert plain["flops_per_byte"] == pytest.approx(flops_per_byte(STLMConfig(**plain_twin(bench.TINY))))
    assert pooled["flops_per_byte"] == pytest.approx(flops_per_byte(STLMConfig(**bench.TINY)))
    # bpe: tokens at a quarter of the byte context; bytes/s and FLOPs per byte by the stated assumption
    assert payload["bpe"]["bytes_per_token_assumed"] == bench.BYTES_PER_TOKEN == 4.0
    assert bpe["seq_len"] == plain["seq_len"] // 4 and bpe["vocab"] == payload["bpe"]["vocab"]
    assert bpe["bytes_per_s"] == pytest.approx(bpe["tokens_per_s"] * 4)
    config = STLMConfig(**dict(plain_twin(bench.TINY), max_seq_len=bpe["seq_len"]))
    assert bpe["flops_per_token"] == pytest.approx(bpe_flops_per_token(config, bpe["vocab"]))
    assert bpe["flops_per_byte"] == pytest.approx(bpe["flops_per_token"] / 4)
    assert payload["ratios"]["tiny-dry-run pooled_over_plain_bytes_per_s"] == pytest.approx(
        pooled["bytes_per_s"] / plain["bytes_per_s"])
    assert payload["rows"][-1]["preset"] == "sampler" and payload["rows"][-1]["bytes_per_s"] > 0
    # each row went to stderr as it finished
    assert [json.loads(line)["variant"] for line in done.stderr.splitlines() if line.startswith("{")] == [
        "plain", "pooled", "bpe"]


@pytest.mark.parametrize("name", ["stlm-10m", "stlm-50m", "stlm-100m"])
def test_each_variant_is_built_from_the_preset(name):
    bench, preset = _module(), load_preset(name)
    plain, pooled, bpe = (bench.variant_config(v, preset_fields(name)) for v in ("plain", "pooled", "bpe"))
    assert pooled == preset
    assert plain.is_plain_gpt and plain.max_seq_len == preset.max_seq_len
    assert bpe.is_plain_gpt and bpe.max_seq_len == preset.max_seq_len // 4
    for config in (plain, bpe):
        assert (config.d_model, config.n_layers, config.n_heads, config.n_kv_heads, config.d_ff) == (
            preset.d_model, preset.n_layers, preset.n_heads, preset.n_kv_heads, preset.d_ff)


def test_an_unknown_variant_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["bench_gpu.py", "--dry-run", "--variants", "plain,gpt2"])
    with pytest.raises(SystemExit) as exit_:
        _module().main()
    assert exit_.value.code == 2 and "unknown variant(s) gpt2; valid: plain, pooled, bpe" in capsys.readouterr().err
