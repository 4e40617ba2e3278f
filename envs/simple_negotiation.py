"""Simple negotiation: two traders with private values swap resources over a fixed number of turns.

Resources a, b, c. At reset each player gets an inventory (1..5 of each) and private values
(1..9 per unit of each), from the game's RNG or a given deal ((inventory, values) per seat).
Players alternate for `turns` turns (default 6); on a turn a player may
    "kX:mY"   offer to give k of X for m of Y (k, m in 1..max_offer; X != Y; it must hold k of X)
    "accept"  take the offer just made to it (it must hold m of Y): the trade happens
    "pass"    neither (an unanswered offer lapses)
A player's gain is the value change of its inventory at its own prices,
gain_i = sum_r value_i[r] * (end_i[r] - start_i[r]); payoffs compare the two gains:
+1 to the larger gain, -1 to the smaller, 0 each if equal (zero-sum).
Compact board: `i<inventory> v<values> o<offer to you or -> t<turn>/<turns>`, e.g.
`i3,1,2 v5,2,8 o2a:1b t3/6` (the legal list is too long for 64 bytes, so it is left out).
Players: random, heuristic (value-aware: accepts offers worth more to it than they cost;
offers one unit of its least valued resource for one of its most valued).
"""

from __future__ import annotations

from stlm_selfplay.envs.base import Game
from stlm_selfplay.envs.players import Player, uniform
from stlm_selfplay.envs.registry import register_game, register_player

RESOURCES = "abc"


def parse_offer(action: str) -> tuple[int, int, int, int]:
    """"2a:1b" -> (give count, give resource index, get count, get resource index)."""
    give, _, get = action.partition(":")
    return int(give[:-1]), RESOURCES.index(give[-1]), int(get[:-1]), RESOURCES.index(get[-1])


@register_game("simple_negotiation")
class SimpleNegotiation(Game):
    tag = "neg"
    perfect_information = False  # a private card / private values
    title = "Negotiation (resources a, b, c; you know only your own values)"
    _copied = ("inventory",)

    def __init__(self, *, turns: int = 6, max_offer: int = 2, **base):
        """turns: total turns (both players together); max_offer: largest count in an offer (1..5)."""
        if not isinstance(turns, int) or turns < 1:
            raise ValueError(f"turns must be a positive integer, got {turns!r}")
        if not isinstance(max_offer, int) or not 1 <= max_offer <= 5:
            raise ValueError(f"max_offer must be an integer in 1..5, got {max_offer!r}")
        self.turns, self.max_offer = turns, max_offer
        # (action, give count, give resource): every offer, and what holding it requires
        self.offers = tuple(
            (f"{k}{x}:{m}{y}", k, i) for i, x in enumerate(RESOURCES) for y in RESOURCES if x != y
            for k in range(1, max_offer + 1) for m in range(1, max_offer + 1)
        )
        super().__init__(**base)

    @property
    def deal(self):
        return self._deal

    def _new_state(self, deal) -> None:
        if deal is None:
            deal = tuple(
                (tuple(self.rng.randint(1, 5) for _ in RESOURCES), tuple(self.rng.randint(1, 9) for _ in RESOURCES))
                for _ in range(2)
            )
        deal = tuple((tuple(inv), tuple(val)) for inv, val in deal)
        if len(deal) != 2 or any(len(inv) != 3 or len(val) != 3 for inv, val in deal):
            raise ValueError(f"deal must be ((inventory, values), (inventory, values)) with 3 numbers each, got {deal}")
        self._deal = deal
        self.inventory = [list(deal[0][0]), list(deal[1][0])]
        self.values = (deal[0][1], deal[1][1])
        self.pending: str | None = None  # the offer made to current_player on the last turn

    def natural_max_turns(self) -> int:
        return self.turns

    def _legal(self) -> list[str]:
        inv = self.inventory[self.current_player]
        legal = [offer for offer, k, x in self.offers if inv[x] >= k]
        if self.pending is not None:
            _, _, m, y = parse_offer(self.pending)
            if inv[y] >= m:
                legal.append("accept")
        legal.append("pass")
        return legal

    def _apply(self, action: str) -> None:
        me = self.current_player
        if action == "accept":
            k, x, m, y = parse_offer(self.pending)
            offerer = self.inventory[me ^ 1]
            mine = self.inventory[me]
            offerer[x] -= k
            mine[x] += k
            mine[y] -= m
            offerer[y] += m
            self.pending = None
        else:
            self.pending = None if action == "pass" else action
        self.current_player ^= 1

    def gain(self, player: int) -> int:
        """Value change of `player`'s inventory at its own prices."""
        start, values = self._deal[player]
        return sum(v * (e - s) for v, e, s in zip(values, self.inventory[player], start))

    def _payoffs(self):
        if self.turn < self.turns:
            return None
        diff = self.gain(0) - self.gain(1)
        return (1.0, -1.0) if diff > 0 else (-1.0, 1.0) if diff < 0 else (0.0, 0.0)

    def board_text(self, player: int) -> str:
        inv = ",".join(map(str, self.inventory[player]))
        val = ",".join(map(str, self.values[player]))
        offer = self.pending if self.pending is not None and player == self.current_player else "-"
        return f"i{inv} v{val} o{offer} t{self.turn + 1}/{self.turns}"

    def describe(self, player: int) -> str:
        inv = ", ".join(f"{n} {r}" for r, n in zip(RESOURCES, self.inventory[player]))
        val = ", ".join(f"{r}={v}" for r, v in zip(RESOURCES, self.values[player]))
        text = (
            f"Turn {self.turn + 1} of {self.turns}. You hold {inv}; each unit is worth to you {val}. "
            "Offer [kX:mY] to give k of X for m of Y, [accept] an offer made to you, or [pass]. "
            "The player whose inventory value grows more wins."
        )
        if self.pending is not None and player == self.current_player:
            k, x, m, y = parse_offer(self.pending)
            text += f" Your opponent offers {k} {RESOURCES[x]} for {m} {RESOURCES[y]}."
        return text

    def state_key(self):
        return (self._deal, tuple(self.history), self.done, self._strikes)


@register_player("simple_negotiation", "heuristic")
class HeuristicPlayer(Player):
    """Accept an offer worth more than it costs (at its own values); else offer 1 of its least
    valued held resource for 1 of its most valued other one; else pass."""

    def policy(self, game: SimpleNegotiation) -> dict[str, float]:
        me = game.current_player
        values, inv = game.values[me], game.inventory[me]
        legal = game.legal_actions()
        if "accept" in legal:
            k, x, m, y = parse_offer(game.pending)
            if values[x] * k - values[y] * m > 0:
                return {"accept": 1.0}
        held = [r for r in range(3) if inv[r] > 0]
        if held:
            cheap = min(values[r] for r in held)
            give = [r for r in held if values[r] == cheap]
            offers = []
            for x in give:
                dear = max(values[r] for r in range(3) if r != x)
                if dear > values[x]:
                    offers += [f"1{RESOURCES[x]}:1{RESOURCES[y]}" for y in range(3) if y != x and values[y] == dear]
            if offers:
                return uniform(offers)
        return {"pass": 1.0}
