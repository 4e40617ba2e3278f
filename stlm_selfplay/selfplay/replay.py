"""Search targets kept across updates (`selfplay.replay`) and their symmetry images.

    images   with search.symmetries: every searched turn t also yields a turn in each image of its
             position (Decision.images, selfplay/search.py), same target carried along; the
             images share t's advantage, return and V(s) (a symmetric position has the same value)
    buffer   <- the update's learner turns (and images); beyond `capacity` the oldest are dropped
    plan     `steps_per_update` minibatches of `batch_turns` turns each, drawn uniformly with
             replacement from the buffer (the loop's seeded `shuffle` generator)

Only `search_policy` replays: its loss is a cross-entropy to a fixed visit distribution, so a turn
stays a valid target after the policy has moved (only the search that made it was weaker); the RL
objectives are on-policy (their importance ratios and advantages belong to the update that played
the turn) and train on the update's own turns only. The buffer is checkpointed per rank as plain
values, so runs with replay resume exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from stlm_selfplay.errors import UserError
from stlm_selfplay.options import option
from stlm_selfplay.selfplay.policies import Decision
from stlm_selfplay.selfplay.rollout import Turn


@dataclass
class ReplayConfig:
    """`selfplay.replay`: train `search_policy` on the last `capacity` searched turns, not only on
    the update's own."""

    capacity: int = option(0, "searched turns kept (images included; the oldest dropped first); 0 = off: each "
                           "update trains ppo_epochs x minibatches steps on its own turns")
    batch_turns: int = option(64, "turns per optimizer step, drawn uniformly with replacement from the buffer")
    steps_per_update: int = option(16, "optimizer steps per update (replaces ppo_epochs x minibatches)")


def check_replay(cfg: ReplayConfig, policy_objective: str, has_value: bool) -> None:
    """`UserError` for values no replay runs with, and for replaying on-policy objectives."""
    if cfg.capacity < 0 or cfg.batch_turns < 1 or cfg.steps_per_update < 1:
        raise UserError("selfplay.replay needs capacity >= 0, batch_turns >= 1 and steps_per_update >= 1")
    if cfg.capacity and policy_objective != "search_policy":
        raise UserError(f"selfplay.replay trains search_policy's visit targets; {policy_objective} is on-policy "
                        "(it trains on each update's own turns): set selfplay.replay.capacity to 0")
    if cfg.capacity and has_value:
        raise UserError("selfplay.replay does not keep the value objective's returns: drop {name: value} from "
                        "selfplay.objectives or set selfplay.replay.capacity to 0")


def with_images(turns: Sequence[Turn]) -> tuple[list[Turn], np.ndarray]:
    """(the turns followed by every image turn, index of each one's source turn)."""
    out, source = list(turns), list(range(len(turns)))
    for i, t in enumerate(turns):
        for image in t.decision.images or ():
            out.append(Turn(game=t.game, episode=t.episode, seat=t.seat, policy=t.policy, decision=image,
                            legal=t.legal, payoff=t.payoff, value=t.value))
            source.append(i)
    return out, np.asarray(source, dtype=np.int64)


class ReplayBuffer:
    """The last `capacity` searched turns (what `search_policy` reads of them, nothing more)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.turns: list[Turn] = []

    def __len__(self) -> int:
        return len(self.turns)

    def add(self, turns: Sequence[Turn]) -> None:
        """Keep what search_policy reads of each turn (a resumed buffer holds exactly the same)."""
        self.turns.extend(_target_turn(t.game, t.seat, t.decision.prompt, t.decision.candidates, t.decision.chosen,
                                       t.decision.search_probs) for t in turns)
        del self.turns[:max(len(self.turns) - self.capacity, 0)]

    def plan(self, steps: int, batch_turns: int, generator: torch.Generator) -> list[np.ndarray]:
        """`steps` minibatches of `batch_turns` buffer indices, uniform with replacement."""
        return [torch.randint(len(self.turns), (batch_turns,), generator=generator).numpy() for _ in range(steps)]

    def state_dict(self) -> list:
        return [(t.game, t.seat, t.decision.prompt, list(t.decision.candidates), t.decision.chosen,
                 list(t.decision.search_probs)) for t in self.turns]

    def load_state_dict(self, rows: list) -> None:
        self.turns = [_target_turn(*row) for row in rows]


def _target_turn(game: str, seat: int, prompt: bytes, candidates, chosen: int, search_probs) -> Turn:
    return Turn(game=game, episode=-1, seat=seat, policy="learner",
                decision=Decision(text=candidates[chosen], prompt=prompt, candidates=list(candidates), chosen=chosen,
                                  search_probs=list(search_probs)))
