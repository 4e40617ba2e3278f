"""gymnasium view of a game: one seat played by the agent, the others by a scripted opponent.

Registered ids (on `import stlm_selfplay.envs`): `stlm_selfplay/TicTacToe-v0`,
`stlm_selfplay/ConnectFour-v0`, `stlm_selfplay/Nim-v0`, `stlm_selfplay/KuhnPoker-v0`,
`stlm_selfplay/SimpleNegotiation-v0`.

    env = gymnasium.make("stlm_selfplay/TicTacToe-v0", opponent="minimax", seat=1)
    obs, info = env.reset(seed=0)          # obs: the agent's prompt (format_prompt)
    obs, reward, terminated, truncated, info = env.step("[4]")

Observations and actions are `Text`. An action is any text (parsed like model output; the
game's illegal-action rule applies). The reward is the agent seat's payoff when the game ends,
else 0; the final observation is the outcome line. `info` holds the last step's `legal`,
`rule` and `applied`.
"""

from __future__ import annotations

import random
import string

import gymnasium
from gymnasium import spaces

from stlm_selfplay.envs.formats import STYLES, format_outcome, format_prompt
from stlm_selfplay.envs.registry import make, make_player

NAMESPACE = "stlm_selfplay"
GYM_IDS = {
    "tictactoe": "TicTacToe-v0",
    "connect_four": "ConnectFour-v0",
    "nim": "Nim-v0",
    "kuhn_poker": "KuhnPoker-v0",
    "simple_negotiation": "SimpleNegotiation-v0",
}
CHARSET = frozenset(string.printable)  # every prompt is printable ASCII


class TextGameEnv(gymnasium.Env):
    metadata = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(
        self,
        game: str = "tictactoe",
        opponent: str = "random",
        seat: int = 0,
        style: str = "compact",
        game_options: dict | None = None,
        opponent_options: dict | None = None,
        max_length: int = 4096,
        render_mode: str | None = None,
    ):
        """game: registry name; opponent: scripted player name for the other seat(s);
        seat: the agent's seat (0 moves first); style: compact | verbose prompts;
        game_options / opponent_options: passed to `make` / `make_player`;
        max_length: longest observation or action text in the spaces; render_mode: None | "ansi"."""
        if style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, got {style!r}")
        self.game = make(game, **(game_options or {}))
        if not 0 <= seat < self.game.num_players:
            raise ValueError(f"seat must be in 0..{self.game.num_players - 1}, got {seat}")
        self.opponent = make_player(game, opponent, **(opponent_options or {}))
        self.seat, self.style, self.render_mode = seat, style, render_mode
        self.observation_space = spaces.Text(max_length, min_length=1, charset=CHARSET)
        self.action_space = spaces.Text(64, min_length=0, charset=CHARSET)
        self._opponent_rng = random.Random(0)

    def _observe(self) -> str:
        if self.game.done:
            return format_outcome(self.game, self.style)
        return format_prompt(self.game, self.seat, self.style)

    def _opponents_move(self) -> None:
        while not self.game.done and self.game.current_player != self.seat:
            self.game.step(self.opponent.act(self.game, self._opponent_rng))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        game_seed, opponent_seed = (int(x) for x in self.np_random.integers(0, 2**62, size=2))
        self.game.reset(game_seed)
        self._opponent_rng = random.Random(opponent_seed)
        self._opponents_move()
        return self._observe(), {}

    def step(self, action):
        result = self.game.step(action)
        self._opponents_move()
        reward = float(self.game.rewards[self.seat]) if self.game.done else 0.0
        info = {"legal": result.legal, "rule": result.rule, "applied": result.applied}
        return self._observe(), reward, self.game.done, False, info

    def render(self):
        if self.render_mode == "ansi":
            return self._observe()
        return None


def register_gym_envs() -> None:
    """Register every `stlm_selfplay/<Game>-v0` id (idempotent)."""
    for game, env_id in GYM_IDS.items():
        full = f"{NAMESPACE}/{env_id}"
        if full not in gymnasium.registry:
            gymnasium.register(id=full, entry_point=f"{__name__}:TextGameEnv", kwargs={"game": game})
