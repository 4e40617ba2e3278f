"""Shared by the self-play tests: a tiny model pretrained on random-play tic-tac-toe transcripts
(built once per session with the pretraining code on the `games` data source) and configs.

    from _selfplay_fixtures import pretrained_ttt, selfplay_config
    @pytest.fixture(scope="session")
    def ttt_model(tmp_path_factory): return pretrained_ttt(tmp_path_factory)
"""

from __future__ import annotations

import functools
from pathlib import Path

from conftest import tiny_model_overrides

from stlm_selfplay.runs import latest_checkpoint
from stlm_selfplay.config import load_config

# a ~110k-parameter STLM (conftest's tiny one at width 64 with two trunk layers): 2-byte patches, one
# local layer each side
PRETRAIN = tiny_model_overrides(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=128, d_local=32,
                                max_seq_len=128) + [
    "data.source=games", "data.games={tictactoe: 1.0}", "data.players=[random]", "data.episodes=3000",
    "data.seq_len=128", "data.batch_size=16", "data.val_max_sequences=16",
    "schedule.steps=300", "schedule.warmup_steps=20", "optimizer.lr=3e-3", "optimizer.weight_decay=0.0",
    "run.device=cpu", "run.checkpoint_every=1000", "run.seed=0", "logging.eval_every=1000",
    "logging.wandb=disabled", "logging.progress=false", "logging.sample_bytes=0"]


@functools.lru_cache(maxsize=None)
def _pretrain(root: str) -> Path:
    from stlm_selfplay.config import load_config
    from stlm_selfplay.train.pretrain import pretrain

    run = Path(root) / "ttt-pretrain"
    if latest_checkpoint(run) is None:
        pretrain(load_config(None, PRETRAIN + [f"run.out_dir={root}", "run.name=ttt-pretrain",
                                               f"data.cache_dir={Path(root) / 'cache'}"]))
    return latest_checkpoint(run)


def pretrained_ttt(tmp_path_factory) -> Path:
    """The checkpoint folder of the session's pretrained tic-tac-toe model (built on first use;
    read-only afterwards: self-play runs load copies of it)."""
    return _pretrain(str(tmp_path_factory.getbasetemp() / "selfplay-shared"))


def selfplay_overrides(init_from: Path, out_dir: Path, name: str, **selfplay) -> list[str]:
    """Overrides for a small, fast, seeded tic-tac-toe self-play run (`selfplay.<key>=value` for
    each keyword; nested keys with `__`, e.g. eval__every=0)."""
    values = {"init_from": str(init_from) if init_from else "''", "updates": 4, "games_per_update": 16, "lr": 2e-3,
              "eval.every": 0, "eval.episodes": 8, "eval.bots": "[random]", "eval.optimal_rate": False,
              "eval.ratings": False, "pool.snapshot_every": 2,
              "stages": "[{games: {tictactoe: 1.0}, opponents: {random: 0.5, self: 0.25, pool: 0.25}}]"}
    values.update({k.replace("__", "."): v for k, v in selfplay.items()})
    return ([f"run.out_dir={out_dir}", f"run.name={name}", "run.device=cpu", "run.checkpoint_every=2",
             "logging.wandb=disabled", "logging.progress=false", "optimizer.weight_decay=0.0"]
            + [f"selfplay.{k}={v}" for k, v in values.items()])


def selfplay_config(init_from: Path, out_dir: Path, name: str, **selfplay):
    return load_config(None, selfplay_overrides(init_from, out_dir, name, **selfplay))


def tiny_random_model(seed: int):
    """The ~20k-parameter tiny STLM (conftest) with a 128-byte context at a seeded random init
    (global RNG untouched), for policy tests."""
    from conftest import make_tiny_model

    return make_tiny_model(seed, max_seq_len=128).eval()
