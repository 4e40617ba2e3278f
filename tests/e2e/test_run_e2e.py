"""End to end: `stlm run configs/micro.yaml` in a subprocess (the quickstart's pipeline at toy
sizes): the run folder holds the config, both stages' metrics, a loadable final checkpoint, the
before/after evaluation and a report whose plots are valid PNGs. A second run, interrupted by
SIGINT during self-play and started again, ends with the same metrics at the same steps."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stlm_selfplay.runs import latest_checkpoint, load_model
from stlm_selfplay.config import load_config
from stlm_selfplay.selfplay.ratings import read_rows
from stlm_selfplay.train.metrics import read_metrics
from test_report import assert_valid_png

REPO = Path(__file__).resolve().parents[2]
MICRO = REPO / "configs" / "micro.yaml"
TIMING = {"bytes_per_s", "data_wait", "games_per_s", "rollout_s", "update_s", "update_cpu_s", "eval_s"}  # wall-clock fields
SECTIONS = ["Pretraining", "Self-play", "Ratings", "Before and after", "Sample games", "Reproduce"]


def stlm_run(cwd: Path, *overrides: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    return subprocess.Popen([sys.executable, "-m", "stlm_selfplay", "run", str(MICRO), *overrides], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def child_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """The uninterrupted micro run: (run folder, stdout, stderr, CPU seconds it used). CPU time,
    not wall time: the machine running the tests may be shared."""
    cwd = tmp_path_factory.mktemp("e2e")
    used = child_cpu_seconds()
    proc = stlm_run(cwd, f"data.cache_dir={cwd / 'cache'}")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return cwd / "runs" / "micro", out, err, child_cpu_seconds() - used


def test_micro_run_writes_config_metrics_checkpoint_and_report(micro):
    run, out, err, seconds = micro
    assert seconds < 90, f"micro run took {seconds:.0f} CPU seconds"
    cfg = load_config(run / "config.yaml")  # the resolved config loads back as it was
    assert cfg.stages == ["pretrain", "selfplay"] and cfg.run.name == "micro"
    assert (run / "command.txt").read_text().startswith("stlm run ")
    pretrain_rows = read_metrics(run / "pretrain" / "metrics.jsonl")
    assert max(r["step"] for r in pretrain_rows) == cfg.schedule.steps
    selfplay_rows = read_metrics(run / "selfplay" / "metrics.jsonl")
    assert [r["step"] for r in selfplay_rows if r["kind"] == "train"] == list(range(1, cfg.selfplay.updates + 1))
    assert {r["stage"] for r in selfplay_rows if r["kind"] == "train"} == {0, 1}  # the curriculum moved on
    final = latest_checkpoint(run / "selfplay")
    assert final.name == f"step_{cfg.selfplay.updates}"
    model = load_model(run)  # the run's model is the last stage's final checkpoint
    assert model.num_parameters() > 0
    selfplay_start = read_metrics(run / "selfplay" / "metrics.jsonl", "eval")[0]
    assert "tictactoe/optimal_rate" in selfplay_start
    evaluation = json.loads((run / "evaluation.json").read_text())
    cwd = run.parents[1]  # the paths as the run named them, relative to where it ran
    assert evaluation["settings"]["models"] == {"pretrained": str(latest_checkpoint(run / "pretrain").relative_to(cwd)),
                                                "final": str(final.relative_to(cwd))}
    assert evaluation["settings"]["episodes"] == cfg.evaluation.episodes
    assert {t["metric"] for t in evaluation["tests"]} >= {"tictactoe/random/seat0/win_rate",
                                                          "tictactoe/random/seat1/win_rate",
                                                          "tictactoe/minimax/non_loss_rate", "tictactoe/optimal_rate"}
    # progress bars and the report's path on the terminal
    assert "step/s" in err or "s/step" in err
    assert "report: runs/micro/report.md" in out


def test_micro_report_sections_and_plots(micro):
    run = micro[0]
    text = (run / "report.md").read_text()
    assert re.findall(r"^## (.+)$", text, re.M) == SECTIONS
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert {Path(i).name for i in images} == {"pretraining.png", "selfplay_matches.png", "illegal_rate.png",
                                              "optimal_rate.png", "exploitability.png"}
    for image in images:
        assert_valid_png(run / image)
    assert sorted(p.name for p in (run / "plots").glob("*.png")) == sorted(Path(i).name for i in images)
    assert "| pretrained | final |" in text and "| tictactoe | minimax | 1 |" in text
    # one game per seat against each of the two bots of each game
    assert text.count("```text\nttt ") == 4 and text.count("```text\nkuhn ") == 4


def test_second_run_resumes_nothing_left_and_keeps_results(micro, tmp_path):
    run = micro[0]
    before = (run / "evaluation.json").read_text()
    proc = stlm_run(run.parents[1], f"data.cache_dir={run.parents[1] / 'cache'}")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "stage 1/2 pretrain: done (12/12)" in out and "stage 2/2 selfplay: done (6/6)" in out
    assert (run / "evaluation.json").read_text() == before


def strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def test_sigint_during_selfplay_then_resume_ends_like_an_uninterrupted_run(micro):
    whole = micro[0]
    cwd = whole.parents[1]
    args = (f"data.cache_dir={cwd / 'cache'}", "run.name=interrupted")
    run = cwd / "runs" / "interrupted"
    shutil.copytree(whole / "pretrain", run / "pretrain")  # the same finished pretrain stage: skipped
    proc = stlm_run(cwd, *args)
    metrics = run / "selfplay" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.is_file() and any(r["kind"] == "train" for r in read_metrics(metrics))):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before self-play updated"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)  # as Ctrl-C: after update 1 or 2 of 6
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert "stopped by SIGINT" in out + err and "run the same command again to resume" in err
    stopped_at = int(latest_checkpoint(run / "selfplay").name.split("_")[1])
    assert 1 <= stopped_at < 6
    assert not (run / "report.md").exists()

    proc = stlm_run(cwd, *args)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert f"stage 2/2 selfplay: resuming at {stopped_at}/6" in out
    assert "stage 1/2 pretrain: done (12/12)" in out
    rows = [strip(read_metrics(r / "selfplay" / "metrics.jsonl")) for r in (run, whole)]
    assert rows[0] == rows[1] and len(rows[0]) == 6 + 2  # every update, evaluations at 0 and 6
    assert read_rows(run / "selfplay" / "ratings.jsonl") == read_rows(whole / "selfplay" / "ratings.jsonl")
    evaluations = [json.loads((r / "evaluation.json").read_text()) for r in (run, whole)]
    assert evaluations[0]["metrics"] == evaluations[1]["metrics"]
    assert evaluations[0]["samples"] == evaluations[1]["samples"]
