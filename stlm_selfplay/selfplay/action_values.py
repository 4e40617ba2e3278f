"""Exact action values for small games: Q(h, b) of every legal action, by enumerating the rest
of the game under the learner's own policy (objective `mmd` with `values: exact`), and their
information-state average Q(I, b) (`values: infostate`).

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

values: infostate averages Q over the histories the mover cannot tell from h (Kuhn poker: the
opponent's two possible cards), each weighted by its chance and by the other seats' reach:

    Q(I, b) = sum_{h' in I} w(h') Q(h', b) / sum_{h' in I} w(h'),
    w(h') = chance(h') * prod_{(x, a) before h', x another seat's decision} pi(a | prompt(x))

with I the mover's information state (`Game.information_deals`: the consistent deals and their
chance probabilities; each h' is `history` replayed under its deal), pi the same self-play policy
(at the opponent seat's earlier decisions: the learner's own policy, whoever actually sat there).
The mover's own reach is the same for every h' in I (its own actions, from the same information
states) and cancels. This is MMD's full feedback: the expected return of the turn given what the
mover knows, so the deal drops out of the gradient too; what is left is which information states
the rollout visits. h's own deal is in I: were every w(h') to underflow to 0, Q(h, b) is used.

Cost: each game's remaining tree once per legal action (Kuhn poker: at most 3 decision nodes),
its prompts scored once per rollout (`prompt -> policy` cache, one batched `score_choices` call
per tick for the prompts not yet seen, through search.py's `ModelEvaluator.priors`). Games whose remaining tree exceeds `max_nodes` are
refused (tic-tac-toe from the opening has ~550,000 nodes): this is for small games.
`check_exact_values` refuses them when the config is checked (from each stage game's start),
before a run folder is written. How the loss uses Q (and why it subtracts V): objectives/mmd.py.

Wiring: the loop wraps the learner's policy (`with_exact_values`) when its RL objective has
`values: exact` or `infostate`; Decision.action_values -> batch extras['action_values'] (selfplay/batch.py).
No state: the cache lives for one rollout, and nothing here draws random numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from stlm_selfplay.errors import UserError
from stlm_selfplay.selfplay.policies import Decision, ModelPolicy, RolloutRandom
from stlm_selfplay.selfplay.search import ModelEvaluator

MAX_NODES = 10_000  # decision nodes enumerated below one turn at most


ENUMERATED = ("exact", "infostate")  # mmd `values` computed here (objectives/mmd.py VALUES)


def values_of(objective) -> str:
    """The objective's `values` option (mmd's), "sampled" for objectives without one."""
    return getattr(getattr(objective, "options", None), "values", "sampled")


def wants_exact_values(objective) -> bool:
    """Whether an objective asks for enumerated action values (mmd's `values: exact` or `infostate`)."""
    return values_of(objective) in ENUMERATED


def with_exact_values(policies: dict, objective, learner: str) -> dict:
    """`policies` with the one named `learner` wrapped in `ExactValuesPolicy` when `objective`
    wants enumerated values."""
    if wants_exact_values(objective) and learner in policies:
        policies[learner] = ExactValuesPolicy(policies[learner], values=values_of(objective))
    return policies


def check_exact_values(sp, values: str = "exact") -> None:
    """One-line UserErrors for `values: exact` / `infostate` where it cannot work (called by check_selfplay)."""
    from stlm_selfplay.envs import make

    if sp.search.simulations > 0:
        raise UserError(f"values: {values} needs the learner's own policy, not search; set "
                        "selfplay.search.simulations: 0 or values: sampled")
    if any(stage.temperature <= 0 for stage in sp.stages):
        raise UserError(f"values: {values} values the stages' sampled policy; set every stage's temperature > 0 "
                        "(greedy rollouts) or values: sampled")
    if sp.advantages.drop_zero:
        raise UserError(f"values: {values} trains every turn (its Q does not need a nonzero sampled advantage); "
                        "set selfplay.advantages.drop_zero: false")
    for stage in sp.stages:
        for name in stage.games:
            game = make(name, **dict(stage.game_options.get(name, {})))
            game.reset(seed=0)
            if values == "infostate":
                game.information_deals(game.current_player)  # UserError for games that do not list them
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
                    raise UserError(f"values: exact / infostate enumerate the rest of each game under the policy, "
                                    f"but {game.title} has more than {max_nodes} decision nodes after one turn; "
                                    "use them for small games (kuhn_poker) or set values: sampled")
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


def information_histories(game) -> list[tuple[object, float, list]]:
    """The histories h' in the mover's information state I (module docstring), h's own included:
    (h' as a game, chance(h'), the other seats' decisions on the way [(node, action played)])."""
    seat, legal, out = game.current_player, game.legal_actions(), []
    for deal, chance in game.information_deals(seat):
        node, path = game.clone().reset(seed=0, deal=deal), []
        for action in game.history:
            if node.current_player != seat:
                path.append((node.clone(), action))
            node.step(action)
        if node.history != game.history or node.done or node.current_player != seat or node.legal_actions() != legal:
            raise ValueError(f"{game.title}: history {game.history} replayed under deal {deal} leaves the "
                             "information state (Game.information_deals lists a deal it cannot share)")
        out.append((node, chance, path))
    return out


def infostate_action_values(game, policy_of) -> list[float]:
    """Q(I, b) for each of `game.legal_actions()` (in that order), for the player to move: module docstring."""
    weighted, total = [0.0] * len(game.legal_actions()), 0.0
    for node, chance, path in information_histories(game):
        w = chance * math.prod(policy_of(prior).get(action, 0.0) for prior, action in path)
        if w > 0.0:
            total += w
            weighted = [acc + w * q for acc, q in zip(weighted, action_values(node, policy_of))]
    return [acc / total for acc in weighted] if total > 0.0 else action_values(game, policy_of)


@dataclass
class ExactValuesPolicy:
    """The learner's constrained `ModelPolicy`, whose Decisions also carry `action_values`
    (Q(h, b) per candidate, or Q(I, b) with values="infostate": module docstring); prompts'
    policies cached for the rollout."""

    inner: ModelPolicy
    values: str = "exact"  # or "infostate"
    max_nodes: int = MAX_NODES
    cache: dict = field(default_factory=dict)  # prompt bytes -> {action: prob}
    is_model: bool = True

    @property
    def name(self) -> str:
        return self.inner.name

    def policy_of(self, node) -> dict[str, float]:
        return self.cache[self.inner.prompts([node], [node.current_player])[0]]

    def valued_nodes(self, game) -> list:
        """The decision nodes whose policies `game`'s action values read."""
        if self.values == "exact":
            return subtree_decisions(game, self.max_nodes)
        return [n for node, _, path in information_histories(game)
                for n in [prior for prior, _ in path] + subtree_decisions(node, self.max_nodes)]

    def act(self, games: Sequence, players: Sequence[int], gen: RolloutRandom) -> list[Decision]:
        decisions = self.inner.act(games, players, gen)
        new: dict[bytes, object] = {}
        for node in [n for g in games for n in self.valued_nodes(g)]:
            prompt = self.inner.prompts([node], [node.current_player])[0]
            if prompt not in self.cache:
                new.setdefault(prompt, node)
        if new:
            nodes = list(new.values())
            priors = ModelEvaluator(self.inner.model, self.inner.temperature, self.inner.style).priors(nodes, list(new))
            self.cache.update((prompt, dict(zip(node.legal_actions(), probs)))
                              for (prompt, node), probs in zip(new.items(), priors))
        values = action_values if self.values == "exact" else infostate_action_values
        for game, decision in zip(games, decisions):
            decision.action_values = values(game, self.policy_of)
        return decisions
