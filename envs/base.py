"""The game interface every text game implements, and the illegal-action rule.

A `Game` is an n-player, turn-based, zero-sum game with its own seeded RNG (`self.rng`, a
`random.Random`; nothing here touches Python's global `random`). Subclasses fill five hooks:

    _new_state(deal)   set up the start position (deal cards from `self.rng` unless given)
    _legal()           legal actions of `current_player`, as strings without brackets ("4", "bet")
    _apply(action)     play one legal action; update `current_player`
    _payoffs()         the payoffs once the game is over, else None
    board_text(player) / describe(player)   the position as that player sees it (compact / verbose)

and the base class does the rest: text parsing, the illegal-action rule, the turn limit,
history, cloning and replay. Text for a model is made only in `stlm_selfplay.envs.formats`.

Illegal actions follow `illegal=` (a config string):
    "lose"      the game ends at once; the offender loses (`_forfeit`: -1 for it, +1/(n-1) for the others)
    "retry:N"   the same player moves again, with feedback in its next prompt; its (N+1)-th
                illegal attempt in a row loses as under "lose"
    "random"    a uniformly random legal action (from the game's RNG) is played instead, flagged
The step result says which happened (`rule`). Rewards stay the game's own zero-sum payoffs;
shaping (e.g. an extra penalty for the offender) belongs to self-play, not here.
"""

from __future__ import annotations

import copy
import hashlib
import random
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Sequence

from stlm_selfplay.errors import UserError
from stlm_selfplay.envs.formats import format_prompt, parse_action


@dataclass(frozen=True)
class IllegalRule:
    """How an illegal action is handled: kind in {'lose', 'retry', 'random'}; `retries` for retry."""

    kind: str = "lose"
    retries: int = 0

    @classmethod
    def parse(cls, spec: "str | IllegalRule") -> "IllegalRule":
        """'lose' | 'random' | 'retry:N' (N >= 0 extra attempts; 'retry' alone means retry:1)."""
        if isinstance(spec, IllegalRule):
            return spec
        text = str(spec).strip().lower()
        if text in ("lose", "random"):
            return cls(text)
        if text == "retry" or text.startswith("retry:"):
            count = text.partition(":")[2] or "1"
            if count.isdigit():
                return cls("retry", int(count))
        raise UserError(f"unknown illegal-action rule '{spec}'; use lose, random or retry:N (e.g. retry:2)")


class StepResult(NamedTuple):
    """What one `step` did (a named tuple: cheap to make on the hot path).

    player:  the seat that acted
    legal:   whether the text named a legal action
    applied: the action actually played (the named one, or the random substitute); None if none
    rule:    'ok' (legal), or the illegal-action rule that fired: 'lose' | 'retry' | 'random'
    done:    the game is over
    rewards: the payoffs per seat (all zero until the game is over)
    """

    player: int
    legal: bool
    applied: str | None
    rule: str
    done: bool
    rewards: tuple[float, ...]


class Game:
    """Base class of the native games (see the module docstring for the hooks)."""

    name: ClassVar[str] = ""  # registry key, set by `register_game`
    tag: ClassVar[str] = ""  # short game tag that opens every compact prompt
    title: ClassVar[str] = ""  # the game's name in verbose prompts
    num_players: ClassVar[int] = 2
    sides: ClassVar[tuple[str, ...]] = ("a", "b")  # compact side names, one per seat
    side_names: ClassVar[tuple[str, ...]] = ("player 1", "player 2")  # verbose side names
    _copied: ClassVar[tuple[str, ...]] = ()  # mutable attributes `clone` copies (besides the base's)
    raw_prompt = None  # adapters whose env brings its own text set a method (player) -> str here
    perfect_information: ClassVar[bool] = True  # every player may see every earlier prompt (no private cards
    #                                             or values): the `transcript` prompt style needs it

    def __init__(self, *, illegal: str = "lose", max_turns: int | None = None, seed: int | None = None):
        """illegal: the illegal-action rule (lose | retry:N | random).
        max_turns: legal moves after which the game is a draw (None: the game's natural bound).
        seed: seed of the game's RNG (deals, random substitutes); reset(seed) reseeds."""
        self.illegal_rule = IllegalRule.parse(illegal)
        if max_turns is not None and (not isinstance(max_turns, int) or max_turns < 1):
            raise UserError(f"max_turns must be a positive integer, got {max_turns!r}")
        self._max_turns = max_turns
        self.reset(seed)

    # -- hooks ----------------------------------------------------------------------------
    def _new_state(self, deal: Any) -> None:
        raise NotImplementedError

    def _legal(self) -> list[str]:
        raise NotImplementedError

    def _apply(self, action: str) -> None:
        raise NotImplementedError

    def _payoffs(self) -> tuple[float, ...] | None:
        raise NotImplementedError

    def natural_max_turns(self) -> int:
        """An upper bound on the game's length (the default `max_turns`)."""
        raise NotImplementedError

    def board_text(self, player: int) -> str:
        """The position as `player` sees it, in a few characters (compact prompts)."""
        raise NotImplementedError

    def describe(self, player: int) -> str:
        """The position as `player` sees it, in sentences (verbose prompts)."""
        raise NotImplementedError

    def _forfeit(self, offender: int) -> tuple[float, ...]:
        """Payoffs when `offender` loses by an illegal action: -1 for it, +1/(n-1) for each other."""
        other = 1.0 / (self.num_players - 1)
        return tuple(-1.0 if p == offender else other for p in range(self.num_players))

    @property
    def deal(self) -> Any:
        """The chance outcomes drawn at reset (cards, private values); None for games without chance."""
        return None

    # -- the interface --------------------------------------------------------------------
    def reset(self, seed: int | None = None, *, deal: Any = None) -> "Game":
        """Start a new game; `seed` seeds the game's own RNG; `deal` fixes the chance outcomes."""
        self._seed, self._rng = seed, None
        self._legal_now: list[str] | None = None
        self._turn_limit = self.max_turns
        self.turn = 0
        self.history: list[str] = []
        self.done = False
        self.rewards: tuple[float, ...] = (0.0,) * self.num_players
        self.illegal_counts = [0] * self.num_players
        self.feedback: str | None = None  # the current player's rejected text, shown under retry
        self._strikes = 0
        self.current_player = 0
        self._new_state(deal)
        return self

    @property
    def rng(self) -> random.Random:
        """The game's own generator, seeded at reset (made on first use: seeding costs ~10 us)."""
        if self._rng is None:
            self._rng = random.Random(self._seed)
        return self._rng

    @property
    def max_turns(self) -> int:
        return self._max_turns if self._max_turns is not None else self.natural_max_turns()

    def _current_legal(self) -> list[str]:
        """The legal actions, computed once per position (steps and resets clear the cache)."""
        if self._legal_now is None:
            self._legal_now = self._legal()
        return self._legal_now

    def refresh(self) -> None:
        """Forget cached facts about the position; call after editing a game's fields directly."""
        self._legal_now = None

    def legal_actions(self, player: int | None = None) -> list[str]:
        """Legal actions (no brackets) of `player` (default: the one to move); [] if not its turn."""
        if self.done or (player is not None and player != self.current_player):
            return []
        return list(self._current_legal())

    def observation(self, player: int | None = None) -> str:
        """The compact prompt for `player` (see `formats.format_prompt` for other styles)."""
        return format_prompt(self, self.current_player if player is None else player)

    def step(self, action: str | bytes | Any) -> StepResult:
        """Play `action`: a `str` equal to a legal action is played as is (scripted players);
        anything else (model text, bytes) is parsed with `parse_action` (first bracketed token).
        Never raises on any text; raises RuntimeError only if the game is already over."""
        if self.done:
            raise RuntimeError("the game is over; call reset() first")
        player = self.current_player
        legal = self._legal_now or self._current_legal()
        chosen = action if action.__class__ is str and action in legal else parse_action(action)
        if chosen is not None and (chosen is action or chosen in legal):
            self._play(chosen)
            return StepResult(player, True, chosen, "ok", self.done, self.rewards)
        self.illegal_counts[player] += 1
        rule = self.illegal_rule
        if rule.kind == "random":
            substitute = legal[self.rng.randrange(len(legal))]
            self._play(substitute)
            return StepResult(player, False, substitute, "random", self.done, self.rewards)
        if rule.kind == "retry" and self._strikes < rule.retries:
            self._strikes += 1
            self.feedback = _preview(action)
            return StepResult(player, False, None, "retry", False, self.rewards)
        self._finish(self._forfeit(player))
        return StepResult(player, False, None, "lose", True, self.rewards)

    def _play(self, action: str) -> None:
        self.history.append(action)
        self._apply(action)
        self._legal_now = None
        self.turn += 1
        self._strikes = 0
        self.feedback = None
        payoffs = self._payoffs()
        if payoffs is not None:
            self._finish(payoffs)
        elif self.turn >= self._turn_limit:
            self._finish((0.0,) * self.num_players)

    def _finish(self, payoffs: Sequence[float]) -> None:
        self.done = True
        self.rewards = tuple(float(x) for x in payoffs)

    @property
    def outcome(self) -> tuple[str, ...] | None:
        """'win' | 'draw' | 'loss' per seat (by the sign of its payoff), or None while playing."""
        return outcomes(self.rewards) if self.done else None

    def at_start(self) -> "Game":
        """A copy of this game at its start: same options, seed and deal, no moves played."""
        start = self.clone()
        return start.reset(self._seed, deal=self.deal)

    def clone(self) -> "Game":
        """An independent copy (RNG state included): stepping it leaves this game unchanged."""
        new = copy.copy(self)
        if self._rng is not None:
            new._rng = random.Random()
            new._rng.setstate(self._rng.getstate())
        for name in ("history", "illegal_counts") + self._copied:
            setattr(new, name, copy.copy(getattr(self, name)))
        return new

    def symmetries(self) -> list[tuple["Game", dict[str, str]]]:
        """This state's images under the game's symmetries, the identity left out: (the image state,
        a map from each action here to the same move in the image). Search targets are augmented
        with them (`selfplay.search.symmetries`). Default: the game declares none."""
        return []

    def information_deals(self, player: int) -> list[tuple[Any, float]]:
        """The deals `player` cannot tell from this game's, this one included, each with its chance
        probability given what `player` has seen (summing to 1): with `history` replayed under each
        deal (`reset(deal=...)` then `step`), the histories sharing `player`'s information state.
        Information-state action values need it (mmd's `values: infostate`, selfplay/action_values.py).
        Default: the game does not declare them (UserError)."""
        raise UserError(f"{self.title or type(self).__name__} does not list the deals behind an information state "
                        "(Game.information_deals); use values: exact or sampled for it")

    def state_key(self) -> Any:
        """A hashable key equal for equal states (default: the deal and the action history)."""
        return (repr(self.deal), tuple(self.history), self.turn, self.done, self._strikes)

    @classmethod
    def from_history(cls, actions: Sequence[str], *, deal: Any = None, seed: int = 0, **options) -> "Game":
        """The game after `actions` (each must be legal) from the start, with `deal` if given."""
        game = cls(seed=seed, **options)
        game.reset(seed, deal=deal)
        for action in actions:
            if game.done:
                raise ValueError(f"history {list(actions)} continues after the game ended")
            if not game.step(action).legal:
                raise ValueError(f"illegal action {action!r} in history {list(actions)}")
        return game

    def __repr__(self) -> str:
        return f"{type(self).__name__}(turn={self.turn}, player={self.current_player}, board={self.board_text(self.current_player)!r})"


def _preview(action: Any, limit: int = 8) -> str:
    """A short printable echo of rejected input, for retry feedback: text, bytes or any other
    object a caller passes (`-1`, `1.5`, `None`: their str()); never raises."""
    try:
        text = bytes(action).decode("utf-8", "replace") if isinstance(action, (bytes, bytearray, memoryview)) \
            else str(action)
    except Exception:  # noqa: BLE001 - feedback must never raise (e.g. a str() that fails)
        text = "?"
    shown = "".join(c if " " <= c <= "~" else "?" for c in text[:limit])  # printable ASCII only
    return shown + ("..." if len(text) > limit else "")


def derive_seed(seed: int, *keys) -> int:
    """A 63-bit seed for a sub-task (a game, a seat) from a run seed: blake2b of the keys' repr.

    Independent of PYTHONHASHSEED and of the order sub-tasks run in.
    """
    digest = hashlib.blake2b(repr((seed,) + keys).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def outcomes(rewards: Sequence[float]) -> tuple[str, ...]:
    """'win' | 'draw' | 'loss' per seat, by the sign of its payoff."""
    return tuple("win" if r > 0 else "loss" if r < 0 else "draw" for r in rewards)
