"""Self-play pieces: config checks, opponent mix and pool, evaluation helpers, the loop's
handling of illegal model text, and the CLI's one-line errors."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from _pretrain_helpers import TINY_MODEL, stlm
from _selfplay_fixtures import selfplay_overrides, tiny_random_model
from stlm_selfplay.errors import UserError
from stlm_selfplay.config import load_config
from stlm_selfplay.selfplay.config import PoolConfig, SelfPlayConfig, StageConfig, check_selfplay
from stlm_selfplay.selfplay.evaluate import (average_kuhn_table, constrained_probs, kuhn_table, own_reach)
from stlm_selfplay.selfplay.opponents import LEARNER, POOL_SAMPLERS, Pool, plan_games, split_counts
from stlm_selfplay.selfplay.policies import ModelPolicy, RolloutRandom
from stlm_selfplay.train.metrics import read_metrics


@pytest.fixture(scope="module")
def tiny():
    return tiny_random_model(0)


# ----------------------------------------------------------------------------- config


def test_config_loads_selfplay_keys_and_rejects_bad_ones(tmp_path):
    cfg = load_config(None, ["selfplay.updates=7", "selfplay.pool.sampling=latest",
                                 "selfplay.stages=[{games: {nim: 1.0}, opponents: {random: 1.0}, mode: free}]"])
    assert isinstance(cfg.selfplay, SelfPlayConfig) and cfg.selfplay.updates == 7
    assert cfg.selfplay.stages[0].mode == "free" and cfg.selfplay.stages[0].games == {"nim": 1.0}
    with pytest.raises(UserError, match="updatse"):
        load_config(None, ["selfplay.updatse=3"])
    path = tmp_path / "sp.yaml"
    path.write_text("run: {name: x}\nselfplay: {games_per_update: 8, eval: {every: 3}}\n")
    cfg = load_config(path, ["run.seed=5"])
    assert (cfg.run.name, cfg.run.seed, cfg.selfplay.games_per_update, cfg.selfplay.eval.every) == ("x", 5, 8, 3)


@pytest.mark.parametrize("change, message", [
    ({"games_per_update": 10, "advantages": {"group_size": 4}}, "divisible"),
    ({"stages": [StageConfig(games={"tictactoe": 1.0}, opponents={"minimax_bot": 1.0})]}, "neither self, pool nor"),
    ({"stages": [StageConfig(games={"chess": 1.0}, opponents={"random": 1.0})]}, "unknown game"),
    ({"stages": [StageConfig(opponents={"random": 1.0})]}, "needs at least one game"),
    ({"objectives": [{"name": "ce"}]}, "exactly one RL objective"),
    ({"objectives": [{"name": "reinforce"}, {"name": "ppo"}]}, "exactly one RL objective"),
    ({"pool": PoolConfig(sampling="newest")}, "pool.sampling"),
    ({"advantages": {"estimator": "rloo"}}, "group_size >= 2"),
    ({"stages": [StageConfig(games={"nim": 1.0}, opponents={"self": 1.0}, mode="typed")]}, "mode"),
    ({"objectives": [{"name": "reinforce"}, {"name": "legal_mass"}]}, "legal_mass needs mode: free in every stage"),
])
def test_check_selfplay_names_the_problem(change, message):
    from stlm_selfplay.selfplay.config import AdvantageConfig

    if "advantages" in change:
        change = {**change, "advantages": AdvantageConfig(**change["advantages"])}
    with pytest.raises(UserError, match=message):
        check_selfplay(SelfPlayConfig(**change))


# ----------------------------------------------------------------------------- opponents


def test_split_counts_is_exact_and_proportional():
    assert split_counts(10, {"a": 1.0, "b": 1.0}) == {"a": 5, "b": 5}
    assert split_counts(7, {"a": 3.0, "b": 1.0, "c": 0.0}) == {"a": 5, "b": 2}
    assert sum(split_counts(13, {"a": 0.2, "b": 0.3, "c": 0.5}).values()) == 13


def test_plan_games_is_seeded_and_balances_seats(tiny):
    pool = Pool(PoolConfig())
    pool.add(tiny, 0)
    stage = StageConfig(games={"tictactoe": 1.0}, opponents={"self": 1.0, "pool": 1.0, "random": 2.0})
    a = plan_games(stage, 40, 2, pool, random.Random(1), seed=3, update=5)
    b = plan_games(stage, 40, 2, pool, random.Random(1), seed=3, update=5)
    assert [(s.seed, list(s.seats)) for s in a] == [(s.seed, list(s.seats)) for s in b]
    assert len(a) == 40
    for first, second in zip(a[::2], a[1::2]):  # a group shares seed, seats and opponent
        assert (first.seed, list(first.seats)) == (second.seed, list(second.seats))
    names = {n for s in a for n in s.seats}
    assert names <= {LEARNER, "pool/step_0", "tictactoe/random"} and "tictactoe/random" in names
    for group, spec in enumerate(a[::2]):  # the learner's seat alternates group by group
        assert spec.seats[group % 2] == LEARNER
    assert any(list(s.seats) == [LEARNER, LEARNER] for s in a)  # self-play games fill both seats
    c = plan_games(stage, 40, 2, pool, random.Random(1), seed=3, update=6)
    assert [s.seed for s in c] != [s.seed for s in a]


def test_pool_keeps_the_newest_and_samplers_weigh_as_documented(tiny):
    pool = Pool(PoolConfig(max_size=3, latest_decay=0.5, priority_power=2.0, score_decay=0.5))
    for update in range(5):
        pool.add(tiny, update)
    assert [s.name for s in pool.snapshots] == ["pool/step_2", "pool/step_3", "pool/step_4"]
    assert POOL_SAMPLERS["latest"](pool) == [0.25, 0.5, 1.0]
    pool.record({"pool/step_2": (4.0, 4), "pool/step_3": (0.0, 2)})  # learner always beats step_2
    s2, s3, s4 = (s.score for s in pool.snapshots)
    assert s2 == pytest.approx(0.5 ** 4 * 0.5 + (1 - 0.5 ** 4) * 1.0)
    assert s3 == pytest.approx(0.25 * 0.5) and s4 == 0.5
    weights = POOL_SAMPLERS["prioritized"](pool)
    assert weights[1] > weights[2] > weights[0]  # hardest opponent first
    draws = [pool.sample(random.Random(i)) for i in range(200)]
    pool.cfg.sampling = "prioritized"
    hard = [pool.sample(random.Random(i)) for i in range(200)]
    assert hard.count("pool/step_3") > draws.count("pool/step_3")
    restored = Pool(PoolConfig(max_size=3))
    restored.load_state_dict(pool.state_dict(), tiny)
    assert [(s.name, s.score) for s in restored.snapshots] == [(s.name, s.score) for s in pool.snapshots]
    assert all(torch.equal(p, q) for p, q in zip(restored.snapshots[0].model.parameters(), tiny.parameters()))


# ----------------------------------------------------------------------------- evaluation


def test_constrained_probs_equal_the_rollout_policy(tiny):
    from stlm_selfplay.envs import make

    games = []
    for moves in ([], ["4"], ["0", "4", "8"]):
        g = make("tictactoe")
        for m in moves:
            g.step(m)
        games.append(g)
    probs = constrained_probs(tiny, games, temperature=0.7)
    decisions = ModelPolicy(tiny, temperature=0.7).act(games, [g.current_player for g in games], RolloutRandom(0))
    for p, d, g in zip(probs, decisions, games):
        assert list(p) == g.legal_actions()
        assert list(p.values()) == pytest.approx(d.probs, abs=1e-6)


def test_kuhn_table_and_reach_weighted_average(tiny):
    table = kuhn_table(tiny)
    assert len(table) == 12 and all(sum(p.values()) == pytest.approx(1.0) for p in table.values())
    first = {s: ({"check": 1.0, "bet": 0.0} if s[1:] in ("", "p") else {"call": 1.0, "fold": 0.0}) for s in table}
    second = {s: ({"check": 0.5, "bet": 0.5} if s[1:] in ("", "p") else {"call": 0.0, "fold": 1.0}) for s in table}
    assert own_reach(second, "Kpb") == 0.5 and own_reach(second, "Kb") == 1.0 and own_reach(first, "Jpb") == 1.0
    avg = average_kuhn_table([first, second])
    assert avg["K"] == {"check": 0.75, "bet": 0.25}  # root states: plain mean
    # "Kpb" is reached by first always and by second half the time: (1 * 1 + 0.5 * 0) / 1.5
    assert avg["Kpb"]["call"] == pytest.approx(2 / 3)


# ----------------------------------------------------------------------------- the loop


def test_free_mode_illegal_text_is_counted_not_raised(tmp_path):
    from stlm_selfplay.selfplay.loop import selfplay

    # a fresh (untrained) model writing free text: most of its moves are illegal
    cfg = load_config(None, TINY_MODEL + selfplay_overrides(
        "", tmp_path, "free", updates=2, games_per_update=8, eval__episodes=4, advantages__illegal_penalty=0.5,
        stages="[{games: {tictactoe: 1.0}, opponents: {random: 0.5, self: 0.5}, mode: free}]"))
    summary = selfplay(cfg)
    assert summary["update"] == 2
    train = read_metrics(tmp_path / "free" / "metrics.jsonl", "train")
    assert [r["step"] for r in train] == [1, 2]
    for row in train:
        assert row["turns"] > 0 and 0 < row["illegal_rate"] <= 1
        assert row["reward_mean"] < 0  # illegal moves lose the game and pay the penalty
    evals = read_metrics(tmp_path / "free" / "metrics.jsonl", "eval")
    assert evals[-1]["tictactoe/random/illegal_rate"] > 0


def test_free_mode_legal_mass_trains_on_the_rl_turns(tmp_path):
    from stlm_selfplay.selfplay.loop import selfplay

    cfg = load_config(None, TINY_MODEL + selfplay_overrides(
        "", tmp_path, "legal", updates=2, games_per_update=8, eval__episodes=2,
        objectives="[{name: reinforce}, {name: legal_mass, weight: 2.0}]",
        stages="[{games: {tictactoe: 1.0}, opponents: {random: 0.5, self: 0.5}, mode: free, "
               "game_options: {tictactoe: {illegal: 'retry:1'}}}]"))
    assert selfplay(cfg)["update"] == 2
    train = read_metrics(tmp_path / "legal" / "metrics.jsonl", "train")
    for row in train:  # an untrained model: the legal moves hold little of its mass
        assert 0 < row["legal_mass/legal_mass"] < 0.5
        assert row["legal_mass/loss"] >= -math.log(row["legal_mass/legal_mass"]) - 1e-4  # Jensen: -mean log >= -log mean


def test_the_free_recipe_keeps_its_fix():
    """configs/selfplay/tictactoe-free.yaml (bench_selfplay's ttt-free): free mode with legal_mass and its
    greedy-legality hinge, the retry rule in training games, an illegal-move penalty and a decaying lr
    (benchmarks/RESULTS.md)."""
    from pathlib import Path

    sp = load_config(str(Path(__file__).resolve().parents[2] / "configs/selfplay/tictactoe-free.yaml")).selfplay
    check_selfplay(sp)
    assert [s.mode for s in sp.stages] == ["free"]
    assert {"name": "legal_mass", "weight": 2.0, "greedy_weight": 1.0, "greedy_margin": 0.693} in sp.objectives
    assert sp.lr_schedule == "cosine" and sp.min_lr_ratio == 0.1
    assert sp.stages[0].game_options == {"tictactoe": {"illegal": "retry:1"}} and sp.advantages.illegal_penalty > 0
    assert sp.eval.mode == ""  # evaluated in free mode, under the game's default `lose` rule


def test_cli_errors_are_one_line(tmp_path, capsys):
    from stlm_selfplay.cli import main

    (tmp_path / "c.yaml").write_text("selfplay: {updates: 2}\n")
    assert main(["selfplay", "missing.yaml"]) == 2
    assert capsys.readouterr().err.startswith("error: config file 'missing.yaml' not found")
    assert main(["selfplay", "c.yaml", "selfplay.stages=[{games: {tictactoe: 1.0}, opponents: {rando: 1.0}}]"]) == 2
    err = capsys.readouterr().err
    assert "rando" in err and "did you mean 'random'" in err and len(err.strip().splitlines()) == 1
    assert main(["selfplay", "c.yaml", "--print-config"]) == 0
    assert "games_per_update: 64" in capsys.readouterr().out
    # the real command line: one line on stderr, exit 2, no traceback, nothing written
    bad = stlm("selfplay", "c.yaml", "selfplay.init_from=no/such/run")
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "no/such/run" in bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_auxiliary_objective_kl_reference_and_curriculum(tmp_path):
    from stlm_selfplay.selfplay.loop import selfplay

    stages = ("[{games: {tictactoe: 1.0}, opponents: {self: 1.0}, until_update: 1},"
              " {games: {kuhn_poker: 1.0}, opponents: {random: 1.0}, temperature: 0.5}]")
    cfg = load_config(None, TINY_MODEL + selfplay_overrides(
        "", tmp_path, "aux", updates=2, games_per_update=4, stages=stages, eval__episodes=2, eval__games="[tictactoe]",
        objectives="[{name: grpo, beta: 0.1}, {name: ce, weight: 0.5}]"))
    selfplay(cfg)
    train = read_metrics(tmp_path / "aux" / "metrics.jsonl", "train")
    assert [r["stage"] for r in train] == [0, 1]  # until_update: 1 moves on to kuhn_poker after one update
    for row in train:
        assert row["aux/ce/loss"] > 0 and row["aux/ce/bpb"] > 0  # ce on the played transcripts
        assert "grpo/kl" in row and row["grpo/kl"] >= 0  # k3 KL to the initial policy
    assert train[0]["grpo/kl"] == pytest.approx(0.0, abs=1e-6)  # first update: still the reference
    assert train[1]["grpo/kl"] > 0


def test_auxiliary_objectives_get_the_model_outputs_they_ask_for(tmp_path):
    """An aux objective's model_kwargs reach the forward: early_exit gets per-layer exit logits."""
    from stlm_selfplay.selfplay.loop import selfplay

    cfg = load_config(None, TINY_MODEL + ["model.overrides.n_layers=2"] + selfplay_overrides(
        "", tmp_path, "aux-ee", updates=1, games_per_update=4, eval__episodes=2, eval__games="[tictactoe]",
        objectives="[{name: reinforce}, {name: early_exit, weight: 0.5}]"))
    selfplay(cfg)
    row = read_metrics(tmp_path / "aux-ee" / "metrics.jsonl", "train")[0]
    assert row["aux/early_exit/exit0_bpb"] > 0 and row["aux/early_exit/exit1_bpb"] > 0
    assert row["aux/early_exit/exit0_bpb"] != row["aux/early_exit/exit1_bpb"]


def test_bundled_selfplay_config_is_valid(repo_root):
    cfg = load_config(repo_root / "configs" / "selfplay" / "tictactoe-constrained.yaml")
    check_selfplay(cfg.selfplay)
    assert cfg.selfplay.stages[0].opponents == {"random": 0.5, "self": 0.3, "pool": 0.2}
    assert cfg.selfplay.advantages.normalize and cfg.run.name == "ttt-selfplay"


def test_stage_ends_by_update_count_or_eval_threshold():
    from stlm_selfplay.selfplay.loop import stage_done

    by_count = StageConfig(games={"tictactoe": 1.0}, opponents={"random": 1.0}, until_update=5)
    assert not stage_done(by_count, 4, {}) and stage_done(by_count, 5, {})
    by_eval = StageConfig(games={"tictactoe": 1.0}, opponents={"random": 1.0},
                          until_metric="tictactoe/random/win_rate", until_value=0.7)
    assert not stage_done(by_eval, 50, {}) and not stage_done(by_eval, 50, {"tictactoe/random/win_rate": 0.69})
    assert stage_done(by_eval, 1, {"tictactoe/random/win_rate": 0.7})
    assert not stage_done(StageConfig(), 10 ** 6, {"x": 1.0})  # no limit: runs to selfplay.updates
