"""Exact resume: a self-play run hard-killed between updates (os._exit through the test-only
fault hook) and resumed plays the same games and ends with the same parameters as a run that
was never interrupted."""

from __future__ import annotations

import pytest
import torch

from _pretrain_helpers import final_weights, stlm
from _selfplay_fixtures import pretrained_ttt, selfplay_config, selfplay_overrides
from stlm_selfplay.runs import list_checkpoints
from stlm_selfplay.selfplay.loop import FAULT_ENV, selfplay
from stlm_selfplay.selfplay.ratings import read_rows
from stlm_selfplay.train.metrics import read_metrics

# everything that carries state across updates: pool (prioritized), RAE baselines, ppo epochs and
# minibatches (shuffle generator), self/pool/bot opponents, two games (Kuhn tables), ratings
RUN = dict(updates=5, games_per_update=8, objectives="[{name: ppo, epsilon: 0.2}]", ppo_epochs=2, minibatches=2,
           micro_batch_turns=8, eval__every=2, eval__episodes=2, eval__ratings=True, eval__pool_episodes=2,
           eval__rating_bootstrap=5, eval__bots="[random, optimal]", pool__sampling="prioritized",
           pool__snapshot_every=2, pool__max_size=2,
           stages="[{games: {tictactoe: 1.0, kuhn_poker: 1.0}, opponents: {random: 1.0, self: 1.0, pool: 1.0}}]")


@pytest.fixture(scope="session")
def ttt_checkpoint(tmp_path_factory):
    return pretrained_ttt(tmp_path_factory)


def _games(run_dir):
    return [(r["step"], r["games_digest"], r["ppo/loss"]) for r in read_metrics(run_dir / "metrics.jsonl", "train")]


def test_hard_kill_between_updates_resumes_exactly(tmp_path, ttt_checkpoint):
    """Killed after update 3 (its checkpoint not written) with a torn last metrics line: the resumed
    run replays update 3 and ends with the uninterrupted run's weights, metrics and ratings."""
    whole = selfplay_config(ttt_checkpoint, tmp_path, "whole", **RUN)
    selfplay(whole)

    args = ["selfplay", "none.yaml", *selfplay_overrides(ttt_checkpoint, tmp_path, "killed", **RUN)]
    threads = {"OMP_NUM_THREADS": str(torch.get_num_threads())}  # same kernels as this process
    (tmp_path / "none.yaml").write_text("{}\n")
    died = stlm(*args, env={FAULT_ENV: "3", **threads}, timeout=600)
    assert died.returncode == 17, died.stderr[-2000:]
    killed = tmp_path / "killed"
    assert [p.name for p in list_checkpoints(killed)] == ["step_2"]  # update 3 is lost
    assert [s for s, _, _ in _games(killed)] == [1, 2, 3]
    with open(killed / "metrics.jsonl", "a") as f:  # and a kill in the middle of a metrics write: a torn last line
        f.write('{"kind": "train", "step": 4, "games_dig')

    resumed = stlm(*args, env=threads, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout

    assert _games(killed) == _games(tmp_path / "whole")  # same games, same losses, update by update
    a, b = final_weights(tmp_path / "whole"), final_weights(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in read_metrics(killed / "metrics.jsonl", "eval")] == [0, 2, 4, 5]
    assert _same_eval(killed, tmp_path / "whole")
    assert read_rows(killed / "ratings.jsonl")
    assert read_rows(killed / "ratings.jsonl") == read_rows(tmp_path / "whole" / "ratings.jsonl")


def _same_eval(a, b) -> bool:
    """Eval rows equal except their wall-clock time."""
    strip = lambda rows: [{k: v for k, v in r.items() if k != "eval_s"} for r in rows]  # noqa: E731
    return strip(read_metrics(a / "metrics.jsonl", "eval")) == strip(read_metrics(b / "metrics.jsonl", "eval"))


@pytest.mark.slow
def test_ddp_two_processes_play_their_own_games(tmp_path, ttt_checkpoint):
    """torchrun with 2 CPU processes (gloo): each rank plays half the games, every rank takes the
    same number of micro-steps (one rank may have fewer turns), one checkpoint holds both ranks."""
    import subprocess
    import sys

    from stlm_selfplay.train.checkpoint import load_trainer_state

    (tmp_path / "none.yaml").write_text("{}\n")
    args = selfplay_overrides(ttt_checkpoint, tmp_path, "ddp", updates=2, games_per_update=8, micro_batch_turns=4,
                              advantages__normalize=True, eval__episodes=2)
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "stlm_selfplay", "selfplay", "none.yaml", *args],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    train = read_metrics(tmp_path / "ddp" / "metrics.jsonl", "train")
    assert [r["step"] for r in train] == [1, 2] and all(r["games"] == 8 for r in train)
    state = load_trainer_state(list_checkpoints(tmp_path / "ddp")[-1])
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    assert state["ranks"][0]["rollout_py"] != state["ranks"][1]["rollout_py"]  # each rank its own games
    again = stlm("selfplay", "none.yaml", *args, "selfplay.updates=3")  # 1 process cannot resume a 2-process run
    assert again.returncode == 2 and "process" in again.stderr
