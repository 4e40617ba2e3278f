"""Nim: take one or more objects from one pile; normal play: who takes the last object wins;
misère (`misere=True`): who takes the last object loses.

Options: piles (default (3, 4, 5)), misere (False). Actions "p:k": take k from pile p (0-based),
e.g. "1:3". Compact board: pile sizes joined by ",", e.g. `3,4,5`; tag `nim` (`nimm` misère).
Players: random, optimal (nim-sum strategy: always moves to a losing position when it can).
"""

from __future__ import annotations

from functools import reduce
from operator import xor
from typing import Sequence

from stlm_selfplay.envs.base import Game
from stlm_selfplay.envs.players import Player, uniform
from stlm_selfplay.envs.registry import register_game, register_player


@register_game("nim")
class Nim(Game):
    title = "Nim"
    _copied = ("piles",)

    def __init__(self, *, piles: Sequence[int] = (3, 4, 5), misere: bool = False, **base):
        """piles: starting pile sizes (1..9 piles of 1..99); misere: the last taker loses."""
        piles = tuple(piles)
        if not 1 <= len(piles) <= 9 or not all(isinstance(p, int) and 1 <= p <= 99 for p in piles):
            raise ValueError(f"piles must be 1..9 integers in 1..99, got {list(piles)}")
        self.start_piles, self.misere = piles, bool(misere)
        self.tag = "nimm" if self.misere else "nim"
        super().__init__(**base)

    def _new_state(self, deal) -> None:
        self.piles = list(self.start_piles)

    def natural_max_turns(self) -> int:
        return sum(self.start_piles)

    def _legal(self) -> list[str]:
        return [f"{p}:{k}" for p, size in enumerate(self.piles) for k in range(1, size + 1)]

    def _apply(self, action: str) -> None:
        pile, _, count = action.partition(":")
        self.piles[int(pile)] -= int(count)
        self.current_player ^= 1

    def _payoffs(self):
        if any(self.piles):
            return None
        last_taker = self.current_player ^ 1
        winner = last_taker ^ 1 if self.misere else last_taker
        return (1.0, -1.0) if winner == 0 else (-1.0, 1.0)

    def board_text(self, player: int) -> str:
        return ",".join(map(str, self.piles))

    def describe(self, player: int) -> str:
        rule = "whoever takes the last object loses" if self.misere else "whoever takes the last object wins"
        piles = ", ".join(f"pile {i}: {n}" for i, n in enumerate(self.piles))
        return f"Take one or more objects from one pile, written [pile:count]; {rule}. Piles: {piles}."

    def state_key(self):
        return (tuple(self.piles), self.current_player, self.done, self._strikes)


def mover_wins(piles: Sequence[int], misere: bool) -> bool:
    """Whether the player to move wins with perfect play (Bouton).

    Normal play: nim-sum (XOR of the piles) != 0. Misère: the same, except when every pile is
    0 or 1: then the mover wins iff the number of 1-piles is even.
    """
    if misere and all(p <= 1 for p in piles):
        return sum(piles) % 2 == 0
    return reduce(xor, piles, 0) != 0


@register_player("nim", "optimal")
class OptimalPlayer(Player):
    """Moves to a position lost for the opponent when there is one (nim-sum), else random."""

    def policy(self, game: Nim) -> dict[str, float]:
        legal = game.legal_actions()
        winning = []
        for action in legal:
            pile, _, count = action.partition(":")
            after = list(game.piles)
            after[int(pile)] -= int(count)
            if not mover_wins(after, game.misere):
                winning.append(action)
        return uniform(winning or legal)
