"""Before/after: a staged run's pretrained and final models, side by side, with significance tests.

`evaluate_run(cfg)` evaluates both models on the same seeded games (`selfplay.evaluate.evaluate`:
`evaluation.episodes` games per seat against each bot, greedy by default) and each game's exact
metrics (the tic-tac-toe optimal-move rate over all 4,520 positions, the Kuhn exploitability),
renders a few sample games of the final model, tests the differences, and writes
`runs/<name>/evaluation.json`.

Tests (one-sided, pooled two-proportion z; alpha = 0.01):

    z = (p_final - p_pre) / sqrt(p (1 - p) (1/n_pre + 1/n_final)),   p = (k_pre + k_final) / (n_pre + n_final)

    rise       win rate vs `random` in each seat, and each exact metric that is a proportion
               (`ExactMetric.proportions`: the optimal-move rate, n = 4,520 positions, k = rate x n):
               passes when p-value = 1 - Phi(z) < alpha
    no worse   non-loss rate (1 - loss rate) vs every other bot, all seats: passes unless the
               drop is significant, i.e. unless Phi(z) < alpha

Targets (`evaluation.at_most` / `at_least`, metric -> bound b): the final model's value x is
*met* when x <= b (at most) or x >= b (at least). A match rate (`game/bot/rate`, n = 2 x episodes
games; `game/bot/seatK/rate`, n = episodes) also gets a one-sided one-sample z-test that its true
rate lies beyond the bound, for 0 < b < 1:

    z = (b - x) / sqrt(b (1 - b) / n)   (at most; at least: (x - b) / ...),   p = 1 - Phi(z)

an exact metric (`game/optimal_rate`, `game/exploitability`, ...: computed, not sampled) none.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path

from stlm_selfplay.config import RootConfig
from stlm_selfplay.envs.base import derive_seed
from stlm_selfplay.errors import UserError
from stlm_selfplay.io import write_text_atomic
from stlm_selfplay.runs import EVALUATION_FILE, latest_checkpoint, run_dir as run_dir_of_config, stage_config, stage_dir

ALPHA = 0.01
MODELS = ("pretrained", "final")


def one_sided_z(k_before: int, n_before: int, k_after: int, n_after: int) -> float:
    """Pooled two-proportion z statistic of p_after - p_before (module docstring)."""
    p = (k_before + k_after) / max(n_before + n_after, 1)
    se = math.sqrt(max(p * (1 - p) * (1 / max(n_before, 1) + 1 / max(n_after, 1)), 1e-12))
    return (k_after / max(n_after, 1) - k_before / max(n_before, 1)) / se


def normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def evaluation_games(cfg: RootConfig) -> list[str]:
    """The games to evaluate: `evaluation.games`, else self-play's eval games (or its stages'
    games), else the pretraining transcripts' games."""
    from stlm_selfplay.selfplay.config import eval_games

    if cfg.evaluation.games:
        return list(cfg.evaluation.games)
    if "selfplay" in cfg.stages:
        return eval_games(cfg.selfplay)
    return list(cfg.data.games) if cfg.data.source == "games" else []


def check_targets(games: list[str], bots: list[str], at_most: dict, at_least: dict) -> None:
    """Every target names an evaluated game and a bot's rate or an exact metric (`UserError`)."""
    from stlm_selfplay.selfplay.evaluate import OUTCOME_NAMES, available_bots, exact_metrics_of

    rate_names = tuple(f"{name}_rate" for name in OUTCOME_NAMES.values()) + ("non_loss_rate",)  # evaluate_run adds it
    for where, targets in (("at_most", at_most), ("at_least", at_least)):
        for key, bound in targets.items():
            game, *rest = key.split("/")
            known = game in games
            exact = {k.split("/", 1)[1] for m in exact_metrics_of([game], None) for k in m.names} if known else set()
            bot_rate = (known and len(rest) in (2, 3) and rest[0] in available_bots(game, bots)
                        and rest[-1] in rate_names and (len(rest) == 2 or rest[1].startswith("seat")))
            if not (bot_rate or (len(rest) == 1 and rest[0] in exact)):
                raise UserError(f"evaluation.{where}: '{key}' is not a metric of this evaluation; use GAME/BOT/RATE "
                                f"(rates: {', '.join(rate_names)}), GAME/BOT/seatK/RATE or GAME/EXACT with GAME one of "
                                f"{', '.join(games)} and BOT one of evaluation.bots")
            if bound < 0:  # a number: the structured config's Dict[str, float] refuses other types
                raise UserError(f"evaluation.{where}.{key} must be >= 0, got {bound!r}")


def target_checks(final: dict, at_most: dict, at_least: dict, episodes: int) -> list[dict]:
    """The module docstring's targets, each {metric, bound, kind, final, met, n, z, p}."""
    checks = []
    for kind, targets in (("at most", at_most), ("at least", at_least)):
        for key, bound in targets.items():
            x, parts = final.get(key), key.count("/")
            check = {"metric": key, "kind": kind, "bound": bound, "final": x, "n": None, "z": None, "p": None,
                     "met": x is not None and (x <= bound if kind == "at most" else x >= bound)}
            if x is not None and parts >= 2 and 0 < bound < 1:
                n = 2 * episodes if parts == 2 else episodes
                z = ((bound - x) if kind == "at most" else (x - bound)) / math.sqrt(bound * (1 - bound) / n)
                check.update(n=n, z=z, p=1.0 - normal_cdf(z))
            checks.append(check)
    return checks


def evaluation_models(cfg: RootConfig) -> dict[str, Path]:
    """{"pretrained": checkpoint, "final": checkpoint}, whichever the run has: the model self-play
    started from (the pretrain stage's final checkpoint, or `selfplay.init_from`) and its result."""
    from stlm_selfplay.runs import resolve_model_folder

    root = run_dir_of_config(cfg)
    start = latest_checkpoint(stage_dir(root, "pretrain")) if "pretrain" in cfg.stages else None
    if "selfplay" in cfg.stages and stage_config(cfg, "selfplay").selfplay.init_from:
        start = resolve_model_folder(stage_config(cfg, "selfplay").selfplay.init_from)
    final = latest_checkpoint(stage_dir(root, "selfplay")) if "selfplay" in cfg.stages else None
    return {label: ckpt for label, ckpt in (("pretrained", start), ("final", final)) if ckpt is not None}


def action_mode(cfg: RootConfig) -> str:
    """How both models move: `evaluation.mode`, else self-play's eval mode or last stage's mode."""
    if cfg.evaluation.mode:
        return cfg.evaluation.mode
    if "selfplay" in cfg.stages:
        return cfg.selfplay.eval.mode or cfg.selfplay.stages[-1].mode
    return "constrained"


def check_bots(games: list[str], bots: list[str]) -> None:
    """Every bot is a scripted player of at least one of the games (`UserError` otherwise)."""
    from stlm_selfplay.envs import list_players

    known = {b for g in games for b in list_players(g)}
    for bot in bots:
        if bot.partition(":")[0] not in known:
            raise UserError(f"evaluation.bots: '{bot}' is a bot of none of {', '.join(games)}; valid: {', '.join(sorted(known))}")


def evaluate_run(cfg: RootConfig) -> dict | None:
    """Evaluate the run's models and write evaluation.json (kept when it already holds these
    checkpoints and settings); returns its content, None when there is nothing to evaluate."""
    from tqdm.auto import tqdm

    from stlm_selfplay.runs import load_model
    from stlm_selfplay.selfplay.evaluate import available_bots, evaluate

    ev, games = cfg.evaluation, evaluation_games(cfg)
    models = evaluation_models(cfg)
    if not games or not models:
        return None
    check_bots(games, ev.bots)
    path = run_dir_of_config(cfg) / EVALUATION_FILE
    seed = derive_seed(cfg.run.seed, "before-after")  # the same games for both models
    settings = {"models": {k: str(v) for k, v in models.items()}, "games": games, "bots": list(ev.bots),
                "episodes": ev.episodes, "temperature": ev.temperature, "mode": action_mode(cfg), "seed": seed,
                "sample_games": ev.sample_games, "at_most": dict(ev.at_most), "at_least": dict(ev.at_least)}
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("settings") == settings:
            return old
    units = [(label, game, bot) for label in models for game in games for bot in available_bots(game, ev.bots)]
    metrics: dict[str, dict] = {label: {} for label in models}
    loaded = {label: load_model(folder, device=_device(cfg)) for label, folder in models.items()}
    with tqdm(total=len(units) + len(models), desc="before/after evaluation", unit="match",
              disable=not cfg.logging.progress) as bar:
        for label, game, bot in units:
            bar.set_postfix_str(f"{label} {game} vs {bot}")
            one = dataclasses.replace(ev, bots=[bot])  # one match per call: each its own rollout RNG
            metrics[label].update(evaluate(loaded[label], [game], one, seed, settings["mode"], exact=False).metrics)
            bar.update(1)
        for label, model in loaded.items():
            metrics[label].update(evaluate(model, games, ev, seed, settings["mode"], matches=False).metrics)
            bar.update(1)
    for m in metrics.values():
        for key in [k for k in m if k.endswith("/loss_rate")]:
            m[key[: -len("loss_rate")] + "non_loss_rate"] = 1.0 - m[key]
    last = list(models)[-1]
    out = {"settings": settings, "metrics": metrics,
           "tests": significance_tests(metrics, games, ev.episodes) if len(models) == 2 else [],
           "targets": target_checks(metrics[last], dict(ev.at_most), dict(ev.at_least), ev.episodes),
           "samples": sample_games(loaded[last], games, ev.bots, ev.sample_games, seed, settings["mode"], ev.temperature)}
    write_text_atomic(path, json.dumps(out, indent=1) + "\n")
    return out


def _device(cfg: RootConfig):
    from stlm_selfplay.train.distributed import select_device

    return select_device(cfg.run.device, 0)


def significance_tests(metrics: dict[str, dict], games: list[str], episodes: int) -> list[dict]:
    """The module docstring's tests, each {metric, kind, n, pretrained, final, z, p, passed}."""
    before, after = metrics["pretrained"], metrics["final"]
    wanted: list[tuple[str, str, int]] = []
    for key in sorted(before):
        game, _, rest = key.partition("/")
        if game not in games or key not in after:
            continue
        if rest.startswith("random/seat") and rest.endswith("/win_rate"):
            wanted.append((key, "rise", episodes))
        elif not rest.startswith("random/") and rest.count("/") == 1 and rest.endswith("/non_loss_rate"):
            wanted.append((key, "no worse", 2 * episodes))
    from stlm_selfplay.selfplay.evaluate import exact_metrics_of

    for metric in exact_metrics_of(games, None):  # every exact metric of the games
        wanted += [(key, "rise", n) for key, n in metric.proportions.items() if key in before]
    tests = []
    for key, kind, n in wanted:
        if n <= 0:
            continue
        k1, k2 = round(before[key] * n), round(after[key] * n)
        z = one_sided_z(k1, n, k2, n)
        p = 1.0 - normal_cdf(z) if kind == "rise" else normal_cdf(z)  # p of "no rise" / of "no drop"
        passed = p < ALPHA if kind == "rise" else p >= ALPHA
        tests.append({"metric": key, "kind": kind, "n": n, "pretrained": before[key], "final": after[key],
                      "z": z, "p": p, "passed": passed})
    return tests


def sample_games(model, games: list[str], bots: list[str], per_seat: int, seed: int, mode: str,
                 temperature: float) -> list[dict]:
    """`per_seat` games of the model in each seat against each bot, as transcripts."""
    from stlm_selfplay.envs import make, make_player
    from stlm_selfplay.envs.players import play_game
    from stlm_selfplay.model_player import ModelPlayer
    from stlm_selfplay.selfplay.evaluate import available_bots

    out = []
    for game in games:
        for bot in available_bots(game, bots):
            for seat in range(make(game).num_players):
                for i in range(per_seat):
                    s = derive_seed(seed, "sample", game, bot, seat, i)
                    board = make(game).reset(s)
                    players = [make_player(game, bot) for _ in range(board.num_players)]
                    players[seat] = ModelPlayer(model, mode, temperature, seed=s)
                    rngs = [random.Random(derive_seed(s, "seat", k)) for k in range(board.num_players)]
                    episode = play_game(board, players, rngs, style="compact")
                    out.append({"game": game, "bot": bot, "seat": seat, "side": board.sides[seat],
                                "outcome": board.outcome[seat],
                                "transcript": episode.transcript("compact")})
    return out
