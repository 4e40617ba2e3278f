"""Bradley-Terry ratings of snapshots and bots, on the Elo scale, with bootstrap intervals.

How the self-play loop uses this module
---------------------------------------
    results = [("step_200", "random", 1.0), ("random", "optimal", 0.0), ("step_200", "step_100", 0.5), ...]
    rows = rating_rows(results, step=200, anchor="random", n_boot=200, seed=0)
    append_rows(run_dir / "ratings.jsonl", rows)   # one row per player, appended in one write
    read_rows(run_dir / "ratings.jsonl")            # all complete rows (a torn last line is skipped)

Model. Player i has strength theta_i; P(i beats j) = sigmoid(theta_i - theta_j). A result
(a, b, s) with s in {1, 0.5, 0} counts s wins for a and 1 - s for b (a draw is half a win each).
With W_ij = total score of i against j, the fit maximizes the penalized log-likelihood

    l(theta) = sum_{i != j} W_ij log sigmoid(theta_i - theta_j) - prior / 2 * sum_i theta_i^2

by Newton's method with step halving (the tiny prior keeps an unbeaten player finite and the
problem strictly concave). Ratings are reported in Elo points, elo_i = 400 / ln 10 *
(theta_i - theta_anchor), so the anchor (the `random` bot) is 0 and a 75% expected score is
+191 points. Intervals: percentiles of the ratings refitted on games resampled with
replacement (`np.random.default_rng(seed)`), so a seed gives the same intervals.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from stlm_selfplay.errors import UserError

ELO_PER_NAT = 400.0 / math.log(10.0)

Result = tuple[str, str, float]  # (player_a, player_b, score of a: 1 win, 0.5 draw, 0 loss)


def _score_matrix(results: Sequence[Result], players: list[str]) -> np.ndarray:
    """W[i, j] = total score of player i in its games against player j."""
    index = {p: k for k, p in enumerate(players)}
    w = np.zeros((len(players), len(players)))
    for a, b, s in results:
        if not 0.0 <= s <= 1.0:
            raise ValueError(f"score of {a} vs {b} must be in [0, 1], got {s}")
        w[index[a], index[b]] += s
        w[index[b], index[a]] += 1.0 - s
    return w


def _log_likelihood(theta: np.ndarray, w: np.ndarray, prior: float) -> float:
    diff = theta[:, None] - theta[None, :]
    return float((w * -np.logaddexp(0.0, -diff)).sum() - 0.5 * prior * (theta**2).sum())


def _fit_theta(w: np.ndarray, prior: float, tol: float = 1e-10, max_iter: int = 100) -> np.ndarray:
    """Newton ascent on l(theta) (module docstring), halving the step until l increases.

    gradient_i = sum_j (W_ij - N_ij p_ij) - prior theta_i,    p_ij = sigmoid(theta_i - theta_j)
    Hessian    = -(diag(sum_j N_ij p_ij p_ji) - N o p o p^T) - prior I,   N = W + W^T
    """
    n_games = w + w.T
    theta = np.zeros(len(w))
    current = _log_likelihood(theta, w, prior)
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(theta[:, None] - theta[None, :])))
        grad = (w - n_games * p).sum(1) - prior * theta
        curvature = n_games * p * p.T
        hessian = curvature - np.diag(curvature.sum(1)) - prior * np.eye(len(w))
        step = np.linalg.solve(hessian, -grad)
        scale = 1.0
        while scale > 1e-6:
            candidate = theta + scale * step
            value = _log_likelihood(candidate, w, prior)
            if value >= current:
                break
            scale /= 2
        theta, current = candidate, value
        if np.abs(scale * step).max() < tol:
            break
    return theta


def players_of(results: Iterable[Result]) -> list[str]:
    """Every player in the results, sorted."""
    return sorted({p for a, b, _ in results for p in (a, b)})


def fit_ratings(
    results: Sequence[Result], anchor: str = "random", prior: float = 1e-3, players: list[str] | None = None
) -> dict[str, float]:
    """Elo rating of every player (the anchor at 0) fitted by Bradley-Terry maximum likelihood."""
    players = players_of(results) if players is None else players
    if anchor not in players:
        raise UserError(f"rating anchor '{anchor}' played no games; add matches against it or choose another anchor")
    theta = _fit_theta(_score_matrix(results, players), prior)
    theta = theta - theta[players.index(anchor)]
    return {p: float(ELO_PER_NAT * t) for p, t in zip(players, theta)}


def bootstrap_intervals(
    results: Sequence[Result],
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.95,
    anchor: str = "random",
    prior: float = 1e-3,
) -> dict[str, tuple[float, float]]:
    """(low, high) percentile interval of each player's Elo over refits on resampled games."""
    players = players_of(results)
    rng = np.random.default_rng(seed)
    samples = np.empty((n_boot, len(players)))
    for k in range(n_boot):
        picks = rng.integers(0, len(results), size=len(results))
        fitted = fit_ratings([results[i] for i in picks], anchor, prior, players)
        samples[k] = [fitted[p] for p in players]
    low, high = np.percentile(samples, [50 * (1 - level), 50 * (1 + level)], axis=0)
    return {p: (float(lo), float(hi)) for p, lo, hi in zip(players, low, high)}


def rating_rows(
    results: Sequence[Result],
    step: int,
    anchor: str = "random",
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.95,
    prior: float = 1e-3,
) -> list[dict]:
    """One `ratings.jsonl` row per player: step, player, elo, lo, hi, games, anchor."""
    elo = fit_ratings(results, anchor, prior)
    intervals = bootstrap_intervals(results, n_boot, seed, level, anchor, prior) if n_boot > 0 else {}
    games = {p: 0 for p in elo}
    for a, b, _ in results:
        games[a] += 1
        games[b] += 1
    rows = []
    for p in sorted(elo, key=lambda q: -elo[q]):
        lo, hi = intervals.get(p, (float("nan"), float("nan")))
        rows.append({"step": step, "player": p, "elo": elo[p], "lo": lo, "hi": hi, "games": games[p], "anchor": anchor})
    return rows


def append_rows(path: str | Path, rows: Sequence[dict]) -> None:
    """Append rows as JSON lines in one O_APPEND write, then fsync: a reader sees all or none
    of them, except that a hard kill mid-write can leave a torn last line (`read_rows` skips it)."""
    data = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_rows(path: str | Path) -> list[dict]:
    """All complete rows of a ratings.jsonl (missing file -> []); a torn last line is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text().split("\n")
    return [json.loads(line) for line in lines[:-1] if line.strip()]  # lines[-1]: "" or torn
