"""Scripted players and the loop that plays one game.

A player acts through the same text interface as a model: `act(game, rng) -> str` returns the
text to pass to `game.step` (scripted players return a legal action string, a model wrapper may
return raw model text). Where it can, a player also gives `policy(game) -> {action: prob}` (the
exact evaluators use it). A player reads only what its seat may see (its own cards and values,
the public history), even though it is handed the whole game object.

Vocabulary: `play_game` returns a `GameRecord` of `Move`s (any player, scripted or a model
wrapper, one game at a time). Self-play's batched rollouts have their own, richer records:
`selfplay.rollout.Episode` and its `Turn`s (a model policy's moves, the unit RL trains on).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

from stlm_selfplay.envs.base import Game, StepResult
from stlm_selfplay.envs.formats import format_action, format_outcome, format_prompt, format_turn
from stlm_selfplay.envs.registry import register_player


class Player:
    """A scripted player. Subclasses define `policy`, or override `act`."""

    name = ""

    def policy(self, game: Game) -> dict[str, float]:
        raise NotImplementedError

    def act(self, game: Game, rng: random.Random) -> str:
        """Sample an action from `policy(game)` with `rng`."""
        return sample(self.policy(game), rng)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def sample(policy: dict[str, float], rng: random.Random) -> str:
    """One action drawn from {action: prob} with `rng` (insertion order fixes the outcome per seed)."""
    actions = list(policy)
    if len(actions) == 1:
        return actions[0]
    return rng.choices(actions, weights=list(policy.values()))[0]


def uniform(actions: Sequence[str]) -> dict[str, float]:
    """The uniform policy over `actions`."""
    return {a: 1.0 / len(actions) for a in actions}


@register_player("*", "random")
class RandomPlayer(Player):
    """Uniformly random legal action."""

    def policy(self, game: Game) -> dict[str, float]:
        return uniform(game.legal_actions())

    def act(self, game: Game, rng: random.Random) -> str:
        legal = game.legal_actions()
        return legal[rng.randrange(len(legal))]


class Move(NamedTuple):
    """One move of a played game."""

    player: int
    prompt: str | None  # what the player was shown (None when not recorded)
    text: str | bytes  # what it wrote
    result: StepResult


@dataclass
class GameRecord:
    """One finished game: the game (its final payoffs and outcome) and its moves in order."""

    game: Game
    moves: list[Move] = field(default_factory=list)

    @property
    def rewards(self) -> tuple[float, ...]:
        return self.game.rewards

    def transcript(self, style: str = "compact") -> str:
        """The game as the rollouts showed it: one `prompt + [action]` line per turn, then the outcome."""
        lines = [format_turn(m.prompt or "", _as_text(m.text)) for m in self.moves]
        return "".join(lines) + format_outcome(self.game, style) + "\n"


def _as_text(text: str | bytes) -> str:
    """Action text for a transcript: scripted players' bare actions get their brackets."""
    if isinstance(text, (bytes, bytearray)):
        return text.decode("utf-8", "replace")
    return text if text.startswith("[") else format_action(text)


def play_game(game: Game, players: Sequence[Player], rngs: Sequence[random.Random], *,
              style: str | None = None) -> GameRecord:
    """Play `game` (already reset) to the end; seat i is `players[i]`, drawing from `rngs[i]`.

    With `style` set, each move records the prompt its player saw (for transcripts).
    """
    played = GameRecord(game)
    record, step, acts = played.moves.append, game.step, [p.act for p in players]
    while not game.done:
        seat = game.current_player
        prompt = format_prompt(game, seat, style) if style else None
        text = acts[seat](game, rngs[seat])
        record(Move(seat, prompt, text, step(text)))
    return played
