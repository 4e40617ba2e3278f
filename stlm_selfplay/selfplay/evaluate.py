"""Game evaluation, in one place: what an evaluation of a model as a game player measures, and
the names of the metrics it logs. The self-play loop, `stlm run`'s before/after evaluation,
`stlm eval` and `stlm compare` all go through `evaluate` and `metric_names`.

    evaluate(model, ["tictactoe"], spec, seed=0)     spec: bots, episodes, temperature (and the
        switches of the exact metrics: optimal_rate, exploitability; absent = on)
        -> Evaluation(metrics, results, matches): the model in each seat for `spec.episodes`
           games against each of the game's `spec.bots`, played with `play` (`match_results`)
           and a fixed decoding (temperature 0 = the argmax move): W/D/L/illegal rates by seat
           with Wilson 95% intervals, mean game length; then each game's exact metrics
    metric_names(games, spec)                        the headline metric names, in table order

Exact metrics are a registry keyed by game: a game with one is its file in envs/, its metric
here (`@exact_metric("game", names=..., enabled_by=...)`), and nothing else.

    tictactoe_optimal_rate(model)   one batched `score_choices` over the legal actions of all 4,520
           positions; pi = softmax over each position's summed action log-probs (temperature 1);
           rate = mean_pos pi(optimal moves), greedy = mean_pos [argmax pi is optimal]
    kuhn_table(model)               pi over {check, bet} / {call, fold} at the 12 information states
    average_kuhn_table(tables)      the average policy of snapshots (reach-weighted, the strategy
           of "pick a snapshot at random, play it"):
               pi_avg(a | I) = sum_k r_k(I) pi_k(a | I) / sum_k r_k(I),
               r_k(I) = product of snapshot k's own action probabilities on the path to I
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from stlm_selfplay.envs.evaluation import (KUHN_INFO_STATES, SeatRecord, kuhn_exploitability, kuhn_policy_table,
                                           rate_from_probabilities, tictactoe_positions)
from stlm_selfplay.envs.base import derive_seed
from stlm_selfplay.selfplay.opponents import LEARNER
from stlm_selfplay.envs.formats import format_action
from stlm_selfplay.model.choices import score_choices
from stlm_selfplay.registry import Registry
from stlm_selfplay.selfplay.policies import BotPolicy, ModelPolicy, RolloutRandom, constrained_distribution
from stlm_selfplay.selfplay.rollout import EpisodeSpec, play

Result = tuple[str, str, float]  # (player a, player b, score of a), as `ratings` reads them
SCORE = {"win": 1.0, "draw": 0.5, "loss": 0.0}
OUTCOME_NAMES = {"wins": "win", "draws": "draw", "losses": "loss", "illegal": "illegal"}  # SeatRecord field -> metric


@dataclass(frozen=True)
class ExactMetric:
    """A game's exact metric: `compute(model, history) -> {name: value}` over every position or
    information state of the game (no sampling), where `history` holds what `snapshot(model)`
    returned at each pool snapshot of a self-play run (empty elsewhere)."""

    game: str
    names: tuple[str, ...]  # every metric `compute` returns, `<game>/<name>`
    headline: tuple[str, ...]  # the ones tables compare (`metric_names`), in order
    enabled_by: str  # the eval-config switch that turns it on (a spec without the field: on)
    compute: Callable[[Any, list], dict[str, float]]
    snapshot: Callable[[Any], Any] | None = None  # what to keep of each pool snapshot (history)
    proportions: dict[str, int] = field(default_factory=dict)  # metrics that are a rate over n
    #   items (n), which the before/after evaluation tests for a significant rise


EXACT_METRICS = Registry("exact metric")  # game name -> ExactMetric


def exact_metric(game: str, names: Sequence[str], enabled_by: str, headline: Sequence[str] | None = None,
                 snapshot: Callable[[Any], Any] | None = None, proportions: dict[str, int] | None = None):
    """Function decorator: `@exact_metric("tictactoe", names=("optimal_rate", ...), enabled_by=
    "optimal_rate")` registers `fn(model, history) -> {"tictactoe/optimal_rate": ...}` for the game."""
    def wrap(fn):
        full = tuple(f"{game}/{n}" for n in names)
        shown = full if headline is None else tuple(f"{game}/{n}" for n in headline)
        EXACT_METRICS.register(game, ExactMetric(game, full, shown, enabled_by, fn, snapshot,
                                                 {f"{game}/{k}": v for k, v in (proportions or {}).items()}))
        return fn

    return wrap


def bot_policies(game: str, bots: Sequence[str]) -> dict:
    """{bot: BotPolicy} of the scripted players of `game` named in `bots` (options as `name:k=v`)."""
    return {bot: BotPolicy(game, bot) for bot in bots}


def match_results(player, game: str, opponents: dict, episodes: int, seed: int, options: dict | None = None,
                  name: str = LEARNER) -> dict:
    """{opponent: {"seats": [SeatRecord per seat of `player`], "length": mean moves, "results": [Result]}}.

    `player` and each opponent (name -> policy) play `episodes` games per seat of `player`, all
    in one `play` call; game i of (opponent, seat) has seed (seed, game, opponent, seat, i)."""
    from stlm_selfplay.envs import make

    players = make(game, **(options or {})).num_players
    key = f"{LEARNER}:{name}"  # the player's policy name in this rollout (never an opponent's name)
    specs, keys = [], []
    for opponent in opponents:
        for seat in range(players):
            for i in range(episodes):
                seats = [key if s == seat else opponent for s in range(players)]
                specs.append(EpisodeSpec(game, derive_seed(seed, "eval", game, opponent, seat, i), seats, dict(options or {})))
                keys.append((opponent, seat))
    episodes_out = play(specs, {key: player, **opponents}, RolloutRandom(derive_seed(seed, "eval-rollout", game)))
    out = {o: {"seats": [SeatRecord() for _ in range(players)], "length": 0.0, "results": []} for o in opponents}
    for (opponent, seat), ep in zip(keys, episodes_out):
        out[opponent]["seats"][seat].add(ep.outcome, ep.rewards, ep.illegal, seat)
        out[opponent]["length"] += ep.length / (players * episodes)
        out[opponent]["results"].append((name, opponent, SCORE[ep.outcome[seat]]))
    return out


def match_metrics(game: str, results: dict) -> dict[str, float]:
    """Flat metrics `<game>/<bot>/{win_rate,draw_rate,loss_rate,illegal_rate,length}` (all seats)
    and `<game>/<bot>/seat<s>/...` with Wilson 95% bounds `_lo`, `_hi` of the win rate."""
    from stlm_selfplay.envs.evaluation import wilson_interval

    out: dict[str, float] = {}
    for bot, res in results.items():
        seats = res["seats"]
        groups = [("", seats)] + [(f"seat{s}/", [rec]) for s, rec in enumerate(seats)]
        for prefix, recs in groups:
            n = sum(r.games for r in recs)
            for key, name in OUTCOME_NAMES.items():
                out[f"{game}/{bot}/{prefix}{name}_rate"] = sum(getattr(r, key) for r in recs) / max(n, 1)
            wins = sum(r.wins for r in recs)
            out[f"{game}/{bot}/{prefix}win_rate_lo"], out[f"{game}/{bot}/{prefix}win_rate_hi"] = wilson_interval(wins, n)
        out[f"{game}/{bot}/length"] = res["length"]
    return out


def constrained_probs(model, games: Sequence, temperature: float = 1.0, batch_size: int = 256) -> list[dict[str, float]]:
    """{action: pi(action)} for each game's player to move, from ONE batched `score_choices` call
    (each prompt read once, its legal actions scored from the cache; `batch_size` prompts a pass)."""
    prompts = ModelPolicy(model).prompts(games, [g.current_player for g in games])
    actions = [g.legal_actions() for g in games]
    logps = score_choices(model, prompts, [[format_action(a).encode() for a in acts] for acts in actions],
                          batch_size=batch_size)
    sums = torch.tensor([float(lp.sum()) for row in logps for lp in row], dtype=torch.float64)
    out, start = [], 0
    for acts in actions:
        probs = constrained_distribution(sums[start:start + len(acts)], temperature)
        out.append(dict(zip(acts, probs.tolist())))
        start += len(acts)
    return out


def tictactoe_optimal_rate(model) -> dict[str, float]:
    """{'rate', 'greedy', 'positions'} of the model's constrained policy (module docstring)."""
    positions = tictactoe_positions()
    return rate_from_probabilities(constrained_probs(model, [p.game for p in positions]), positions)


TICTACTOE_POSITIONS = 4520  # reachable non-terminal tic-tac-toe positions (the optimal-move rate's n)


@exact_metric("tictactoe", names=("optimal_rate", "optimal_greedy"), headline=("optimal_rate",),
              enabled_by="optimal_rate", proportions={"optimal_rate": TICTACTOE_POSITIONS})
def tictactoe_metrics(model, history: list) -> dict[str, float]:
    rate = tictactoe_optimal_rate(model)
    return {"tictactoe/optimal_rate": rate["rate"], "tictactoe/optimal_greedy": rate["greedy"]}


def kuhn_table(model, temperature: float = 1.0) -> dict[str, dict[str, float]]:
    """The model's constrained policy at the 12 Kuhn information states (one batched score)."""
    games: list = []
    kuhn_policy_table(lambda g: games.append(g) or {a: 1.0 for a in g.legal_actions()})  # collect the states
    probs = iter(constrained_probs(model, games, temperature))
    return kuhn_policy_table(lambda g: next(probs))


def own_reach(table: dict[str, dict[str, float]], state: str) -> float:
    """Probability that the player at `state` took its own earlier actions of the hand
    ("Kpb": the first actor checked at "K"); letters p/b are check/bet before any bet."""
    card, public = state[0], state[1:]
    seat = len(public) % 2
    reach = 1.0
    for i in range(seat, len(public), 2):
        action = {"p": "check", "b": "bet"}[public[i]]
        reach *= table[card + public[:i]].get(action, 0.0)
    return reach


def average_kuhn_table(tables: Sequence[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Reach-weighted average policy of several tables (module docstring)."""
    out = {}
    for state in KUHN_INFO_STATES:
        weights = np.array([own_reach(t, state) for t in tables])
        if weights.sum() <= 0:
            weights = np.ones(len(tables))
        actions = list(tables[0][state])
        out[state] = {a: float(sum(w * t[state][a] for w, t in zip(weights, tables)) / weights.sum()) for a in actions}
    return out


def kuhn_metrics(model, snapshot_tables: Sequence[dict]) -> tuple[dict[str, float], dict]:
    """(metrics, the model's table): exploitability of the model and of the average policy of
    the snapshots' tables plus the model's, the model counted once: when the newest snapshot
    is this very model (a snapshot taken at the evaluated update) it is not added again."""
    table = kuhn_table(model)
    tables = list(snapshot_tables)
    if not tables or tables[-1] != table:
        tables.append(table)
    average = average_kuhn_table(tables)
    return {"kuhn_poker/exploitability": kuhn_exploitability(table),
            "kuhn_poker/avg_exploitability": kuhn_exploitability(average)}, table


exact_metric("kuhn_poker", names=("exploitability", "avg_exploitability"), enabled_by="exploitability",
             snapshot=kuhn_table)(lambda model, history: kuhn_metrics(model, history)[0])


def available_bots(game: str, bots: Sequence[str]) -> list[str]:
    """The ones of `bots` that `game` has (a bot may carry options, `name:key=value`)."""
    from stlm_selfplay.envs import list_players

    return [b for b in bots if b.partition(":")[0] in list_players(game)]


def exact_metrics_of(games: Sequence[str], spec) -> list[ExactMetric]:
    """The exact metrics an evaluation of `games` with `spec` computes."""
    return [m for g in games if (m := EXACT_METRICS.get(g, None)) and getattr(spec, m.enabled_by, True)]


def record_snapshot(model, games: Sequence[str], spec, history: dict[str, list]) -> None:
    """At a pool snapshot: append what each exact metric keeps of the model to `history[game]`."""
    for metric in exact_metrics_of(games, spec):
        if metric.snapshot is not None:
            history.setdefault(metric.game, []).append(metric.snapshot(model))


def metric_names(games: Sequence[str], spec) -> list[str]:
    """The headline metrics of an evaluation, in table order: per game its exact metrics, the win
    rate against each bot it has, the non-loss rate (1 - loss rate) against each but random, and
    its Elo when `spec.ratings` (the self-play loop's Bradley-Terry ratings)."""
    names: list[str] = []
    exact = {m.game: m for m in exact_metrics_of(games, spec)}
    for game in games:
        bots = available_bots(game, spec.bots) if spec.episodes else []
        names += list(exact[game].headline) if game in exact else []
        names += [f"{game}/{b}/win_rate" for b in bots]
        names += [f"{game}/{b}/non_loss_rate" for b in bots if b != "random"]
        if getattr(spec, "ratings", False) and bots:
            names.append(f"{game}/elo")
    return names


@dataclass
class Evaluation:
    """What `evaluate` measured: flat metrics, the match results for ratings, and per game the
    raw `match_results` (SeatRecords by seat, per bot)."""

    metrics: dict[str, float] = field(default_factory=dict)
    results: list[tuple[str, Result]] = field(default_factory=list)  # (game, (a, b, score of a))
    matches: dict[str, dict] = field(default_factory=dict)


@torch.no_grad()
def evaluate(model, games: Sequence[str], spec, seed: int, mode: str = "constrained", *, name: str = LEARNER,
             matches: bool = True, exact: bool = True, history: dict[str, list] | None = None,
             player=None, style: str = "compact") -> Evaluation:
    """Matches of the model (decoding: `mode` at `spec.temperature`) in each seat against each of
    a game's `spec.bots` (`spec.episodes` games per seat; game seeds from `seed`), then the games'
    exact metrics (`history`: the self-play loop's snapshot records). `matches` / `exact` off
    skip either part. `player`: the policy that plays the matches instead of the model's own
    (e.g. a `search.SearchPolicy` around it: `stlm eval --search N`). `style`: the matches' prompt
    style (policies.py); the exact metrics read positions, so their prompts stay compact."""
    player = player or ModelPolicy(model, name=name, mode=mode, temperature=spec.temperature, style=style)
    exact_of = {m.game: m for m in exact_metrics_of(games, spec)} if exact else {}
    out = Evaluation()
    for game in games:
        bots = available_bots(game, spec.bots)
        if matches and spec.episodes and bots:
            res = match_results(player, game, bot_policies(game, bots), spec.episodes, seed, name=name)
            out.metrics.update(match_metrics(game, res))
            out.results += [(game, r) for b in bots for r in res[b]["results"]]
            out.matches[game] = res
        if game in exact_of:
            out.metrics.update(exact_of[game].compute(model, (history or {}).get(game, [])))
    return out
