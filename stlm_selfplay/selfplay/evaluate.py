"""Evaluation of a model as a game player: matches by seat, optimal-move rate, exploitability.

    evaluate_model(model, ["tictactoe"], ["random", "optimal"], episodes=100, seed=0)
        -> flat metrics: the model in each seat for `episodes` games against each bot, played
           with `play` (`match_results`) and a fixed decoding (temperature 0 = the argmax move):
           W/D/L/illegal rates by seat with Wilson 95% intervals, mean game length
    tictactoe_optimal_rate(model)   one batched `score` over the legal actions of all 4,520
           positions; pi = softmax over each position's summed action log-probs (temperature 1);
           rate = mean_pos pi(optimal moves), greedy = mean_pos [argmax pi is optimal]
    kuhn_table(model)               pi over {check, bet} / {call, fold} at the 12 information states
    average_kuhn_table(tables)      the average policy of snapshots (reach-weighted, the strategy
           of "pick a snapshot at random, play it"):
               pi_avg(a | I) = sum_k r_k(I) pi_k(a | I) / sum_k r_k(I),
               r_k(I) = product of snapshot k's own action probabilities on the path to I
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from stlm_selfplay.envs.evaluation import (KUHN_INFO_STATES, SeatRecord, kuhn_exploitability, kuhn_policy_table,
                                           rate_from_probabilities, tictactoe_positions)
from stlm_selfplay.envs.base import derive_seed
from stlm_selfplay.selfplay.opponents import LEARNER
from stlm_selfplay.envs.formats import format_action
from stlm_selfplay.model import score
from stlm_selfplay.selfplay.policies import BotPolicy, ModelPolicy, RolloutRandom, constrained_distribution
from stlm_selfplay.selfplay.rollout import EpisodeSpec, play

Result = tuple[str, str, float]  # (player a, player b, score of a), as `ratings` reads them
SCORE = {"win": 1.0, "draw": 0.5, "loss": 0.0}
OUTCOME_NAMES = {"wins": "win", "draws": "draw", "losses": "loss", "illegal": "illegal"}  # SeatRecord field -> metric


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


def constrained_probs(model, games: Sequence, temperature: float = 1.0, batch_size: int = 512) -> list[dict[str, float]]:
    """{action: pi(action)} for each game's player to move, from ONE batched `score` call over
    every (prompt, legal action) pair (rows of `batch_size`; ModelPolicy's rollout calls use 64)."""
    prompts = ModelPolicy(model).prompts(games, [g.current_player for g in games])
    actions = [g.legal_actions() for g in games]
    contexts = [p for p, acts in zip(prompts, actions) for _ in acts]
    logps = score(model, contexts, [format_action(a).encode() for acts in actions for a in acts], batch_size=batch_size)
    sums = torch.tensor([float(lp.sum()) for lp in logps], dtype=torch.float64)
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


@torch.no_grad()
def evaluate_model(model, games: Sequence[str], bots: Sequence[str], episodes: int, seed: int,
                   mode: str = "constrained", temperature: float = 0.0, optimal_rate: bool = True,
                   name: str = LEARNER) -> tuple[dict[str, float], list[tuple[str, Result]]]:
    """(flat metrics, [(game, result)] for ratings) of matches vs each of the game's `bots` by
    seat (decoding: `mode` at `temperature`), plus the tictactoe optimal-move rate when asked."""
    from stlm_selfplay.envs import list_players

    player = ModelPolicy(model, name=name, mode=mode, temperature=temperature)
    metrics: dict[str, float] = {}
    results: list[tuple[str, Result]] = []
    for game in games:
        available = [b for b in bots if b.partition(":")[0] in list_players(game)]
        if episodes and available:
            res = match_results(player, game, bot_policies(game, available), episodes, seed, name=name)
            metrics.update(match_metrics(game, res))
            results += [(game, r) for b in available for r in res[b]["results"]]
        if game == "tictactoe" and optimal_rate:
            rate = tictactoe_optimal_rate(model)
            metrics["tictactoe/optimal_rate"] = rate["rate"]
            metrics["tictactoe/optimal_greedy"] = rate["greedy"]
    return metrics, results
