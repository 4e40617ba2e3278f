"""Exact action values for small games: Q(h, b) of every legal action, by enumerating the rest
of the game under the learner's own policy (objective `mmd` with `values: exact`).

At a learner turn in history h (the true state: both players' cards, the deal of later hands),
with mover m, for each legal action b

    Q(h, b) = V_m(h b),   V_m(x) = r_m(x)                              x terminal
                          V_m(x) = sum_a pi(a | prompt(x)) V_m(x a)     x a decision (either seat)

with pi the learner's constrained policy at the stage temperature (the same policy for both
seats: self-play values, also in a game against a pool snapshot or a bot, whose turns then only
decide which histories h are visited) and r_m the game's zero-sum payoff of seat m. Every future decision is
an expectation, so the only randomness left in the policy gradient is which histories the
rollout visits (the deal, the moves played before h): sum_b pi(b | s) Q(h, b) is exactly the
expected return of the turn given h, and its gradient in pi an unbiased, all-action estimate of
the sequence-form policy gradient (MMD's "full feedback" up to the sampled deal). A chance event
after h (a later hand's deal) enters through the true state, a one-sample expectation.

Cost: each game's remaining tree once per legal action (Kuhn poker: at most 3 decision nodes),
its prompts scored once per rollout (`prompt -> policy` cache, one batched `score_choices` call
per tick for the prompts not yet seen, through search.py's `ModelEvaluator.priors`). Games whose remaining tree exceeds `max_nodes` are
refused (tic-tac-toe from the opening has ~550,000 nodes): this is for small games.
`check_exact_values` refuses them when the config is checked (from each stage game's start),
before a run folder is written. How the loss uses Q (and why it subtracts V): objectives/mmd.py.

Wiring: the loop wraps the learner's policy (`with_exact_values`) when its RL objective has
`values: exact`; Decision.action_values -> batch extras['action_values'] (selfplay/batch.py).
No state: the cache lives for one rollout, and nothing here draws random numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from stlm_selfplay.errors import UserError
from stlm_selfplay.selfplay.policies import Decision, ModelPolicy, RolloutRandom
from stlm_selfplay.selfplay.search import ModelEvaluator

MAX_NODES = 10_000  # decision nodes enumerated below one turn at most


def wants_exact_values(objective) -> bool:
    """Whether an objective asks for exact action values (mmd's `values: exact`)."""
    return getattr(getattr(objective, "options", None), "values", "sampled") == "exact"


def with_exact_values(policies: dict, objective, learner: str) -> dict:
    """`policies` with the one named `learner` wrapped in `ExactValuesPolicy` when `objective`
    wants exact values."""
    if wants_exact_values(objective) and learner in policies:
        policies[learner] = ExactValuesPolicy(policies[learner])
    return policies


def check_exact_values(sp) -> None:
    """One-line UserErrors for `values: exact` where it cannot work (called by check_selfplay)."""
    from stlm_selfplay.envs import make

    if sp.search.simulations > 0:
        raise UserError("values: exact needs the learner's own policy, not search; set selfplay.search.simulations: 0 "
                        "or values: sampled")
    if any(stage.temperature <= 0 for stage in sp.stages):
        raise UserError("values: exact values the stages' sampled policy; set every stage's temperature > 0 "
                        "(greedy rollouts) or values: sampled")
    if sp.advantages.drop_zero:
        raise UserError("values: exact trains every turn (its Q does not need a nonzero sampled advantage); "
                        "set selfplay.advantages.drop_zero: false")
    for stage in sp.stages:
        for name in stage.games:
            game = make(name, **dict(stage.game_options.get(name, {})))
            game.reset(seed=0)
            subtree_decisions(game)


def subtree_decisions(game, max_nodes: int = MAX_NODES) -> list:
    """Every decision node (a game clone, player to move) below `game`'s legal actions, in
    depth-first order; UserError beyond `max_nodes`."""
    out, stack = [], [game]
    while stack:
        node = stack.pop()
        for action in node.legal_actions():
            child = node.clone()
            child.step(action)
            if not child.done:
                out.append(child)
                stack.append(child)
                if len(out) > max_nodes:
                    raise UserError(f"values: exact enumerates the rest of each game under the policy, but "
                                    f"{game.title} has more than {max_nodes} decision nodes after one turn; "
                                    "use it for small games (kuhn_poker) or set values: sampled")
    return out


def node_value(node, seat: int, policy_of) -> float:
    """V_seat(node) of the module docstring; `policy_of(node) -> {action: prob}`."""
    if node.done:
        return float(node.rewards[seat])
    total = 0.0
    for action, prob in policy_of(node).items():
        if prob > 0.0:
            child = node.clone()
            child.step(action)
            total += prob * node_value(child, seat, policy_of)
    return total


def action_values(game, policy_of) -> list[float]:
    """Q(h, b) for each of `game.legal_actions()` (in that order), for the player to move."""
    seat, out = game.current_player, []
    for action in game.legal_actions():
        child = game.clone()
        child.step(action)
        out.append(node_value(child, seat, policy_of))
    return out


@dataclass
class ExactValuesPolicy:
    """The learner's constrained `ModelPolicy`, whose Decisions also carry `action_values`
    (Q(h, b) per candidate, module docstring); prompts' policies cached for the rollout."""

    inner: ModelPolicy
    max_nodes: int = MAX_NODES
    cache: dict = field(default_factory=dict)  # prompt bytes -> {action: prob}
    is_model: bool = True

    @property
    def name(self) -> str:
        return self.inner.name

    def policy_of(self, node) -> dict[str, float]:
        return self.cache[self.inner.prompts([node], [node.current_player])[0]]

    def act(self, games: Sequence, players: Sequence[int], gen: RolloutRandom) -> list[Decision]:
        decisions = self.inner.act(games, players, gen)
        new: dict[bytes, object] = {}
        for node in [n for g in games for n in subtree_decisions(g, self.max_nodes)]:
            prompt = self.inner.prompts([node], [node.current_player])[0]
            if prompt not in self.cache:
                new.setdefault(prompt, node)
        if new:
            nodes = list(new.values())
            priors = ModelEvaluator(self.inner.model, self.inner.temperature, self.inner.style).priors(nodes, list(new))
            self.cache.update((prompt, dict(zip(node.legal_actions(), probs)))
                              for (prompt, node), probs in zip(new.items(), priors))
        for game, decision in zip(games, decisions):
            decision.action_values = action_values(game, self.policy_of)
        return decisions
