"""Batched PUCT search (AlphaZero-style expert iteration) over many games at once.

One `search` call grows one tree per root game; every simulation descends ALL trees, then
evaluates all their new leaves in ONE call to `evaluator(games, gen) -> (priors, values)`
(priors: one list per game over its legal actions; values: V(s) for the player to move):

    select   a* = argmax_a Q(s,a) + U(s,a),   U(s,a) = c_puct * P(s,a) * sqrt(N(s)) / (1 + N(s,a))
             N(s) = sum_b N(s,b) (sqrt(max(N(s), 1)), so the first pick follows the prior);
             Q(s,a) = W(s,a) / N(s,a) from the view of the player to move at s (0 when unvisited)
    expand   the leaf gets the evaluator's priors; a terminal leaf is scored by the game's rewards
    backup   every edge (s,a) on the path: N += 1, W += v[mover at s], where v is the per-seat
             value of the leaf: v[p] = V, v[other] = -V (two-player zero-sum: the sign flips
             across a seat change), or the game's rewards at a terminal leaf
    solve    an edge found to end the game with a win for its mover (reward > 0) is a proven
             win: `select` takes it from then on (MCTS-Solver's rule, Winands et al. 2008, for
             terminal children), so a mate in one collects the remaining visits

Before the first simulation each root is expanded and gets Dirichlet noise on its priors:
P(root, a) = (1 - eps) P + eps * Dir(alpha). The move played is drawn from the root visit
counts: pi(a) ~ N(root,a)^(1/tau) with tau = `temperature` while fewer than `temperature_moves`
moves have been played in the game, else tau -> 0 (a proven win, else argmax visits, first on
ties). The training target is the root visit distribution N(root,a) / sum_b N(root,b), or with
`target_temperature` t, N(root,a)^(1/t) / sum_b N(root,b)^(1/t).

All randomness (noise, play-outs, visit sampling) comes from the rollout's own `RolloutRandom`
(its `py` generator), which self-play checkpoints, so search runs resume exactly.

`ModelEvaluator`: priors = the model's constrained softmax over the legal actions (one batched
`score_choices` call, policies.py); values = the value head's V(s) (`state_values`), or, for a
model without one, the mean payoff of `playouts` uniformly random play-outs for the player to move.
With `prior: uniform` the search ignores the model (`random_evaluator`: uniform priors, play-out
values): a fixed teacher, against which the model-guided search shows what the prior adds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from stlm_selfplay.envs.formats import format_action, format_prompt
from stlm_selfplay.errors import UserError
from stlm_selfplay.model.choices import score_choices
from stlm_selfplay.model.tokenizer import PAD_ID
from stlm_selfplay.model.value_head import state_values
from stlm_selfplay.options import option
from stlm_selfplay.selfplay.policies import Decision, RolloutRandom, constrained_distribution

SEARCH_PRIORS = ("model", "uniform")  # SearchConfig.prior
Evaluator = Callable[[Sequence, RolloutRandom], tuple[list[list[float]], list[float]]]


@dataclass
class SearchConfig:
    """PUCT search for the learner's training moves (`selfplay.search`); evaluation never searches."""

    simulations: int = option(0, "simulations per move (0 = off: the learner samples from its own policy)")
    c_puct: float = option(1.5, "exploration constant of U(s,a)")
    dirichlet_alpha: float = option(0.3, "concentration of the root noise Dir(alpha) (smaller = spikier)")
    dirichlet_epsilon: float = option(0.25, "share of the noise in the root priors (0 = no noise)")
    temperature: float = option(1.0, "visit-count temperature tau of the first `temperature_moves` moves")
    temperature_moves: int = option(4, "moves (counted from the game's start) drawn from N^(1/tau); later moves take "
                                    "the most visited action (tau -> 0)")
    playouts: int = option(8, "a learner without a value head (or prior: uniform): random play-outs per leaf for "
                           "V(s)")
    target_temperature: float = option(1.0, "the distilled target is N(root,a)^(1/t) normalised (1 = the visit "
                                       "distribution; < 1 sharpens it toward the most visited move)")
    prior: str = option("model", "model: the learner's constrained policy (and value head) guide the search "
                        "(AlphaZero); uniform: the search ignores the model (uniform priors, values from `playouts` "
                        "random play-outs), a fixed teacher the policy is distilled from", choices=SEARCH_PRIORS)
    symmetries: bool = option(False, "also train on every searched position's images under the game's symmetries "
                              "(`Game.symmetries`: tic-tac-toe's 7 rotations and mirrors, connect four's mirror), "
                              "each with the visit target carried along")


def check_search(cfg: SearchConfig) -> None:
    """`UserError` for option values no search can run with (`prior`'s choices are checked with the
    rest of the section's, by `check_selfplay`)."""
    if cfg.simulations < 0 or cfg.playouts < 1 or cfg.c_puct <= 0 or cfg.dirichlet_alpha <= 0:
        raise UserError("selfplay.search needs simulations >= 0, playouts >= 1, c_puct > 0 and dirichlet_alpha > 0")
    if not cfg.target_temperature > 0:
        raise UserError(f"selfplay.search.target_temperature must be > 0, got {cfg.target_temperature}")
    if cfg.symmetries and cfg.simulations == 0:
        raise UserError("selfplay.search.symmetries augments search targets: set selfplay.search.simulations > 0")
    if not 0.0 <= cfg.dirichlet_epsilon <= 1.0 or cfg.temperature < 0 or cfg.temperature_moves < 0:
        raise UserError("selfplay.search needs 0 <= dirichlet_epsilon <= 1, temperature >= 0 and temperature_moves >= 0")


def check_searchable(game_name: str, options: dict | None = None) -> None:
    """`UserError` unless `game_name` is a two-player game without chance or hidden information
    (no deal) whose states can `clone()`: what PUCT with zero-sum backups needs."""
    from stlm_selfplay.envs import make

    game = make(game_name, **(options or {}))
    game.reset(seed=0)
    if game.num_players != 2 or game.deal is not None:
        raise UserError(f"selfplay.search needs two-player zero-sum games of perfect information; '{game_name}' "
                        f"has {game.num_players} players{' and a hidden deal' if game.deal is not None else ''}")
    try:
        game.clone()
    except Exception as exc:  # noqa: BLE001 - adapters may not support copying their env
        raise UserError(f"selfplay.search needs games that can clone(); '{game_name}' cannot ({exc})") from exc


@dataclass
class Node:
    """A searched state: the game there, and the statistics of the edges (actions) out of it."""

    game: object
    player: int  # the player to move (whose view Q takes)
    actions: list[str] = field(default_factory=list)
    prior: list[float] = field(default_factory=list)  # P(s,a)
    visits: list[int] = field(default_factory=list)  # N(s,a)
    total: list[float] = field(default_factory=list)  # W(s,a), for `player`
    children: list = field(default_factory=list)  # Node or None (not yet reached)
    expanded: bool = False
    win: int | None = None  # an edge proven to win at once for `player` (a terminal child)

    def expand(self, prior: Sequence[float]) -> None:
        self.actions = self.game.legal_actions()
        if len(prior) != len(self.actions):
            raise ValueError(f"evaluator gave {len(prior)} priors for {len(self.actions)} legal actions")
        self.prior, self.visits = [float(p) for p in prior], [0] * len(self.actions)
        self.total, self.children, self.expanded = [0.0] * len(self.actions), [None] * len(self.actions), True

    def select(self, c_puct: float) -> int:
        """The proven win if any, else argmax_a Q(s,a) + U(s,a) (first on ties)."""
        if self.win is not None:
            return self.win
        root_n = math.sqrt(max(sum(self.visits), 1))
        best, best_score = 0, -math.inf
        for a, (p, n, w) in enumerate(zip(self.prior, self.visits, self.total)):
            score = (w / n if n else 0.0) + c_puct * p * root_n / (1 + n)
            if score > best_score:
                best, best_score = a, score
        return best

    def child(self, a: int) -> "Node":
        if self.children[a] is None:
            game = self.game.clone()
            game.step(self.actions[a])
            self.children[a] = Node(game, game.current_player)
        return self.children[a]


def dirichlet(alpha: float, n: int, rng) -> list[float]:
    """A Dir(alpha, ..., alpha) sample of size n from a `random.Random` (normalised gammas)."""
    g = [rng.gammavariate(alpha, 1.0) for _ in range(n)]
    s = sum(g)
    return [x / s for x in g] if s > 0 else [1.0 / n] * n


def seat_values(game, value: float | None) -> tuple[float, float]:
    """Per-seat values of a leaf: its rewards when over, else (V, -V) oriented to the mover."""
    if game.done:
        return tuple(float(r) for r in game.rewards)
    return (value, -value) if game.current_player == 0 else (-value, value)


def search(roots: Sequence, evaluator: Evaluator, cfg: SearchConfig, gen: RolloutRandom) -> list[Node]:
    """Grow one PUCT tree per (non-terminal) root game with `cfg.simulations` simulations; returns
    the root nodes (visit counts in `.visits`). The root games are cloned, never stepped."""
    nodes = [Node(g.clone(), g.current_player) for g in roots]
    priors, _ = evaluator([n.game for n in nodes], gen)
    for node, prior in zip(nodes, priors):
        node.expand(prior)
        if cfg.dirichlet_epsilon > 0 and len(node.actions) > 1:
            noise = dirichlet(cfg.dirichlet_alpha, len(node.actions), gen.py)
            eps = cfg.dirichlet_epsilon
            node.prior = [(1 - eps) * p + eps * z for p, z in zip(node.prior, noise)]
    for _ in range(cfg.simulations):
        paths, leaves = [], []
        for root in nodes:
            node, path = root, []
            while node.expanded and not node.game.done:
                a = node.select(cfg.c_puct)
                path.append((node, a))
                node = node.child(a)
            paths.append(path)
            leaves.append(node)
        pending = [i for i, leaf in enumerate(leaves) if not leaf.game.done]
        values: dict[int, float] = {}
        if pending:
            priors, vals = evaluator([leaves[i].game for i in pending], gen)
            for i, prior, v in zip(pending, priors, vals):
                leaves[i].expand(prior)
                values[i] = float(v)
        for i, (path, leaf) in enumerate(zip(paths, leaves)):
            v = seat_values(leaf.game, values.get(i))
            for node, a in path:
                node.visits[a] += 1
                node.total[a] += v[node.player]
            if path and leaf.game.done and v[path[-1][0].player] > 0:
                path[-1][0].win = path[-1][1]
    return nodes


def visit_distribution(node: Node, temperature: float = 1.0) -> list[float]:
    """N(root,a)^(1/t) / sum_b N(root,b)^(1/t) (t = `temperature`; the prior when no simulation ran)."""
    if not sum(node.visits):
        return list(node.prior)
    powered = [float(n) ** (1.0 / temperature) if n else 0.0 for n in node.visits]
    total = sum(powered)
    return [p / total for p in powered]


def pick(node: Node, tau: float, rng) -> int:
    """An action index drawn with probability ~ N^(1/tau); tau <= 0: the proven win if any, else
    argmax N (first on ties)."""
    visits = node.visits if sum(node.visits) else node.prior
    if tau <= 0 and node.win is not None:
        return node.win
    if tau <= 0:
        return max(range(len(visits)), key=lambda a: (visits[a], -a))
    weights = [float(n) ** (1.0 / tau) for n in visits]
    return rng.choices(range(len(weights)), weights=weights)[0]


def uniform_priors(games: Sequence) -> list[list[float]]:
    return [[1.0 / len(g.legal_actions())] * len(g.legal_actions()) for g in games]


def random_playout_values(games: Sequence, playouts: int, rng) -> list[float]:
    """Mean payoff, for the player to move, of `playouts` uniformly random play-outs per game."""
    out = []
    for game in games:
        mover, total = game.current_player, 0.0
        for _ in range(playouts):
            g = game.clone()
            while not g.done:
                legal = g.legal_actions()
                g.step(legal[rng.randrange(len(legal))])
            total += g.rewards[mover]
        out.append(total / playouts)
    return out


def random_evaluator(playouts: int) -> Evaluator:
    """Uniform priors, values from random play-outs (a baseline and a test oracle)."""
    return lambda games, gen: (uniform_priors(games), random_playout_values(games, playouts, gen.py))


@dataclass
class ModelEvaluator:
    """Priors from the model's constrained softmax, values from its value head or play-outs."""

    model: torch.nn.Module
    temperature: float = 1.0  # of the prior softmax(s / tau) (<= 0 reads as 1)
    style: str = "compact"
    playouts: int = 8  # without a value head
    routing: dict = field(default_factory=dict)  # forward kwargs (causal routing for MoD models)

    def prompts(self, games: Sequence) -> list[bytes]:
        return [format_prompt(g, g.current_player, style=self.style).encode() for g in games]

    @torch.no_grad()
    def priors(self, games: Sequence, prompts: list[bytes] | None = None) -> list[list[float]]:
        """The model's constrained softmax(s / tau) over each game's legal actions (`prompts`: the
        games' prompts when the caller already has them)."""
        candidates = [[format_action(a).encode() for a in g.legal_actions()] for g in games]
        scores = score_choices(self.model, self.prompts(games) if prompts is None else prompts, candidates)
        tau = self.temperature if self.temperature > 0 else 1.0
        return [constrained_distribution(torch.tensor([float(lp.sum()) for lp in row], dtype=torch.float64),
                                         tau).tolist() for row in scores]

    @torch.no_grad()
    def __call__(self, games: Sequence, gen: RolloutRandom) -> tuple[list[list[float]], list[float]]:
        prompts = self.prompts(games)
        priors = self.priors(games, prompts)
        if getattr(self.model, "value_head", None) is None:
            return priors, random_playout_values(games, self.playouts, gen.py)
        device = next(self.model.parameters()).device
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), PAD_ID, dtype=torch.long)
        attn = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, :len(p)] = torch.frombuffer(bytearray(p), dtype=torch.uint8).long()
            attn[i, :len(p)] = 1
        values = state_values(self.model, ids.to(device), attn.to(device), **self.routing)
        return priors, values.double().cpu().tolist()


@dataclass
class SearchPolicy:
    """The learner acting through PUCT (constrained mode): one `search` over all waiting games.

    Its Decision: candidates (the legal actions), chosen (drawn from the visits), logprob = the
    model's own log pi(chosen) (the prior before noise), probs = that prior, search_probs = the
    root visit distribution (the `search_policy` objective's target); with `symmetries`, images =
    `image_decisions` (the same target in each symmetric position)."""

    model: torch.nn.Module
    cfg: SearchConfig
    name: str = "learner"
    temperature: float = 1.0  # of the prior softmax (the stage temperature)
    style: str = "compact"
    routing: dict = field(default_factory=dict)
    is_model: bool = True
    evaluator: Evaluator | None = None  # None = ModelEvaluator(model, ...) (prior: uniform: random_evaluator)

    def act(self, games, players, gen: RolloutRandom) -> list[Decision]:
        evaluator, raw = self.evaluator, {}
        if evaluator is None:
            model = ModelEvaluator(self.model, self.temperature, self.style, self.cfg.playouts, self.routing)
            evaluator = model
            if self.cfg.prior == "uniform":  # search without the model; the Decision keeps its root policy
                evaluator = random_evaluator(self.cfg.playouts)
                raw.update(enumerate(model.priors(games)))

        def remember(batch, g):  # the first call scores the roots: keep their noise-free priors
            priors, values = evaluator(batch, g)
            if not raw:
                raw.update(enumerate(priors))
            return priors, values

        roots = search(games, remember, self.cfg, gen)
        decisions = []
        for i, (game, node) in enumerate(zip(games, roots)):
            tau = self.cfg.temperature if game.turn < self.cfg.temperature_moves else 0.0
            idx = pick(node, tau, gen.py)
            cands = [format_action(a).encode() for a in node.actions]
            prior = raw[i]
            decision = Decision(
                text=cands[idx], prompt=format_prompt(game, game.current_player, style=self.style).encode(),
                logprob=math.log(max(prior[idx], 1e-300)), candidates=cands, chosen=idx, probs=list(prior),
                search_probs=visit_distribution(node, self.cfg.target_temperature))
            if self.cfg.symmetries:
                decision.images = image_decisions(game, node.actions, decision, self.style)
            decisions.append(decision)
        return decisions


def image_decisions(game, actions: Sequence[str], decision: Decision, style: str = "compact") -> list[Decision]:
    """`decision` moved into each image of `game` under its symmetries (`Game.symmetries`): the
    image's prompt and legal actions, target pi'(m(a)) = pi(a) and chosen m(chosen) for the action
    map m (logprob kept; probs left out: the model never scored the image)."""
    share = dict(zip(actions, decision.search_probs))
    out = []
    for image, moved in game.symmetries():
        back = {moved[a]: a for a in actions}
        legal = image.legal_actions()
        chosen = legal.index(moved[actions[decision.chosen]])
        cands = [format_action(b).encode() for b in legal]
        out.append(Decision(text=cands[chosen], prompt=format_prompt(image, image.current_player, style=style).encode(),
                            logprob=decision.logprob, candidates=cands, chosen=chosen,
                            search_probs=[share[back[b]] for b in legal]))
    return out
