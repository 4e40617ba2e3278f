"""Advantages of self-play turns: baselines conditioned on game and role.

How the self-play loop uses this module
---------------------------------------
After a batch of games ends, list every trained model turn (one entry per turn, in the order
the games ended) as a `Turns` record and call

    estimator = build_estimator(cfg.name, cfg.options)          # once; "rae" | "rloo" | "group" | "gae" | "none"
    reward = shaped_reward(payoff, illegal, illegal_penalty)     # [N]
    turns = Turns(reward, game, role, episode, group, payoff, value)  # value: V(s) per turn (gae)
    adv = estimator(turns)                                       # [N]
    returns = estimator.value_targets(turns, adv)                # [N] targets of the value head
    adv, keep = finalize(adv, normalize=..., drop_zero=...)      # train on turns where keep
    ... batch.advantages = torch.as_tensor(adv[keep]) ...
    checkpoint["advantages"] = estimator.state_dict()           # RAE baselines; {} otherwise

Units. The return of an (episode, role) unit is the mean reward of its turns, R_u (= the seat's
payoff when there is no shaping). Every turn t of unit u gets A_t = r_t - b_u, where b_u is:

    none:  b_u = 0
    rae:   b_u = b[game, role] read BEFORE the update b <- decay * b + (1 - decay) * R_u
           (role-conditioned EMA baseline, SPIRAL, Liu et al. 2025); b starts at 0; units are
           processed in the order their first turn appears in `Turns`.
    rloo:  b_u = mean of R_v over the OTHER units v with the same (game, group, role)
           (leave-one-out, Kool et al. 2019; `group` = games sharing a seed); b_u = R_u when
           the unit is alone in its group (no comparison possible).
    group: b_u = mean of R_v over the units of its (game, group, role) (GRPO);
           with scale_std: A_t = (r_t - b_u) / (std_v R_v + eps), std with Bessel's correction
           (TRL's GRPO), std = 0 for a group of one.

    gae:   per unit, its turns t = 0..T-1 in order, with values V_t and per-turn rewards
           r_t = (reward_t - payoff_t) + payoff_t [t = T-1]  (the terminal zero-sum payoff on
           the seat's last turn, shaping on every turn; Schulman et al. 2016):
               delta_t = r_t + gamma V_{t+1} [t+1 < T] - V_t,   A_t = sum_k (gamma lambda)^k delta_{t+k}
           Needs Turns.value (a model with `value_head`). Its value targets are R_t = A_t + V_t.

Value targets (`Estimator.value_targets`, for a model with a value head): gae's R_t = A_t + V_t;
every other estimator's are the reward-to-go R_t = sum_{k>=t} r_k of the unit (gae with V = 0,
gamma = lambda = 1).

`finalize` then optionally drops turns with |A| <= 1e-8 (they carry no gradient) and normalizes
the kept ones to mean 0, std 1 over the batch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import torch

from stlm_selfplay.errors import UserError, closest, unknown_name
from stlm_selfplay.options import option
from stlm_selfplay.train.distributed import all_reduce_sum


@dataclass
class Turns:
    """One entry per trained model turn (length-N sequences)."""

    reward: np.ndarray  # [N] float: the seat's game payoff plus per-turn shaping (`shaped_reward`)
    game: Sequence[str]  # [N] game name of the turn
    role: np.ndarray  # [N] int: the seat (player index) that took the turn
    episode: np.ndarray  # [N] int: the game instance; all turns of one game share it
    group: np.ndarray | None = None  # [N] int: games sharing a seed (needed by rloo and group)
    payoff: np.ndarray | None = None  # [N] float: the seat's terminal payoff without shaping (gae
    #                                   and value targets; None = no shaping: payoff = reward)
    value: np.ndarray | None = None  # [N] float: V(s) of the turn's prompt at rollout time (gae)


def shaped_reward(payoff, illegal, illegal_penalty: float = 0.0) -> np.ndarray:
    """r_t = payoff of the turn's seat - illegal_penalty * [turn t was an illegal move]."""
    return np.asarray(payoff, dtype=np.float64) - illegal_penalty * np.asarray(illegal, dtype=np.float64)


def _units(turns: Turns, by_group: bool = False):
    """Index each turn's (episode, role) unit, in order of first appearance.

    Returns (unit of each turn [N], return R_u [U], key of each unit: (game, group or None, role))."""
    reward = np.asarray(turns.reward, dtype=np.float64)
    if by_group and turns.group is None:
        raise ValueError("this advantage estimator needs Turns.group (games sharing a seed)")
    index: dict[tuple, int] = {}
    keys: list[tuple] = []
    unit = np.empty(len(reward), dtype=np.int64)
    for t in range(len(reward)):
        ukey = (turns.game[t], int(turns.episode[t]), int(turns.role[t]))
        if ukey not in index:
            index[ukey] = len(keys)
            keys.append((turns.game[t], int(turns.group[t]) if by_group else None, int(turns.role[t])))
        unit[t] = index[ukey]
    sums = np.bincount(unit, weights=reward, minlength=len(keys))
    counts = np.bincount(unit, minlength=len(keys))
    return unit, sums / np.maximum(counts, 1), keys


def _group_stats(returns: np.ndarray, keys: list[tuple]):
    """Per unit: (sum of R over its group, number of units in its group, unbiased group std)."""
    members: dict[tuple, list[int]] = {}
    for u, key in enumerate(keys):
        members.setdefault(key, []).append(u)
    total, count, std = (np.zeros(len(keys)) for _ in range(3))
    for units in members.values():
        values = returns[units]
        total[units], count[units] = values.sum(), len(units)
        std[units] = values.std(ddof=1) if len(units) > 1 else 0.0
    return total, count, std


def turn_rewards(turns: Turns) -> np.ndarray:
    """r_t = (reward_t - payoff_t) + payoff_t [t is its unit's last turn] (gae's per-turn rewards)."""
    reward = np.asarray(turns.reward, dtype=np.float64)
    payoff = reward if turns.payoff is None else np.asarray(turns.payoff, dtype=np.float64)
    unit, _, _ = _units(turns)
    last = np.zeros(len(reward), dtype=bool)
    last[[np.flatnonzero(unit == u)[-1] for u in np.unique(unit)] if len(unit) else []] = True
    return reward - payoff + payoff * last


def gae_advantages(turns: Turns, values: np.ndarray, gamma: float, lam: float) -> np.ndarray:
    """A_t of the module docstring (gae) for every unit, with values V [N]."""
    rewards, values = turn_rewards(turns), np.asarray(values, dtype=np.float64)
    unit, _, _ = _units(turns)
    adv = np.zeros(len(rewards))
    for u in np.unique(unit):
        idx = np.flatnonzero(unit == u)  # the unit's turns, in order
        running, next_value = 0.0, 0.0  # after the last turn: no next state
        for t in idx[::-1]:
            delta = rewards[t] + gamma * next_value - values[t]
            running = delta + gamma * lam * running
            adv[t], next_value = running, values[t]
    return adv


class Estimator:
    """An advantage estimator: `estimator(turns) -> advantages [N]`, with checkpointable state."""

    needs_values: ClassVar[bool] = False  # reads Turns.value (a model with a value head)
    aliases: ClassVar[dict] = {}  # option name in configs -> dataclass field (e.g. lambda -> lam)

    def __call__(self, turns: Turns) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def value_targets(self, turns: Turns, adv: np.ndarray) -> np.ndarray:
        """Targets R [N] of the value head: the reward-to-go of each turn's unit (gae: A + V)."""
        return gae_advantages(turns, np.zeros(len(turns.reward)), 1.0, 1.0)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


@dataclass
class NoBaseline(Estimator):
    """A_t = r_t."""

    def __call__(self, turns: Turns) -> np.ndarray:
        return np.asarray(turns.reward, dtype=np.float64).copy()


@dataclass
class RAE(Estimator):
    """Role-conditioned advantage estimation: an EMA baseline per (game, role), read before update."""

    decay: float = option(0.95, "EMA decay of the baseline: b <- decay * b + (1 - decay) * R, in [0, 1)")
    baselines: dict = field(init=False, default_factory=dict)  # state: (game, role) -> b

    def __post_init__(self):
        if not 0.0 <= self.decay < 1.0:
            raise UserError(f"advantage estimator 'rae': decay must be in [0, 1), got {self.decay}")

    def __call__(self, turns: Turns) -> np.ndarray:
        unit, returns, keys = _units(turns)
        before = np.empty(len(keys))
        for u, (game, _, role) in enumerate(keys):
            b = self.baselines.get((game, role), 0.0)
            before[u] = b
            self.baselines[(game, role)] = self.decay * b + (1.0 - self.decay) * returns[u]
        return np.asarray(turns.reward, dtype=np.float64) - before[unit]

    def state_dict(self) -> dict[str, Any]:
        # plain Python numbers, so the state loads with torch.load(weights_only=True)
        return {"baselines": [[str(game), int(role), float(b)] for (game, role), b in sorted(self.baselines.items())]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.baselines = {(game, int(role)): float(b) for game, role, b in state.get("baselines", [])}


@dataclass
class RLOO(Estimator):
    """Leave-one-out baseline over the games of a seed group (same game and role)."""

    def __call__(self, turns: Turns) -> np.ndarray:
        unit, returns, keys = _units(turns, by_group=True)
        total, count, _ = _group_stats(returns, keys)
        baseline = np.where(count > 1, (total - returns) / np.maximum(count - 1, 1), returns)
        return np.asarray(turns.reward, dtype=np.float64) - baseline[unit]


@dataclass
class GroupBaseline(Estimator):
    """GRPO's group-mean baseline over the games of a seed group, optionally std-scaled."""

    scale_std: bool = option(True, "divide by the group's return std (GRPO); false = Dr. GRPO's plain mean")
    eps: float = option(1e-4, "added to the std so equal returns give finite advantages (TRL uses 1e-4)")

    def __call__(self, turns: Turns) -> np.ndarray:
        unit, returns, keys = _units(turns, by_group=True)
        total, count, std = _group_stats(returns, keys)
        adv = np.asarray(turns.reward, dtype=np.float64) - (total / count)[unit]
        return adv / (std[unit] + self.eps) if self.scale_std else adv


@dataclass
class GAE(Estimator):
    """Generalised advantage estimation over each seat's turn sequence (module docstring)."""

    gamma: float = option(1.0, "discount per own turn of the seat (1 = the game's zero-sum payoff undiscounted)")
    lam: float = option(0.95, "config name `lambda`: 0 = one-step TD (r + gamma V' - V), 1 = Monte Carlo (R - V)")

    needs_values: ClassVar[bool] = True
    aliases: ClassVar[dict] = {"lambda": "lam"}

    def __post_init__(self):
        if not (0.0 <= self.gamma <= 1.0 and 0.0 <= self.lam <= 1.0):
            raise UserError(f"advantage estimator 'gae': gamma and lambda must be in [0, 1], got {self.gamma}, {self.lam}")

    def __call__(self, turns: Turns) -> np.ndarray:
        if turns.value is None:
            raise UserError("advantages.estimator=gae needs per-turn values: a model with value_head: true")
        return gae_advantages(turns, turns.value, self.gamma, self.lam)

    def value_targets(self, turns: Turns, adv: np.ndarray) -> np.ndarray:
        """R_t = A_t + V_t."""
        return np.asarray(adv, dtype=np.float64) + np.asarray(turns.value, dtype=np.float64)


ESTIMATORS: dict[str, type[Estimator]] = {"none": NoBaseline, "rae": RAE, "rloo": RLOO, "group": GroupBaseline,
                                          "gae": GAE}


def build_estimator(name: str, options: Mapping[str, Any] | None = None) -> Estimator:
    """An estimator by registry name; unknown names and options are one-line `UserError`s."""
    if name not in ESTIMATORS:
        raise unknown_name("advantage estimator", name, ESTIMATORS)
    cls = ESTIMATORS[name]
    fields = {next((a for a, f in cls.aliases.items() if f == field.name), field.name): field.name
              for field in dataclasses.fields(cls) if field.init}  # config name -> field
    valid = list(fields)
    for key in options or {}:
        if key not in valid:
            raise UserError(
                f"advantage estimator '{name}' has no option '{key}'{closest(key, valid)}; "
                f"valid options: {', '.join(valid) or 'none'}"
            )
    return cls(**{fields[k]: v for k, v in dict(options or {}).items()})


def finalize(adv: np.ndarray, normalize: bool = False, drop_zero: bool = False, eps: float = 1e-8):
    """(advantages float32 [N], keep bool [N]).

    keep_t = |A_t| > 1e-8 when drop_zero (else all True); with normalize, the kept advantages
    become (A - mean) / (std + eps) over the kept turns.
    """
    adv = np.asarray(adv, dtype=np.float64).copy()
    keep = np.abs(adv) > 1e-8 if drop_zero else np.ones(len(adv), dtype=bool)
    if normalize and keep.any():
        kept = adv[keep]
        adv[keep] = (kept - kept.mean()) / (kept.std() + eps)
    return adv.astype(np.float32), keep


def global_normalize(adv: np.ndarray, keep: np.ndarray, device: torch.device, eps: float = 1e-8) -> np.ndarray:
    """A <- (A - mean) / (std + eps) over the kept turns of ALL ranks (finalize's rule, all-reduced)."""
    kept = adv[keep].astype(np.float64)
    sums = all_reduce_sum(torch.tensor([kept.sum(), (kept ** 2).sum(), len(kept)], dtype=torch.float64, device=device))
    total, squares, n = (float(x) for x in sums)
    if n == 0:
        return adv
    mean = total / n
    std = math.sqrt(max(squares / n - mean * mean, 0.0))
    out = adv.astype(np.float64).copy()
    out[keep] = (kept - mean) / (std + eps)
    return out.astype(np.float32)
