"""Exact evaluators: Kuhn poker NashConv, tic-tac-toe optimal-move rate, and match play.

Kuhn poker (1 hand). A policy is a table {information state: {action: prob}} over the 12 states
"J", "Q", "K", "Jpb", ... (the first actor moves at "" and "pb", the second at "p" and "b";
see `kuhn_poker`). With v(s0, s1) the first actor's expected chips,
    NashConv(pi) = max_s0 v(s0, pi) - min_s1 v(pi, s1),    exploitability = NashConv / 2,
the best responses found by enumerating the 2**6 pure strategies of each seat (exact).

Tic-tac-toe. Over the 4,520 reachable non-terminal positions (either side to move), with p the
policy's probabilities and O the minimax-optimal moves:
    rate   = mean over positions of sum_{a in O} p(a) / sum_a p(a)
    greedy = mean over positions of |argmax p  intersect O| / |argmax p|   (ties split evenly)
`tictactoe_positions()` returns the positions so a model can score all of them in one batch;
`rate_from_probabilities(probs)` then gives both numbers.

Match play. `play_match` plays N seeded games between two players, alternating seats, and counts
wins/draws/losses/illegal by seat with Wilson 95% intervals (`wilson_interval`).
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Mapping, Sequence

from stlm_selfplay.envs.base import Game, derive_seed
from stlm_selfplay.envs.kuhn_poker import CARDS, KuhnPoker
from stlm_selfplay.envs.players import play_game
from stlm_selfplay.envs.registry import make
from stlm_selfplay.envs.tictactoe import TicTacToe, optimal_moves

Policy = Mapping[str, float]
PolicyFn = Callable[[Game], Policy]


def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (95% by default); (0, 1) when n = 0.

    centre = (p + z^2/(2n)) / (1 + z^2/n),  half = z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/(4n^2)).
    """
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _as_policy_fn(policy) -> PolicyFn:
    return policy.policy if hasattr(policy, "policy") else policy


# -- Kuhn poker -------------------------------------------------------------------------------
KUHN_PUBLIC = ("", "p", "b", "pb")  # public letters at which someone acts
KUHN_INFO_STATES = tuple(c + h for c in CARDS for h in KUHN_PUBLIC)
_PUBLIC_TO_ACTIONS = {"": [], "p": ["check"], "b": ["bet"], "pb": ["check", "bet"]}


@dataclass(frozen=True)
class KuhnTerminal:
    deal: tuple[int, int]
    path: tuple[tuple[int, str, str], ...]  # (seat, information state, action) per move
    payoff0: float  # chips won by seat 0


@lru_cache(maxsize=1)
def kuhn_terminals() -> tuple[KuhnTerminal, ...]:
    """The 30 terminal histories of one-hand Kuhn poker (6 deals x 5 action sequences), played
    out with the game itself."""
    out = []

    def walk(game: KuhnPoker, deal, path):
        if game.done:
            out.append(KuhnTerminal(deal, tuple(path), game.rewards[0]))
            return
        seat, state = game.current_player, game.info_state(game.current_player)
        for action in game.legal_actions():
            child = game.clone()
            child.step(action)
            walk(child, deal, path + [(seat, state, action)])

    for deal in itertools.permutations(range(3), 2):
        walk(KuhnPoker.from_history([], deal=(deal,)), deal, [])
    return tuple(out)


def kuhn_value(table0: Mapping[str, Policy], table1: Mapping[str, Policy]) -> float:
    """Expected chips of seat 0 when seat 0 plays `table0` and seat 1 plays `table1`."""
    tables = (table0, table1)
    total = 0.0
    for t in kuhn_terminals():
        prob = 1.0 / 6.0
        for seat, state, action in t.path:
            prob *= tables[seat][state].get(action, 0.0)
            if prob == 0.0:
                break
        total += prob * t.payoff0
    return total


def _pure_strategies(seat: int) -> list[dict[str, Policy]]:
    """Every deterministic strategy of `seat` (2 actions at each of its 6 information states)."""
    publics = ("", "pb") if seat == 0 else ("p", "b")
    states = [c + h for c in CARDS for h in publics]
    choices = [(("check", "bet") if h in ("", "p") else ("call", "fold")) for s in states for h in [s[1:]]]
    return [{s: {a: 1.0} for s, a in zip(states, pick)} for pick in itertools.product(*choices)]


def kuhn_nash_conv(table: Mapping[str, Policy]) -> float:
    """NashConv in chips of a 12-state policy table used by both seats (see module docstring)."""
    missing = [s for s in KUHN_INFO_STATES if s not in table]
    if missing:
        raise ValueError(f"policy table lacks information states {missing}")
    table = {s: _normalised(table[s]) for s in KUHN_INFO_STATES}
    best0 = max(kuhn_value(pure, table) for pure in _pure_strategies(0))
    worst1 = min(kuhn_value(table, pure) for pure in _pure_strategies(1))
    return best0 - worst1


def kuhn_exploitability(table: Mapping[str, Policy]) -> float:
    """NashConv / 2: the mean gain of a best responder over the two seats."""
    return kuhn_nash_conv(table) / 2.0


def kuhn_policy_table(policy) -> dict[str, dict[str, float]]:
    """Ask `policy` (a player with `.policy`, or a callable game -> {action: prob}) at each of
    the 12 information states; returns the table `kuhn_nash_conv` takes."""
    fn = _as_policy_fn(policy)
    table = {}
    for state in KUHN_INFO_STATES:
        card = CARDS.index(state[0])
        other = next(c for c in range(3) if c != card)
        public = state[1:]
        seat = len(public) % 2
        deal = (card, other) if seat == 0 else (other, card)
        game = KuhnPoker.from_history(_PUBLIC_TO_ACTIONS[public], deal=(deal,))
        table[state] = _normalised(fn(game))
    return table


def _normalised(policy: Policy) -> dict[str, float]:
    total = sum(policy.values())
    if total <= 0:
        raise ValueError(f"policy {dict(policy)} has no positive probability")
    return {a: p / total for a, p in policy.items()}


# -- tic-tac-toe ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Position:
    game: TicTacToe  # read-only: clone before stepping
    legal: tuple[str, ...]
    optimal: frozenset[str]  # minimax-optimal actions


@lru_cache(maxsize=1)
def tictactoe_positions() -> tuple[Position, ...]:
    """The 4,520 reachable non-terminal tic-tac-toe positions, in breadth-first order."""
    start = TicTacToe.from_history([])
    seen = {start.state_key()}
    frontier, out = [start], []
    while frontier:
        next_frontier = []
        for game in frontier:
            if game.done:
                continue
            legal = tuple(game.legal_actions())
            out.append(Position(game, legal, frozenset(optimal_moves(game))))
            for action in legal:
                child = game.clone()
                child.step(action)
                key = child.state_key()
                if key not in seen:
                    seen.add(key)
                    next_frontier.append(child)
        frontier = next_frontier
    return tuple(out)


def rate_from_probabilities(probs: Sequence[Policy], positions: Sequence[Position] | None = None) -> dict[str, float]:
    """{'rate', 'greedy'} from one {action: prob} per position (same order as `tictactoe_positions()`)."""
    positions = tictactoe_positions() if positions is None else positions
    if len(probs) != len(positions):
        raise ValueError(f"got {len(probs)} probability tables for {len(positions)} positions")
    mass = greedy = 0.0
    for pos, p in zip(positions, probs):
        total = sum(p.values())
        mass += sum(p.get(a, 0.0) for a in pos.optimal) / total if total > 0 else 0.0
        top = max(p.values(), default=0.0)
        best = [a for a, v in p.items() if v == top]
        greedy += sum(a in pos.optimal for a in best) / len(best) if best else 0.0
    n = len(positions)
    return {"rate": mass / n, "greedy": greedy / n, "positions": n}


def optimal_move_rate(policy) -> dict[str, float]:
    """Optimal-move rate of a player (with `.policy`) or a callable game -> {action: prob}."""
    fn = _as_policy_fn(policy)
    positions = tictactoe_positions()
    return rate_from_probabilities([fn(pos.game) for pos in positions], positions)


# -- match play -------------------------------------------------------------------------------
@dataclass
class SeatRecord:
    """Results of player A while it sits in one seat."""

    games: int = 0
    wins: int = 0
    draws: int = 0
    losses: int = 0
    illegal: int = 0  # games in which A made at least one illegal action
    opponent_illegal: int = 0
    payoff: float = 0.0  # A's total payoff

    def add(self, outcome: Sequence[str], rewards: Sequence[float], illegal_counts: Sequence[int], seat: int) -> None:
        """Count one finished game from the view of the player in `seat`."""
        self.games += 1
        self.wins += outcome[seat] == "win"
        self.draws += outcome[seat] == "draw"
        self.losses += outcome[seat] == "loss"
        self.illegal += illegal_counts[seat] > 0
        self.opponent_illegal += any(n > 0 for s, n in enumerate(illegal_counts) if s != seat)
        self.payoff += rewards[seat]

    def as_dict(self) -> dict:
        out = {"games": self.games, "mean_payoff": self.payoff / self.games if self.games else 0.0}
        for key in ("wins", "draws", "losses", "illegal", "opponent_illegal"):
            k = getattr(self, key)
            lo, hi = wilson_interval(k, self.games)
            out[key] = {"count": k, "rate": k / self.games if self.games else 0.0, "ci95": [lo, hi]}
        return out


@dataclass
class MatchResult:
    game: str
    players: tuple[str, str]
    seats: list[SeatRecord] = field(default_factory=lambda: [SeatRecord(), SeatRecord()])  # by A's seat

    def as_dict(self) -> dict:
        return {"game": self.game, "players": list(self.players), "by_seat": [s.as_dict() for s in self.seats]}

    def table(self) -> str:
        a, b = self.players
        rows = [f"{a} vs {b} ({self.game}), {a}'s results by its seat; rate [Wilson 95%]"]
        rows.append("seat  games  " + "  ".join(h.ljust(17) for h in ("win", "draw", "loss", "illegal")))
        for seat, rec in enumerate(self.seats):
            cells = []
            for key in ("wins", "draws", "losses", "illegal"):
                k = getattr(rec, key)
                lo, hi = wilson_interval(k, rec.games)
                cells.append(f"{k / max(rec.games, 1):.3f}[{lo:.2f},{hi:.2f}]")
            rows.append(f"{seat:<4}  {rec.games:<5}  " + "  ".join(c.ljust(17) for c in cells))
        return "\n".join(rows)


def play_match(game: str, player_a, player_b, games: int, seed: int, **game_options) -> MatchResult:
    """Play `games` games of `game`; A sits in seat i % 2 in game i. Game i and each seat's RNG
    are seeded from (seed, i), so a match is reproducible and any game can be replayed alone."""
    names = (getattr(player_a, "name", "") or type(player_a).__name__, getattr(player_b, "name", "") or type(player_b).__name__)
    result = MatchResult(game, names)
    board = make(game, **game_options)
    for i in range(games):
        seat_a = i % 2
        seated = (player_a, player_b) if seat_a == 0 else (player_b, player_a)
        board.reset(derive_seed(seed, "game", i))
        rngs = [random.Random(derive_seed(seed, "seat", i, s)) for s in range(2)]
        play_game(board, seated, rngs)
        result.seats[seat_a].add(board.outcome, board.rewards, board.illegal_counts, seat_a)
    return result
