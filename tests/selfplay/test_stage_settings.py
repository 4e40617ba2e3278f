"""Per-stage training settings (StageConfig.objectives / search / replay, selfplay/phases.py): a
stage's own settings take effect at its boundary, configs without them run as before, bad ones are
one-line user errors, and a run resumes exactly across the boundary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from _pretrain_helpers import TINY_MODEL, stlm
from _selfplay_fixtures import selfplay_overrides
from stlm_selfplay.config import ScheduleConfig, load_config
from stlm_selfplay.errors import UserError
from stlm_selfplay.selfplay.config import check_selfplay, same_training, stage_settings, training_groups
from stlm_selfplay.train.optim import lr_factor

ROOT = Path(__file__).resolve().parents[2]
TTT_SEARCH = ("{games: {tictactoe: 1.0}, opponents: {self: 0.5, random: 0.5}, until_update: 2, "
              "search: {simulations: 4, playouts: 1, symmetries: true}, objectives: [{name: search_policy}], "
              "replay: {capacity: 200, batch_turns: 6, steps_per_update: 3}}")
KUHN_MMD = ("{games: {kuhn_poker: 1.0}, opponents: {self: 1.0}, objectives: [{name: mmd, values: exact, "
            "prox_coef: 1.0, alpha: 0.5, magnet_every: 1, entropy_coef: 0.5, entropy_coef_final: 0.0, "
            "entropy_decay_steps: 4}]}")
# ttt with search + replay for 2 updates, then Kuhn by mmd exact; the run-level objectives are ppo
TWO_PHASES = dict(updates=4, games_per_update=4, ppo_epochs=2, minibatches=1, objectives="[{name: ppo}]",
                  eval__episodes=1, eval__games="[tictactoe, kuhn_poker]", lr_schedule="cosine",
                  stages=f"[{TTT_SEARCH}, {KUHN_MMD}]")


def overrides(tmp_path, name: str, **selfplay) -> list[str]:
    return TINY_MODEL + ["run.checkpoint_every=1"] + selfplay_overrides("", tmp_path, name, **selfplay)


def rows(run: Path, kind: str = "train") -> list[dict]:
    timing = ("games_per_s", "rollout_s", "update_s", "update_cpu_s", "eval_s")
    out = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in timing and k != "time"} for r in out if r.get("kind") == kind]


# TWO_PHASES's lr schedule (the run's) and where its optimizer steps sit on it: stage 0's 6 replay
# steps, then stage 1's 4 mmd steps: the k-th of n steps of update u at (u + k / n) x 2
RUN_SCHEDULE = ScheduleConfig(steps=8, kind="cosine", warmup_steps=0, min_lr_ratio=0.1)
STEP_POSITIONS = [0, 2 / 3, 4 / 3, 2, 8 / 3, 10 / 3, 4, 5, 6, 7]


def record_rl_lrs(monkeypatch) -> list[float]:
    """The lr of every RL micro-step of the self-play runs that follow, appended as they train."""
    from stlm_selfplay.selfplay import update as U

    seen, original = [], U.rl_loss

    def recording(learner, *args):
        seen.append(learner.optimizer.param_groups[0]["lr"])
        return original(learner, *args)

    monkeypatch.setattr(U, "rl_loss", recording)
    return seen


def expected_lrs(scales, positions=STEP_POSITIONS) -> list[float]:
    """peak lr 2e-3 x each step's stage multiplier x the run's schedule at the step's position."""
    return [2e-3 * s * lr_factor(p, RUN_SCHEDULE) for s, p in zip(scales, positions)]


def test_stage_settings_replace_the_run_level_ones_only_where_set(tmp_path):
    sp = load_config(None, overrides(tmp_path, "x", **TWO_PHASES)).selfplay
    ttt, kuhn = stage_settings(sp, 0), stage_settings(sp, 1)
    assert ttt.search.simulations == 4 and ttt.replay.capacity == 200 and ttt.objectives == [{"name": "search_policy"}]
    assert kuhn.objectives[0]["name"] == "mmd"
    assert kuhn.search == sp.search and kuhn.search.simulations == 0 and kuhn.replay.capacity == 0  # inherited
    assert not same_training(sp, 0, 1)
    assert [(where, idx) for where, _, idx in training_groups(sp)] == [("selfplay.stages[0]", [0]),
                                                                      ("selfplay.stages[1]", [1])]
    check_selfplay(sp)


@pytest.mark.parametrize("path", ["configs/quickstart.yaml", "configs/selfplay/tictactoe-replay.yaml",
                                  "configs/selfplay/kuhn-exact.yaml", "configs/selfplay/tictactoe-constrained.yaml",
                                  "configs/selfplay/tictactoe-free.yaml"])
def test_configs_without_stage_settings_train_every_stage_with_the_run_level_ones(path):
    sp = load_config(str(ROOT / path)).selfplay
    check_selfplay(sp)
    if any(s.objectives or s.search or s.replay for s in sp.stages):
        return  # the quickstart sets them (tested above and in the e2e run)
    assert all(stage_settings(sp, i) == sp for i in range(len(sp.stages)))
    assert all(same_training(sp, i - 1, i) for i in range(1, len(sp.stages)))
    assert [(w, i) for w, _, i in training_groups(sp)] == [("selfplay", list(range(len(sp.stages))))]


@pytest.mark.parametrize("stage, message", [
    # search on an imperfect-information game
    ("{games: {kuhn_poker: 1.0}, opponents: {self: 1.0}, search: {simulations: 8}, objectives: [{name: search_policy}]}",
     r"selfplay.stages\[1\].search needs two-player zero-sum games of perfect information; 'kuhn_poker' has 2 players "
     "and a hidden deal"),
    # replay with an on-policy objective
    ("{games: {tictactoe: 1.0}, opponents: {self: 1.0}, replay: {capacity: 10}}",
     r"selfplay.stages\[1\].replay trains search_policy's visit targets; ppo is on-policy"),
    # exact values for a game too large to enumerate
    ("{games: {tictactoe: 1.0}, opponents: {self: 1.0}, objectives: [{name: mmd, values: exact}]}", "nodes"),
    # an unknown objective
    ("{games: {tictactoe: 1.0}, opponents: {self: 1.0}, objectives: [{name: mmdd}]}",
     r"selfplay.stages\[1\]: unknown objective 'mmdd'"),
    # search moves with an objective that does not train on them (the run-level ppo inherited)
    ("{games: {tictactoe: 1.0}, opponents: {self: 1.0}, search: {simulations: 4}}",
     r"selfplay.stages\[1\].objectives: search_policy trains on search visit targets"),
])
def test_bad_stage_settings_are_one_line_errors_naming_the_stage(tmp_path, stage, message):
    first = "{games: {tictactoe: 1.0}, opponents: {self: 1.0}, until_update: 1}"
    cfg = load_config(None, overrides(tmp_path, "bad", objectives="[{name: ppo}]", stages=f"[{first}, {stage}]"))
    with pytest.raises(UserError, match=message) as info:
        check_selfplay(cfg.selfplay)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("stage, message", [
    ("{games: {tictactoe: 1.0}, search: {simulatons: 8}}", r"unknown config key 'selfplay.stages\[0\].search.simulatons' in overrides \(did you mean "
     r"'selfplay.stages\[0\].search.simulations'\?\)"),
    ("{games: {tictactoe: 1.0}, replay: {capacity: lots}}", r"bad value for config key .*capacity"),
    ("{games: {tictactoe: 1.0}, objectives: 3}", r"bad value for config key .*objectives"),
    ("{games: {tictactoe: 1.0}, search: {prior: unifrom}}", r"selfplay.stages\[0\].search.prior' must be one of "
     r"model, uniform, got 'unifrom' \(did you mean 'uniform'\?\)"),
])
def test_unknown_keys_and_wrong_types_in_stage_settings_are_refused(tmp_path, stage, message):
    with pytest.raises(UserError, match=message):
        check_selfplay(load_config(None, overrides(tmp_path, "bad", stages=f"[{stage}]")).selfplay)


def test_the_cli_refuses_search_on_a_stage_that_cannot_be_searched_with_exit_2(tmp_path):
    (tmp_path / "none.yaml").write_text("{}\n")
    stage = "{games: {kuhn_poker: 1.0}, opponents: {self: 1.0}, search: {simulations: 8}, objectives: [{name: search_policy}]}"
    done = stlm("selfplay", "none.yaml", *overrides(tmp_path, "cli", stages=f"[{stage}]"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: selfplay.stages[0].search needs two-player zero-sum games of perfect information; 'kuhn_poker' has 2 "
        "players and a hidden deal"]


def test_each_phase_trains_its_own_objective_from_its_own_clock_and_resumes_exactly_across_the_boundary(
        tmp_path, monkeypatch):
    from stlm_selfplay.runs import latest_checkpoint, load_model
    from stlm_selfplay.selfplay import update as U
    from stlm_selfplay.selfplay.loop import selfplay

    seen = []  # (objective, batch.step, batch.total_steps, lr) of every RL micro-step
    original = U.rl_loss

    def recording(learner, part, adv, temperature, step, *args):
        seen.append((learner.rl.name, step, learner.total_steps, learner.optimizer.param_groups[0]["lr"]))
        return original(learner, part, adv, temperature, step, *args)

    monkeypatch.setattr(U, "rl_loss", recording)
    selfplay(load_config(None, overrides(tmp_path, "whole", **TWO_PHASES)))
    # stage 0: search_policy, 3 replay steps per update, clock 0..5 of 4 x 3; stage 1 (updates 3-4):
    # mmd, ppo_epochs x minibatches = 2 steps per update, its clock restarting at 0 of (4 - 2) x 2
    assert [s[:3] for s in seen] == ([("search_policy", k, 12) for k in range(6)]
                                     + [("mmd", k, 4) for k in range(4)])
    # one cosine over the run's updates (4 x 2 run-level steps), not restarted: the k-th of n steps of
    # update u at position (u + k / n) x 2
    assert [s[3] for s in seen] == pytest.approx(expected_lrs([1.0] * 10), rel=1e-12)
    whole = rows(tmp_path / "whole")
    assert [r["stage"] for r in whole] == [0, 0, 1, 1]
    assert ["replay_turns" in r for r in whole] == [True, True, False, False]  # the buffer ends with its phase
    assert all("search_policy/loss" in r for r in whole[:2]) and all("mmd/loss" in r for r in whole[2:])
    assert all("mmd/kl_magnet" in r and "search_policy/loss" not in r for r in whole[2:])

    seen.clear()
    cfg = load_config(None, overrides(tmp_path, "split", **TWO_PHASES))
    selfplay(cfg, max_updates=2)  # stops at the boundary: its checkpoint is the new phase's start
    selfplay(cfg, max_updates=1)  # and inside the second phase
    selfplay(cfg)
    assert [s[:3] for s in seen] == [("search_policy", k, 12) for k in range(6)] + [("mmd", k, 4) for k in range(4)]
    assert rows(tmp_path / "split") == whole
    assert rows(tmp_path / "split", "eval") == rows(tmp_path / "whole", "eval")
    a, b = (load_model(latest_checkpoint(tmp_path / n)).state_dict() for n in ("whole", "split"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_stages_lr_scale_multiplies_the_run_schedule_only_while_that_stage_trains(tmp_path, monkeypatch):
    from stlm_selfplay.selfplay.loop import selfplay

    seen = record_rl_lrs(monkeypatch)
    scaled = dict(TWO_PHASES, stages=f"[{TTT_SEARCH}, {KUHN_MMD[:-1]}, lr_scale: 0.25}}]")
    selfplay(load_config(None, overrides(tmp_path, "scaled", **scaled)))
    scale = [1.0] * 6 + [0.25] * 4  # stage 0 (6 replay steps) at 1, stage 1 (4 mmd steps) at lr_scale
    assert seen == pytest.approx(expected_lrs(scale), rel=1e-12)
    assert [r["lr"] for r in rows(tmp_path / "scaled")][2:] == pytest.approx(expected_lrs([0.25, 0.25], [5, 7]),
                                                                              rel=1e-12)


def test_a_stages_warmup_ramps_its_lr_scale_from_the_stage_start_and_resumes_exactly(tmp_path, monkeypatch):
    """Stage 1 (2 mmd updates of 2 steps each, warmup_updates 2): its steps' multipliers are
    0.25 x (1/4, 2/4, 3/4, 4/4) of the run's schedule: (updates into the stage + (k + 1) / n) / 2;
    a run split at the stage boundary (the stage start from the checkpoint) trains the same."""
    from stlm_selfplay.runs import latest_checkpoint, load_model
    from stlm_selfplay.selfplay.loop import selfplay

    seen = record_rl_lrs(monkeypatch)
    warm = dict(TWO_PHASES, stages=f"[{TTT_SEARCH}, {KUHN_MMD[:-1]}, lr_scale: 0.25, warmup_updates: 2}}]")
    selfplay(load_config(None, overrides(tmp_path, "warm", **warm)))
    scale = [1.0] * 6 + [0.25 * f for f in (0.25, 0.5, 0.75, 1.0)]
    assert seen == pytest.approx(expected_lrs(scale), rel=1e-12)
    split = load_config(None, overrides(tmp_path, "split", **warm))
    selfplay(split, max_updates=2)  # stops where stage 1 begins: its start comes back from the checkpoint
    seen.clear()
    selfplay(split)
    assert seen == pytest.approx(expected_lrs(scale[6:], STEP_POSITIONS[6:]), rel=1e-12)
    a, b = (load_model(latest_checkpoint(tmp_path / n)).state_dict() for n in ("warm", "split"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("value", [0.0, -1.0])
def test_a_stage_lr_scale_that_is_not_positive_is_a_one_line_error(tmp_path, value):
    cfg = load_config(None, overrides(tmp_path, "bad", stages=f"[{{games: {{tictactoe: 1.0}}, opponents: {{self: 1.0}}, lr_scale: {value}}}]"))
    with pytest.raises(UserError, match=rf"selfplay.stages\[0\].lr_scale must be > 0 .*got {value}"):
        check_selfplay(cfg.selfplay)


def test_a_negative_stage_warmup_is_a_one_line_error(tmp_path):
    cfg = load_config(None, overrides(tmp_path, "bad", stages="[{games: {tictactoe: 1.0}, opponents: {self: 1.0}, "
                                                              "warmup_updates: -1}]"))
    with pytest.raises(UserError, match=r"selfplay.stages\[0\].warmup_updates must be >= 0 .*got -1"):
        check_selfplay(cfg.selfplay)
