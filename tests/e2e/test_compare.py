"""`stlm compare`: the micro comparisons (pretraining and self-play) end to end, budgets in steps,
and one-line config errors."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from stlm_selfplay.cli import main
from stlm_selfplay.compare import bytes_per_step, load_compare, run_config
from stlm_selfplay.errors import UserError

from _pretrain_helpers import REPO, text_file

MICRO = REPO / "configs" / "compare" / "micro.yaml"


def _data_overrides(folder: Path) -> list[str]:
    return [f"data.path={text_file(folder)}", f"data.cache_dir={folder / 'cache'}"]


def test_micro_compare_writes_table_and_plot_and_reuses_finished_runs(tmp_path, capsys):
    args = ["compare", str(MICRO), *_data_overrides(tmp_path)]
    assert main(args) == 0
    out = tmp_path / "runs" / "micro-compare"
    md = (out / "compare.md").read_text()
    rows = re.findall(r"^\| (ce|ce\+z_loss) \| ([\d,]+) \| (\d+\.\d+) ± (\d+\.\d+) \| ([\d,]+) \| (\S+) \| 6 \| 2 \|$",
                      md, re.M)
    assert [r[0] for r in rows] == ["ce", "ce+z_loss"]
    for variant, params, mean, std, speed, flops in rows:
        results = [json.loads((out / variant / f"seed{s}" / "result.json").read_text()) for s in (0, 1)]
        bpbs = [r["val_bpb"] for r in results]
        assert float(mean) == pytest.approx(sum(bpbs) / 2, abs=1e-4)
        assert float(std) == pytest.approx(abs(bpbs[0] - bpbs[1]) / math.sqrt(2), abs=1e-4)  # sample std of 2
        assert int(params.replace(",", "")) == results[0]["params"] > 0
        assert int(speed.replace(",", "")) > 0 and float(flops) > 0
        assert bpbs[0] != bpbs[1]  # the seeds differ
    assert len(re.findall(r"^\| ce(\+z_loss)? \| [01] \| ", md, re.M)) == 4  # one row per run
    png = (out / "compare.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(str(out / "compare.png"))
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100

    # a second call trains nothing: every run has its result.json
    stamp = (out / "ce" / "seed0" / "metrics.jsonl").stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 0
    assert "starting fresh" not in capsys.readouterr().out
    assert (out / "ce" / "seed0" / "metrics.jsonl").stat().st_mtime_ns == stamp


def _compare_file(tmp_path: Path, budget: str, variants: str = "{a: [], b: [optimizer.lr=1e-3]}") -> Path:
    path = tmp_path / "cmp.yaml"
    path.write_text(f"base: {REPO / 'configs' / 'pretrain' / 'shakespeare-tiny.yaml'}\n"
                    f"variants: {variants}\nseeds: [0, 1]\nbudget: {budget}\n")
    return path


def test_bytes_and_flops_budgets_become_steps(tmp_path):
    from stlm_selfplay.config import build_model_config
    from stlm_selfplay.model.flops import flops_per_byte

    spec = load_compare(_compare_file(tmp_path, "{bytes: 100000}"), _data_overrides(tmp_path))
    cfg = run_config(spec, "b", 1)
    assert bytes_per_step(cfg) == 16 * 127
    assert cfg.schedule.steps == math.ceil(100000 / (16 * 127)) and cfg.run.seed == 1
    assert cfg.optimizer.lr == 1e-3 and Path(cfg.run.out_dir) == Path("runs") / "cmp" / "b" and cfg.run.name == "seed1"
    spec = load_compare(_compare_file(tmp_path, "{flops: 1.0e12}"), _data_overrides(tmp_path))
    cfg = run_config(spec, "a", 0)
    fpb = flops_per_byte(build_model_config(cfg.model))
    assert cfg.schedule.steps == math.ceil(1.0e12 / (fpb * 16 * 127))


@pytest.mark.parametrize("budget,variants,message", [
    ("{tokens: 5}", "{a: []}", "unknown budget 'tokens'"),
    ("{steps: 5, bytes: 9}", "{a: []}", "exactly one of"),
    ("{steps: -1}", "{a: []}", "must be a number > 0"),
    ("{steps: 5}", "{a: [data.path=other.txt]}", "may not override 'data.path'"),
    ("{steps: 5}", "{a: [run.seed=3]}", "may not override 'run.seed'"),
    ("{steps: 5}", "{a: [optimizer.lrr=1]}", "unknown config key 'optimizer.lrr'"),
    ("{steps: 5}", "{a: ['objectives=[{name: cee}]']}", "unknown objective 'cee'"),
    ("{games: 5}", "{a: []}", "does not apply to a pretraining comparison; valid: steps, bytes, seconds, flops"),
])
def test_bad_compare_configs_are_one_line_errors(tmp_path, capsys, budget, variants, message):
    path = _compare_file(tmp_path, budget, variants)
    with pytest.raises(UserError, match=re.escape(message)):
        load_compare(path, _data_overrides(tmp_path))
    capsys.readouterr()
    assert main(["compare", str(path), *_data_overrides(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "runs").exists()


def test_missing_compare_config_is_one_line_exit_2(capsys):
    assert main(["compare", "no-such-compare.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: compare config 'no-such-compare.yaml' not found") and err.count("\n") == 1


def test_early_exit_variant_reports_per_exit_bpb_sampler_speeds_and_counts_exit_flops(tmp_path):
    path = tmp_path / "ee.yaml"
    path.write_text(
        f"base: {MICRO}\n".replace(str(MICRO), str(REPO / "configs" / "pretrain" / "shakespeare-tiny.yaml")) +
        "overrides: ['model.overrides={d_model: 32, n_layers: 3, n_heads: 2, n_kv_heads: 1, d_ff: 64, d_local: 16, "
        "local_heads: 2, patch_size: 2, max_seq_len: 64}', run.device=cpu, run.cpu_threads=1, data.seq_len=32, "
        "data.batch_size=4, data.val_max_sequences=8, data.max_bytes=200000, data.prefetch=0, logging.wandb=disabled, "
        "logging.eval_every=3, logging.sample_bytes=0, logging.progress=false]\n"
        "variants: {ce: [], ee: ['objectives=[{name: early_exit, curriculum: none}]']}\nseeds: [0]\nbudget: {steps: 3}\n")
    spec = load_compare(path, _data_overrides(tmp_path))
    from stlm_selfplay.compare import compare, model_numbers
    ce_flops, ee_flops = (model_numbers(run_config(spec, v, 0))[1] for v in ("ce", "ee"))
    assert ee_flops > ce_flops  # two extra decoder + head passes per byte
    results = compare(spec)
    assert "exits" not in results["ce"][0]
    exits = results["ee"][0]["exits"]
    assert sorted(exits["val_bpb"]) == ["0", "1", "2"] and exits["exit_layer"] == 1
    assert exits["val_bpb"]["2"] == pytest.approx(results["ee"][0]["val_bpb"], abs=1e-4)  # last exit = the model
    assert len(set(exits["val_bpb"].values())) == 3
    assert min(exits[k] for k in ("full_bytes_per_s", "exit_bytes_per_s", "speculative_bytes_per_s")) > 0
    assert 0.0 <= exits["acceptance_rate"] <= 1.0
    md = (spec.folder / "compare.md").read_text()
    row = re.search(r"^\| ee \| ([\d.]+) / ([\d.]+) / ([\d.]+) \| 1 \| ", md, re.M)
    assert row and [float(x) for x in row.groups()] == pytest.approx(
        [exits["val_bpb"][k] for k in "012"], abs=1e-3)


# -- self-play comparisons

SELFPLAY_MICRO = REPO / "configs" / "compare" / "selfplay-micro.yaml"
METRICS = ["tictactoe/random/win_rate", "tictactoe/optimal/win_rate", "tictactoe/optimal/non_loss_rate"]
TINY = ["model.overrides.d_model=32", "model.overrides.n_layers=1", "model.overrides.n_heads=2",
        "model.overrides.n_kv_heads=1", "model.overrides.d_ff=64", "model.overrides.d_local=16",
        "model.overrides.max_seq_len=64", "data.seq_len=64", "data.episodes=300", "schedule.steps=30",
        "schedule.warmup_steps=2", "optimizer.lr=1e-2", "data.prefetch=0"]


@pytest.fixture(scope="module")
def tiny_ttt(tmp_path_factory) -> Path:
    """A ~20k-parameter model pretrained for 30 steps on random-play tic-tac-toe (a few seconds;
    _selfplay_fixtures' recipe shrunk: these tests compare runs, not play quality)."""
    from _selfplay_fixtures import PRETRAIN

    from stlm_selfplay.config import load_config
    from stlm_selfplay.runs import latest_checkpoint
    from stlm_selfplay.train.pretrain import pretrain

    root = tmp_path_factory.mktemp("tiny-ttt")
    where = [f"run.out_dir={root}", "run.name=ttt", f"data.cache_dir={root / 'cache'}"]
    pretrain(load_config(None, PRETRAIN + TINY + where))
    return latest_checkpoint(root / "ttt")


def _cells(text: str) -> list[tuple[float, float]]:
    return [tuple(float(x) for x in cell.split(" ± ")) for cell in text.split(" | ")]


def test_selfplay_micro_compare_reports_eval_metrics_and_reuses_finished_runs(tmp_path, capsys, tiny_ttt):
    from stlm_selfplay.train.metrics import read_metrics

    args = ["compare", str(SELFPLAY_MICRO), f"selfplay.init_from={tiny_ttt}"]
    assert main(args) == 0
    out = tmp_path / "runs" / "selfplay-micro"
    md = (out / "compare.md").read_text()
    assert "| variant | params | " + " | ".join(METRICS) + " | games/s | updates | seeds |" in md
    rows = re.findall(r"^\| (mixed|random-only) \| ([\d,]+) \| (.+ ± .+) \| ([\d,.]+) \| 4 \| 2 \|$", md, re.M)
    assert [r[0] for r in rows] == ["mixed", "random-only"]
    means = {}
    for variant, params, cells, speed in rows:
        runs = [json.loads((out / variant / f"seed{s}" / "result.json").read_text()) for s in (0, 1)]
        for name, (mean, std) in zip(METRICS, _cells(cells), strict=True):
            values = [r["metrics"][name] for r in runs]
            assert mean == pytest.approx(sum(values) / 2, abs=1e-4)
            assert std == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2), abs=1e-4)  # sample std of 2
        means[variant] = sum(r["metrics"][METRICS[0]] for r in runs) / 2
        assert int(params.replace(",", "")) == runs[0]["params"] > 0 and float(speed.replace(",", "")) > 0
        digests = []
        for seed, r in enumerate(runs):
            assert (r["updates"], r["games"], r["budget"]) == (4, 64, {"steps": 4.0}) and r["games_per_s"] > 0
            rows_ = read_metrics(out / variant / f"seed{seed}" / "metrics.jsonl")
            final = [x for x in rows_ if x["kind"] == "eval"][-1]
            assert final["step"] == 4 and r["metrics"] == {
                METRICS[0]: final["tictactoe/random/win_rate"], METRICS[1]: final["tictactoe/optimal/win_rate"],
                METRICS[2]: 1 - final["tictactoe/optimal/loss_rate"]}
            assert [p[1] for p in r["curve"]] == [0, 2, 4] and [p[0] for p in r["curve"]] == [0.0, 2.0, 4.0]
            assert r["curve"][-1][2] == r["metrics"]
            digests.append([x["games_digest"] for x in rows_ if x["kind"] == "train"])
        assert digests[0] != digests[1]  # the seeds play different games
    best = max(means, key=means.get)
    assert f"Best by `{METRICS[0]}` (mean over seeds): {best}." in md
    assert len(re.findall(r"^\| (mixed|random-only) \| [01] \| ", md, re.M)) == 4  # one row per run
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a second call trains nothing: every run has its result.json
    stamp = (out / "mixed" / "seed0" / "metrics.jsonl").stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 0
    assert "parameters, 16 games per update" not in capsys.readouterr().out
    assert (out / "mixed" / "seed0" / "metrics.jsonl").stat().st_mtime_ns == stamp


def _selfplay_file(tmp_path: Path, model: Path, budget: str = "{steps: 2}", variants: str = "{a: []}",
                   extra: str = "", overrides: str = "") -> Path:
    path = tmp_path / "spcmp.yaml"
    path.write_text(f"base: {REPO / 'configs' / 'selfplay' / 'tictactoe-constrained.yaml'}\n"
                    f"overrides: [selfplay.init_from={model}, run.device=cpu, logging.wandb=disabled, "
                    f"logging.progress=false, selfplay.games_per_update=16, 'selfplay.eval={{every: 2, bots: [random], "
                    f"episodes: 4, optimal_rate: false, ratings: false}}'{overrides}]\n"
                    f"variants: {variants}\nseeds: [0]\nbudget: {budget}\n{extra}")
    return path


def test_selfplay_budgets_set_updates_and_seconds_train_whole_eval_chunks(tmp_path, tiny_ttt):
    from stlm_selfplay.compare import compare

    spec = load_compare(_selfplay_file(tmp_path, tiny_ttt, "{games: 40}"))
    assert spec.selfplay and spec.metric == "tictactoe/random/win_rate" and spec.higher
    assert run_config(spec, "a", 0).selfplay.updates == 3  # ceil(40 / 16)
    spec = load_compare(_selfplay_file(tmp_path, tiny_ttt, "{seconds: 0.001}", overrides=", selfplay.updates=50"))
    result = compare(spec)["a"][0]
    assert result["updates"] == 2 and [p[1] for p in result["curve"]] == [0, 2]  # one chunk of eval.every updates
    assert result["curve"][-1][0] == pytest.approx(result["update_seconds"]) and result["update_seconds"] > 0


@pytest.mark.parametrize("budget,variants,extra,message", [
    ("{bytes: 5}", "{a: []}", "", "does not apply to a self-play comparison; valid: steps, games, seconds"),
    ("{flops: 1e9}", "{a: []}", "", "does not apply to a self-play comparison; valid: steps, games, seconds"),
    ("{steps: 2}", "{a: [selfplay.eval.episodes=3]}", "", "may not override 'selfplay.eval.episodes'"),
    ("{steps: 2}", "{a: [selfplay.init_from=runs/other]}", "", "may not override 'selfplay.init_from'"),
    ("{steps: 2}", "{a: [selfplay.updates=9]}", "", "may not override 'selfplay.updates'"),
    ("{steps: 2}", "{a: ['selfplay.stages=[{games: {nim: 1.0}, opponents: {random: 1.0}}]']}", "",
     "variant 'a' evaluates on ['nim'], the base on ['tictactoe']"),
    ("{steps: 2}", "{a: [selfplay.advantages.estimator=rloo]}", "", "group_size >= 2"),
    ("{steps: 2}", "{a: []}", "metric: tictactoe/random/win_rat\n", "metric 'tictactoe/random/win_rat'"),
    ("{steps: 2}", "{a: []}", "direction: up\n", "must be one of max, min or empty, got 'up'"),
])
def test_bad_selfplay_compare_configs_are_one_line_errors(tmp_path, capsys, tiny_ttt, budget, variants, extra, message):
    path = _selfplay_file(tmp_path, tiny_ttt, budget, variants, extra)
    with pytest.raises(UserError, match=re.escape(message)):
        load_compare(path)
    capsys.readouterr()
    assert main(["compare", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "runs").exists()
