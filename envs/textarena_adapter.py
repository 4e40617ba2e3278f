"""Any two-player TextArena env as a game of our interface (extra: `pip install stlm-selfplay[textarena]`).

    game = make("textarena:TicTacToe-v0", seed=0)     # or TextArenaGame("KuhnPoker-v0", seed=0)

The text is TextArena's own: `format_prompt` returns their observation for the player, their
parser reads the action (a bare legal action such as "4" is sent as "[4]"), and the payoffs are
their rewards. Their invalid-move handling applies (one retry, then the offender loses); the step
result reports it as rule 'retry' or 'lose'. `legal_actions` lists the bracketed moves of the
last line of the player's observation that mentions "available" (TicTacToe, KuhnPoker and most
board games print one); it is [] where an env lists none (free-form text games).

TextArena seeds and draws from Python's global `random`. Each call into it runs inside
`_private_random`, which swaps in this game's own generator state and restores the caller's
global `random` (and numpy's global) state afterwards, so a TextArena game neither disturbs nor
is disturbed by anything else. Envs that call remote models (judges, online play) need network.
"""

from __future__ import annotations

import copy
import random
import re
from contextlib import contextmanager

import numpy as np

from stlm_selfplay.envs.base import StepResult, outcomes
from stlm_selfplay.envs.formats import format_action, parse_action
from stlm_selfplay.errors import UserError

_BRACKETED = re.compile(r"\[([^\[\]\n]{1,40})\]")


def _textarena():
    """The textarena module (importing it draws from the global `random`: restored here)."""
    saved, saved_np = random.getstate(), np.random.get_state()
    try:
        import textarena
    except ImportError:
        raise UserError("TextArena games need the textarena package: pip install 'stlm-selfplay[textarena]'") from None
    finally:
        random.setstate(saved)
        np.random.set_state(saved_np)
    return textarena


class TextArenaGame:
    num_players = 2
    sides = ("p0", "p1")
    side_names = ("Player 0", "Player 1")
    feedback = None

    def __init__(self, env_id: str, *, seed: int | None = None, **env_kwargs):
        """env_id: a two-player TextArena id (e.g. "TicTacToe-v0"); env_kwargs go to `textarena.make`."""
        _textarena()  # a clear error now if it is missing
        self.env_id = self.tag = self.title = env_id
        self._env_kwargs = env_kwargs
        self._random_state = random.Random(seed).getstate()
        self.reset(seed)

    @contextmanager
    def _private_random(self):
        """Run TextArena code on this game's generator; leave the global RNGs as they were."""
        saved, saved_np = random.getstate(), np.random.get_state()
        random.setstate(self._random_state)
        try:
            yield
        finally:
            self._random_state = random.getstate()
            random.setstate(saved)
            np.random.set_state(saved_np)

    def reset(self, seed: int | None = None) -> "TextArenaGame":
        if seed is not None:
            self._random_state = random.Random(seed).getstate()
        with self._private_random():
            try:  # a fresh env: TextArena's LLM observation wrapper keeps old games' text across resets
                self.env = _textarena().make(self.env_id, **self._env_kwargs)
            except ValueError as err:
                raise UserError(f"textarena: {err}") from None
            self.env.reset(num_players=self.num_players, seed=seed)
        self.history: list[str] = []
        self.illegal_counts = [0] * self.num_players
        self._observations: dict[int, str] = {}
        self.done = False
        self.rewards: tuple[float, ...] = (0.0,) * self.num_players
        self._pull_observation()
        return self

    @property
    def _state(self):
        return self.env.state

    def _pull_observation(self) -> None:
        player, text = self.env.get_observation()  # draws nothing: no RNG swap needed
        self.current_player = int(player)
        self._observations[self.current_player] = text if isinstance(text, str) else str(text)
        self._legal_now = None

    @property
    def turn(self) -> int:
        return int(self._state.turn)

    @property
    def max_turns(self) -> int | None:
        return self._state.max_turns

    def raw_prompt(self, player: int) -> str:
        return self._observations.get(player, "")

    def observation(self, player: int | None = None) -> str:
        return self.raw_prompt(self.current_player if player is None else player)

    def legal_actions(self, player: int | None = None) -> list[str]:
        if self.done or (player is not None and player != self.current_player):
            return []
        if self._legal_now is None:  # parsed once per observation
            lines = [line.lower() for line in self.observation().splitlines() if "available" in line.lower()]
            listed = lines[-1].rpartition("available")[2] if lines else ""
            self._legal_now = [m.strip() for m in _BRACKETED.findall(listed)]
        return list(self._legal_now)

    def step(self, action: str | bytes) -> StepResult:
        if self.done:
            raise RuntimeError("the game is over; call reset() first")
        player = self.current_player
        if isinstance(action, (bytes, bytearray)):
            text = bytes(action).decode("utf-8", "replace")
        else:
            text = action if isinstance(action, str) else str(action)
        if text in self.legal_actions():
            text = format_action(text)
        turn_before = self.turn
        with self._private_random():
            done, _info = self.env.step(text)
        state = self._state
        if done:
            self.done = True
            self.rewards = tuple(float((state.rewards or {}).get(p, 0.0)) for p in range(self.num_players))
            legal = not state.game_info[player].get("invalid_move", False)
            rule = "ok" if legal else "lose"
        else:
            legal = self.turn != turn_before
            rule = "ok" if legal else "retry"
            self._pull_observation()
        applied = parse_action(text) if legal else None
        if legal:
            self.history.append(applied)
        else:
            self.illegal_counts[player] += 1
        return StepResult(player, legal, applied, rule, self.done, self.rewards)

    @property
    def outcome(self) -> tuple[str, ...] | None:
        return outcomes(self.rewards) if self.done else None

    def clone(self) -> "TextArenaGame":
        return copy.deepcopy(self)

    def state_key(self):
        return (self.env_id, tuple(self._state.logs), self.current_player, self.done)
