"""Every `benchmarks/bench_*.py --quick` runs in a subprocess and prints the JSON the docs promise.

The JSON line (`_common.report`) must carry the shared keys, `quick: true`, at least one row,
and the row keys listed below for each benchmark (scripts not listed: the shared keys only); each
row's throughput must be a finite number > 0 (`check_throughput`).
Together the scripts take over a minute, so the four slowest run only under `pytest -m slow`:
bench_rollout and bench_selfplay (each first pretrains a small game model), bench_quickstart (a
whole tiny `stlm run`) and bench_model
(~80 s of CPU time with --quick when this test was written). The default five take ~30 s of CPU.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TEST_TEXT  # not ../shared: a bare clone has none

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
TAKES_DATA = {"bench_lm", "bench_model", "bench_pretrain"}  # scripts with a --data text file option
SLOW = {"bench_model", "bench_rollout", "bench_selfplay", "bench_quickstart"}
SHARED_KEYS = {"benchmark", "date", "machine", "quick", "rows", "ratios", "goals"}
ROW_KEYS = {  # keys every row of the benchmark has (rows may have more)
    "bench_lm": {"variant", "params", "embedding_head_params", "nats_per_byte", "nats_std", "bits_per_byte",
                 "bytes_per_s", "steps"},
    "bench_rollout": {"loop", "games", "moves", "wall_s", "games_per_s"},
    "bench_selfplay": {"run", "update", "games", "train_s", "train_cpu_s"},
    "bench_gpu": {"preset", "variant", "bytes_per_s", "mfu"},
    "bench_envs": {"game"},
    "bench_pretrain": {"loader", "data_wait_pct", "bytes_per_s"},
    "bench_model": {"what", "bytes_per_s"},
    "bench_supervised": {"variant", "params", "steps", "steps_per_cpu_s", "final_digit_rate", "exact_rate"},
    "bench_scoring": {"method", "positions", "actions", "cpu_s", "positions_per_s"},
    "bench_cli": {"what", "seconds"},
    "bench_search_targets": {"simulations", "playouts", "mass", "greedy", "cpu_ms_per_position"},
    "bench_quickstart": {"seed", "wall_s", "cpu_s"},
}
RATIO_KEYS = {  # same-run ratios the benchmark reports
    "bench_cli": {"slowest_help_over_import_torch"},
    "bench_search_targets": {"best_mass_over_uniform"},
    "bench_scoring": {"choices_over_rows", "train_shared_over_rows"},
    "bench_model": {"train_P4_over_P1", "sampler_cached_over_uncached", "self_speculative_over_full",
                    "self_speculative_acceptance"},
}
EXTRA_KEYS = {  # top-level keys beyond the shared ones
    "bench_lm": {"per_seed", "seeds", "seconds", "settings", "corpus", "bpe"},
    "bench_rollout": {"params", "seed"},
    "bench_selfplay": {"final_vs_minimax", "seed", "minutes"},
    "bench_gpu": {"dry_run", "peak_flops", "variants", "bpe"},
    "bench_supervised": {"seconds", "curves"},
    "bench_quickstart": {"config", "overrides", "first_stage", "curves"},
}


THROUGHPUT_KEYS = {  # the speed each benchmark measures: every row must have it
    "bench_lm": "bytes_per_s", "bench_rollout": "games_per_s", "bench_gpu": "bytes_per_s", "bench_envs": "games_per_s",
    "bench_pretrain": "bytes_per_s", "bench_model": "bytes_per_s", "bench_supervised": "steps_per_cpu_s", "bench_scoring": "positions_per_s",
}


def check_throughput(stem: str, row: dict) -> None:
    """A speed is a finite number > 0: the row's required throughput key and any other `*_per_s`
    / `*_per_cpu_s` value (0, NaN, infinity, None or a string fail; JSON's NaN parses as a float)."""
    required = THROUGHPUT_KEYS.get(stem)
    assert required is None or required in row, (stem, row)
    for key, value in row.items():
        if key == required or key.endswith(("_per_s", "_per_cpu_s")):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
            assert ok, f"{stem}: {key}={value!r} is not a finite throughput > 0 in {row}"


@pytest.mark.parametrize("value", [0, 0.0, float("nan"), float("inf"), -3.0, None, "fast", True])
def test_throughput_check_refuses_zero_nan_and_non_numbers(value):
    with pytest.raises(AssertionError):
        check_throughput("bench_lm", {"bytes_per_s": value})
    with pytest.raises(AssertionError):
        check_throughput("bench_params", {"train_s": 1.0, "tokens_per_s": value})
    with pytest.raises(AssertionError):  # the required key missing
        check_throughput("bench_envs", {"game": "nim"})
    check_throughput("bench_lm", {"bytes_per_s": 1.5e4, "steps_per_cpu_s": 3})
    check_throughput("bench_params", {"params": 0})  # not a speed: zero is fine


def scripts():
    for path in sorted(BENCHMARKS.glob("bench_*.py")):
        marks = [pytest.mark.slow] if path.stem in SLOW else []
        yield pytest.param(path, id=path.stem, marks=marks)


@pytest.mark.parametrize("script", scripts())
def test_quick_run_prints_its_json(script: Path, tmp_path):
    data = ["--data", str(TEST_TEXT)] if script.stem in TAKES_DATA else []
    done = subprocess.run([sys.executable, str(script), "--quick", "--json-only", *data], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith('{"benchmark"'))
    payload = json.loads(line)
    assert SHARED_KEYS <= payload.keys()
    assert payload["quick"] is True and payload["rows"]
    assert EXTRA_KEYS.get(script.stem, set()) <= payload.keys()
    assert RATIO_KEYS.get(script.stem, set()) <= payload["ratios"].keys()
    for row in payload["rows"]:
        if script.stem == "bench_gpu" and row["preset"] == "sampler":
            assert {"batch", "new_bytes", "bytes_per_s"} <= row.keys()
            check_throughput(script.stem, row)
            continue
        assert ROW_KEYS.get(script.stem, set()) <= row.keys(), (script.stem, row)
        check_throughput(script.stem, row)


@pytest.mark.slow
def test_selfplay_bench_runs_a_yaml_recipe(tmp_path):
    """`--recipe` runs the YAML's objectives (here search_policy + value) under the recipe's own name."""
    recipe = "configs/selfplay/tictactoe-search.yaml"
    done = subprocess.run([sys.executable, str(BENCHMARKS / "bench_selfplay.py"), "--quick", "--json-only", "--recipe",
                           recipe, "--model", "value_head=true", "--work", str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    payload = json.loads(next(line for line in done.stdout.splitlines() if line.startswith('{"benchmark"')))
    assert {row["run"] for row in payload["rows"]} == {"recipe-tictactoe-search"}
    assert set(payload["final_vs_minimax"]) == {"recipe-tictactoe-search"}
    train = [json.loads(line) for line in (tmp_path / "recipe-tictactoe-search" / "metrics.jsonl").read_text().splitlines()]
    assert any(any("search_policy" in key for key in row) for row in train), train[-1]
    # each update's CPU time is its own (one torch thread: at most its wall time), and the curve's
    # train_cpu_s is their running sum
    updates = [row for row in train if row.get("kind") == "train"]
    assert all(0 < row["update_cpu_s"] <= 1.2 * row["update_s"] + 0.05 for row in updates), updates
    for point in payload["rows"]:
        assert point["train_cpu_s"] == pytest.approx(sum(r["update_cpu_s"] for r in updates if r["step"] <= point["update"]))


def test_quickstart_first_stage_probe_cuts_the_run_to_its_first_stage(tmp_path):
    """bench_quickstart --first-stage: stops where stage 0 ends, drops the later stages, and keeps
    only the targets and bots of stage 0's games (the quickstart: tic-tac-toe)."""
    sys.path.insert(0, str(BENCHMARKS))
    from bench_quickstart import first_stage_config
    from stlm_selfplay.config import load_config

    whole = load_config(BENCHMARKS.parent / "configs" / "quickstart.yaml")
    cut = load_config(first_stage_config(BENCHMARKS.parent / "configs" / "quickstart.yaml", tmp_path / "cut.yaml"))
    first = whole.selfplay.stages[0]
    assert cut.selfplay.updates == first.until_update == 50 and len(cut.selfplay.stages) == 1
    assert cut.selfplay.stages[0].until_update == 0 and cut.selfplay.stages[0].games == first.games == {"tictactoe": 1.0}
    assert cut.selfplay.stages[0].objectives == first.objectives
    assert dict(cut.evaluation.at_most) == {"tictactoe/minimax/loss_rate": 0.25}
    assert list(cut.evaluation.bots) == ["random", "minimax"]
    assert cut.model == whole.model and cut.schedule == whole.schedule and cut.data == whole.data  # same pretraining
