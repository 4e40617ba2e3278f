"""A model as an envs `Player`: one game at a time, for `play_game`, sample games and `stlm play`.

    player = ModelPlayer(model, temperature=0.0)           # greedy constrained choice
    play_game(game, [player, make_player("tictactoe", "random")], rngs, style="compact")

It acts through `ModelPolicy` (the rollouts' policy: constrained choice among the legal moves, or
free text), drawing from its own seeded generator, never from the rng `play_game` hands it.
"""

from __future__ import annotations

import random

from stlm_selfplay.envs.players import Player
from stlm_selfplay.selfplay.policies import ModelPolicy, RolloutRandom


class ModelPlayer(Player):
    name = "model"

    def __init__(self, model, mode: str = "constrained", temperature: float = 0.0, seed: int = 0):
        self.policy_ = ModelPolicy(model, name="model", mode=mode, temperature=temperature)
        self.gen = RolloutRandom(seed)

    def act(self, game, rng: random.Random | None = None) -> str:
        """The model's move text for the player to move (e.g. "[4]"), decoded as UTF-8."""
        decision = self.policy_.act([game], [game.current_player], self.gen)[0]
        return decision.text.decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"ModelPlayer(mode={self.policy_.mode!r}, temperature={self.policy_.temperature})"
