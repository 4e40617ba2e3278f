"""The run report and the before/after significance tests, on a run folder written by hand (no
training): which sections and plots appear, that every plot is a valid PNG, that `stlm report`
rebuilds the same file, and the z statistics against hand computations."""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path

import pytest

from stlm_selfplay.before_after import ALPHA, check_targets, one_sided_z, significance_tests, target_checks
from stlm_selfplay.errors import UserError
from stlm_selfplay.cli import main
from stlm_selfplay.report import write_report
from stlm_selfplay.selfplay.evaluate import TICTACTOE_POSITIONS as POSITIONS
from stlm_selfplay.selfplay.ratings import append_rows

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_valid_png(path: Path) -> None:
    """PNG signature, then an IHDR chunk with a non-empty size; and PIL can decode it."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    assert width > 50 and height > 50
    from PIL import Image

    with Image.open(path) as image:
        image.verify()


def jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def seat_metrics(win: float, draw: float, game: str = "tictactoe", bot: str = "random") -> dict:
    out = {}
    for seat in (0, 1):
        w = max(win - 0.1 * seat, 0.0)
        out.update({f"{game}/{bot}/seat{seat}/win_rate": w, f"{game}/{bot}/seat{seat}/draw_rate": draw,
                    f"{game}/{bot}/seat{seat}/loss_rate": 1 - w - draw})
    overall = max(win - 0.05, 0.0)
    out.update({f"{game}/{bot}/win_rate": overall, f"{game}/{bot}/loss_rate": 1 - overall - draw,
                f"{game}/{bot}/non_loss_rate": overall + draw})
    return out


def staged_run(root: Path, kuhn: bool = True) -> Path:
    """A run folder shaped like `stlm run`'s, with made-up numbers."""
    run = root / "runs" / "handmade"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("run:\n  name: handmade\n  out_dir: runs\nstages: [pretrain, selfplay]\n")
    (run / "command.txt").write_text("stlm run configs/handmade.yaml\n")
    jsonl(run / "pretrain" / "metrics.jsonl",
          [{"step": s, "kind": "train", "loss": 2 / s, "ce/bpb": 3 / s, "bytes_seen": 100 * s} for s in (1, 2, 3, 4)]
          + [{"step": 4, "kind": "val", "loss": 0.6, "bpb": 0.9}])
    evals = []
    for step in (0, 5, 10):
        row = {"step": step, "kind": "eval", **seat_metrics(0.5 + step / 50, 0.1), "tictactoe/optimal_rate": 0.6 + step / 100}
        if kuhn:
            row.update({"kuhn_poker/exploitability": 0.4 - step / 100, "kuhn_poker/avg_exploitability": 0.4})
        evals.append(row)
    train = [{"step": s, "kind": "train", "illegal_rate": 0.0, "games": 8, "games_digest": "x"} for s in range(1, 11)]
    jsonl(run / "selfplay" / "metrics.jsonl", train + evals)
    append_rows(run / "selfplay" / "ratings.jsonl",
                [{"step": 10, "player": p, "elo": e, "lo": e - 50, "hi": e + 50, "games": 40, "anchor": "random",
                  "game": "tictactoe"} for p, e in (("step_10", 120.0), ("random", 0.0), ("optimal", 300.0))])
    before = {**seat_metrics(0.55, 0.1), **seat_metrics(0.0, 0.2, bot="minimax"), "tictactoe/optimal_rate": 0.58}
    after = {**seat_metrics(0.75, 0.1), **seat_metrics(0.0, 0.3, bot="minimax"), "tictactoe/optimal_rate": 0.68}
    metrics = {"pretrained": before, "final": after}
    evaluation = {"settings": {"models": {"pretrained": "runs/handmade/pretrain/checkpoints/step_4",
                                          "final": "runs/handmade/selfplay/checkpoints/step_10"},
                               "games": ["tictactoe"], "bots": ["random", "minimax"], "episodes": 400,
                               "temperature": 0.0, "mode": "constrained", "seed": 1, "sample_games": 1},
                  "metrics": metrics, "tests": significance_tests(metrics, ["tictactoe"], 400),
                  "targets": target_checks(after, {"tictactoe/minimax/loss_rate": 0.25}, {"tictactoe/optimal_rate": 0.85},
                                           400),
                  "samples": [{"game": "tictactoe", "bot": "random", "seat": 0, "side": "x", "outcome": "win",
                               "transcript": "ttt x ...|...|... ?012345678>[4]\nttt end x+1 o-1\n"}]}
    (run / "evaluation.json").write_text(json.dumps(evaluation))
    return run


def test_one_sided_z_matches_hand_computation():
    # 40/100 -> 60/100: p = 0.5, se = sqrt(0.25 * 0.02) = 0.070711, z = 0.2 / 0.070711 = 2.828427
    assert one_sided_z(40, 100, 60, 100) == pytest.approx(2.8284271, rel=1e-6)
    # unequal n: 30/100 -> 90/200: p = 0.4, se = sqrt(0.24 * 0.015) = 0.06, z = 0.15 / 0.06 = 2.5
    assert one_sided_z(30, 100, 90, 200) == pytest.approx(2.5, rel=1e-9)
    assert one_sided_z(60, 100, 40, 100) == pytest.approx(-2.8284271, rel=1e-6)


def test_significance_tests_pick_the_acceptance_metrics_and_decide():
    before = {**seat_metrics(0.55, 0.1), **seat_metrics(0.0, 0.2, bot="minimax"), "tictactoe/optimal_rate": 0.58}
    after = {**seat_metrics(0.60, 0.1), **seat_metrics(0.0, 0.1, bot="minimax"), "tictactoe/optimal_rate": 0.62}
    tests = {t["metric"]: t for t in significance_tests({"pretrained": before, "final": after}, ["tictactoe"], 400)}
    assert set(tests) == {"tictactoe/random/seat0/win_rate", "tictactoe/random/seat1/win_rate",
                          "tictactoe/minimax/non_loss_rate", "tictactoe/optimal_rate"}
    seat0 = tests["tictactoe/random/seat0/win_rate"]  # 220/400 -> 240/400
    z = one_sided_z(220, 400, 240, 400)
    assert seat0["kind"] == "rise" and seat0["z"] == pytest.approx(z)
    assert seat0["p"] == pytest.approx(0.5 * math.erfc(z / math.sqrt(2)))
    assert not seat0["passed"]  # +5 points on 400 games is within the noise at alpha = 0.01
    optimal = tests["tictactoe/optimal_rate"]  # 0.58 -> 0.62 over 4,520 positions: z ~ 3.8
    assert optimal["n"] == POSITIONS and optimal["z"] > 3.5 and optimal["passed"]
    drop = tests["tictactoe/minimax/non_loss_rate"]  # 0.15 -> 0.05 non-loss over 800 games: a real drop
    assert drop["kind"] == "no worse" and drop["z"] < -5 and drop["p"] < ALPHA and not drop["passed"]


def test_targets_are_met_by_the_bound_and_match_rates_get_a_one_sample_z_test():
    final = {"tictactoe/minimax/loss_rate": 0.186, "tictactoe/minimax/seat0/loss_rate": 0.24,
             "kuhn_poker/exploitability": 0.342, "tictactoe/optimal_rate": 0.68}
    checks = {t["metric"]: t for t in target_checks(
        final, {"tictactoe/minimax/loss_rate": 0.25, "tictactoe/minimax/seat0/loss_rate": 0.25,
                "kuhn_poker/exploitability": 0.2, "tictactoe/minimax/draw_rate": 0.0},
        {"tictactoe/optimal_rate": 0.6}, 400)}
    both = checks["tictactoe/minimax/loss_rate"]  # both seats: n = 800; se = sqrt(0.25 * 0.75 / 800) = 0.0153093
    assert both["met"] and both["n"] == 800 and both["z"] == pytest.approx(0.064 / 0.0153093, rel=1e-5)
    assert both["p"] == pytest.approx(0.5 * math.erfc(both["z"] / math.sqrt(2))) and both["p"] < ALPHA
    seat = checks["tictactoe/minimax/seat0/loss_rate"]  # one seat: n = 400; 0.24 vs 0.25 is within the noise
    assert seat["met"] and seat["n"] == 400 and seat["z"] == pytest.approx(0.01 / math.sqrt(0.1875 / 400))
    assert seat["p"] > ALPHA
    kuhn = checks["kuhn_poker/exploitability"]  # exact: no test
    assert not kuhn["met"] and kuhn["n"] is None and kuhn["p"] is None
    assert checks["tictactoe/optimal_rate"]["met"] and checks["tictactoe/optimal_rate"]["kind"] == "at least"
    missing = checks["tictactoe/minimax/draw_rate"]  # not in the metrics: never met
    assert missing["final"] is None and not missing["met"]


@pytest.mark.parametrize("key, message", [
    ("chess/minimax/loss_rate", "'chess/minimax/loss_rate' is not a metric"),
    ("tictactoe/nash/loss_rate", "'tictactoe/nash/loss_rate' is not a metric"),
    ("tictactoe/minimax/lose_rate", "rates: win_rate, draw_rate, loss_rate, illegal_rate, non_loss_rate"),
    ("tictactoe/exploitability", "GAME/EXACT"),
])
def test_a_target_that_names_no_metric_is_refused(key, message):
    games, bots = ["tictactoe", "kuhn_poker"], ["random", "minimax", "nash"]
    check_targets(games, bots, {"tictactoe/minimax/loss_rate": 0.25, "tictactoe/minimax/seat1/loss_rate": 0.3,
                                "kuhn_poker/exploitability": 0.2}, {"tictactoe/optimal_rate": 0.85})
    with pytest.raises(UserError, match=message):
        check_targets(games, bots, {key: 0.25}, {})
    with pytest.raises(UserError, match="must be >= 0"):
        check_targets(games, bots, {}, {"tictactoe/optimal_rate": -1})


def test_report_has_every_section_and_valid_plots(tmp_path):
    run = staged_run(tmp_path)
    text = write_report(run).read_text()
    headings = re.findall(r"^## (.+)$", text, re.M)
    assert headings == ["Pretraining", "Self-play", "Ratings", "Before and after", "Sample games", "Reproduce"]
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(Path(i).name for i in images) == ["exploitability.png", "illegal_rate.png", "optimal_rate.png",
                                                      "pretraining.png", "selfplay_matches.png"]
    for image in images:
        assert_valid_png(run / image)
    assert "| step_10 | 120 | [70, 170] | 40 |" in text  # the rating table
    # before/after: both models side by side, by seat, with intervals; the tests with their verdicts
    assert "| tictactoe | random | 0 | 0.550 [0.50, 0.60] / 0.100 [0.07, 0.13] / 0.350 [0.30, 0.40] | " \
           "0.750 [0.71, 0.79] / 0.100 [0.07, 0.13] / 0.150 [0.12, 0.19] |" in text
    assert "| tictactoe/random/seat0/win_rate | rise | 400 | 0.550 | 0.750 |" in text and "| pass |" in text
    assert "Targets: 0 of 2 met by the final model." in text  # loss rate 0.70 > 0.25; optimal rate 0.68 < 0.85
    assert "| tictactoe/minimax/loss_rate | at most 0.25 | 0.7000 | NO | 800 | -29.39 | 1 |" in text
    assert "| tictactoe/optimal_rate | at least 0.85 | 0.6800 | NO | - | - | - |" in text
    assert "stlm run configs/handmade.yaml" in text and "run:\n  name: handmade" in text
    assert "stlm run runs/handmade/config.yaml run.name=handmade-again" in text
    assert "```text\nttt x ...|...|... ?012345678>[4]\nttt end x+1 o-1\n```" in text
    assert "the model as x (seat 0) vs random: the model wins" in text


def test_report_leaves_out_what_the_run_lacks(tmp_path):
    run = staged_run(tmp_path, kuhn=False)
    (run / "evaluation.json").unlink()
    text = write_report(run).read_text()
    assert "exploitability.png" not in text and not (run / "plots" / "exploitability.png").exists()
    assert "## Before and after" not in text and "## Sample games" not in text


def test_stlm_report_rebuilds_the_same_file_by_run_name(tmp_path, monkeypatch, capsys):
    run = staged_run(tmp_path)
    first = write_report(run).read_text()
    (run / "report.md").unlink()
    monkeypatch.chdir(tmp_path)
    assert main(["report", "handmade"]) == 0  # a run name under runs/
    assert (run / "report.md").read_text() == first
    assert "report: runs/handmade/report.md" in capsys.readouterr().out


def test_report_of_a_plain_pretrain_run(tmp_path):
    run = tmp_path / "pre"
    run.mkdir()
    (run / "config.yaml").write_text("run: {name: pre}\n")
    jsonl(run / "metrics.jsonl", [{"step": 2, "kind": "train", "ce/bpb": 2.0, "bytes_seen": 64},
                                  {"step": 2, "kind": "val", "bpb": 2.5}])
    text = write_report(run).read_text()
    assert re.findall(r"^## (.+)$", text, re.M) == ["Pretraining", "Reproduce"]
    assert_valid_png(run / "plots" / "pretraining.png")
