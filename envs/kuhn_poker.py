"""Kuhn poker: a 3-card deck (J < Q < K), ante 1, one bet of 1, `rounds` hands (1 = classic).

Each hand: both ante 1 and get one card; the first to act (seat 0 in hand 1, then alternating)
may check or bet; facing a check: check (showdown for 1) or bet; facing a bet: call (showdown
for 2) or fold (the bettor wins the 1 ante). Payoffs are chips won over all hands (zero-sum).
Under the "lose" illegal rule the offender forfeits the most it could lose, 2 chips per hand.

Actions: "check", "bet", "call", "fold". The deal is a tuple of (card of seat 0, card of seat 1)
per hand, cards 0=J, 1=Q, 2=K. An information state is the player's card then the public
letters of the current hand, "p" for check/fold and "b" for bet/call (the classic notation):
"K", "Qp", "Jb", "Kpb" (12 states in a hand; the first actor moves at "" and "pb").
Compact board: `<card> <public letters or ->`, plus ` h<hand>/<rounds> <chips>` when rounds > 1.
Players: random, nash (the equilibrium family with parameter alpha in [0, 1/3]; alias 'optimal').
"""

from __future__ import annotations

from stlm_selfplay.envs.base import Game
from stlm_selfplay.envs.players import Player
from stlm_selfplay.envs.registry import register_game, register_player
from stlm_selfplay.errors import UserError

CARDS = "JQK"
PUBLIC = {"check": "p", "fold": "p", "bet": "b", "call": "b"}


@register_game("kuhn_poker")
class KuhnPoker(Game):
    tag = "kuhn"
    perfect_information = False  # a private card / private values
    title = "Kuhn poker (cards J < Q < K, ante 1, bet 1)"
    _copied = ("hand_actions", "chips")

    def __init__(self, *, rounds: int = 1, **base):
        """rounds: hands played (1 = classic Kuhn poker); payoffs are chips won over all hands."""
        if not isinstance(rounds, int) or rounds < 1:
            raise ValueError(f"rounds must be a positive integer, got {rounds!r}")
        self.rounds = rounds
        super().__init__(**base)

    @property
    def deal(self) -> tuple[tuple[int, int], ...]:
        return self._deal

    def _new_state(self, deal) -> None:
        if deal is None:
            deal = tuple(tuple(self.rng.sample(range(3), 2)) for _ in range(self.rounds))
        deal = tuple(tuple(hand) for hand in deal)
        if len(deal) != self.rounds or any(len(h) != 2 or h[0] == h[1] or not set(h) <= {0, 1, 2} for h in deal):
            raise ValueError(f"deal must be {self.rounds} pairs of distinct cards in 0..2, got {deal}")
        self._deal = deal
        self.hand = 0
        self.hand_actions: list[str] = []
        self.chips = [0.0, 0.0]
        self.current_player = 0

    def natural_max_turns(self) -> int:
        return 3 * self.rounds

    def first_to_act(self, hand: int | None = None) -> int:
        return (self.hand if hand is None else hand) % 2

    def _legal(self) -> list[str]:
        return ["call", "fold"] if "bet" in self.hand_actions else ["check", "bet"]

    def _apply(self, action: str) -> None:
        acts = self.hand_actions
        acts.append(action)
        mover = self.current_player
        cards = self._deal[self.hand]
        winner = 0 if cards[0] > cards[1] else 1
        if action == "fold":
            self._settle(mover ^ 1, 1.0)
        elif action == "call":
            self._settle(winner, 2.0)
        elif acts == ["check", "check"]:
            self._settle(winner, 1.0)
        else:
            self.current_player = mover ^ 1

    def _settle(self, winner: int, amount: float) -> None:
        """End the hand: `winner` takes `amount` from the other; deal the next hand."""
        self.chips[winner] += amount
        self.chips[winner ^ 1] -= amount
        self.hand += 1
        self.hand_actions = []
        self.current_player = self.first_to_act()

    def _payoffs(self):
        return tuple(self.chips) if self.hand >= self.rounds else None

    def _forfeit(self, offender: int) -> tuple[float, ...]:
        stake = 2.0 * self.rounds
        return tuple(-stake if p == offender else stake for p in range(2))

    def card(self, player: int) -> str:
        return CARDS[self._deal[min(self.hand, self.rounds - 1)][player]]

    def public(self) -> str:
        """Public letters of the current hand: "p" check/fold, "b" bet/call."""
        return "".join(PUBLIC[a] for a in self.hand_actions)

    def info_state(self, player: int) -> str:
        """`player`'s card then the current hand's public letters, e.g. "Kpb"."""
        return self.card(player) + self.public()

    def board_text(self, player: int) -> str:
        text = f"{self.card(player)} {self.public() or '-'}"
        if self.rounds > 1:
            text += f" h{min(self.hand + 1, self.rounds)}/{self.rounds} {self.chips[player]:+g}"
        return text

    def describe(self, player: int) -> str:
        seen = ", ".join(self.hand_actions) or "nothing yet"
        text = f"Your card: {self.card(player)}. This hand so far: {seen}."
        if self.rounds > 1:
            text += f" Hand {min(self.hand + 1, self.rounds)} of {self.rounds}; your chips so far: {self.chips[player]:+g}."
        return text

    def information_deals(self, player: int) -> list[tuple[tuple[tuple[int, int], ...], float]]:
        """`player` sees its own card, not the other's: the deals with the same card for `player` and
        either of the two other cards for the opponent, 1/2 each (rounds: 1 only: with more hands the
        chips after a showdown tell the earlier cards apart, and the prompt shows no earlier hand)."""
        if self.rounds != 1:
            raise UserError(f"kuhn_poker information states are listed for rounds: 1 only (got rounds: {self.rounds}); "
                            "use values: exact or sampled")
        own = self._deal[0][player]
        others = [c for c in range(3) if c != own]
        return [(((own, c) if player == 0 else (c, own),), 1.0 / len(others)) for c in others]

    def state_key(self):
        return (self._deal, tuple(self.history), self.done, self._strikes)


def nash_policy(info_state: str, alpha: float) -> dict[str, float]:
    """The Kuhn equilibrium family (Kuhn 1950) at an information state, first actor's alpha.

    First actor: J bets alpha; Q checks; K bets 3*alpha; after check-bet: J folds,
    Q calls alpha + 1/3, K calls. Second actor: facing a bet: J folds, Q calls 1/3, K calls;
    facing a check: J bets 1/3, Q checks, K bets.
    """
    card, public = info_state[0], info_state[1:]
    if public == "":
        p = {"J": alpha, "Q": 0.0, "K": 3 * alpha}[card]
        return {"check": 1 - p, "bet": p}
    if public == "pb":
        p = {"J": 0.0, "Q": alpha + 1 / 3, "K": 1.0}[card]
        return {"call": p, "fold": 1 - p}
    if public == "b":
        p = {"J": 0.0, "Q": 1 / 3, "K": 1.0}[card]
        return {"call": p, "fold": 1 - p}
    p = {"J": 1 / 3, "Q": 0.0, "K": 1.0}[card]  # public == "p"
    return {"check": 1 - p, "bet": p}


@register_player("kuhn_poker", "nash")
@register_player("kuhn_poker", "optimal")
class NashPlayer(Player):
    """Plays the equilibrium family member `alpha` in every hand (from its own information state)."""

    def __init__(self, alpha: float = 1 / 6):
        """alpha: the first actor's bluffing frequency with J, in [0, 1/3] (all give value -1/18)."""
        if not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1 / 3 + 1e-12:
            raise ValueError(f"alpha must be in [0, 1/3], got {alpha!r}")
        self.alpha = float(alpha)

    def policy(self, game: KuhnPoker) -> dict[str, float]:
        return nash_policy(game.info_state(game.current_player), self.alpha)
