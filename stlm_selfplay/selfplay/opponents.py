"""Who the learner plays: the opponent mix, the snapshot pool and its samplers, the game plan.

Policy names in a rollout: `learner` (the model being trained), `pool/step_<N>` (a frozen
snapshot taken after N updates) and `<game>/<bot>` (a scripted player, e.g. `tictactoe/random`).

Each game of an update draws its opponent from the stage's mix {self, pool, <bot>: weight}:
    self:   the learner fills every seat (every seat's turns train)
    pool:   a snapshot drawn by the pool sampler (`POOL_SAMPLERS`, key pool.sampling; the
            weights are in selfplay/pool_sampling.py: uniform, latest, prioritized (PFSP))
    <bot>:  a scripted player of the game
The learner takes seat (group index) mod players, so it plays every seat equally often.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field

import torch

from stlm_selfplay.envs.base import derive_seed
from stlm_selfplay.selfplay.config import PoolConfig, StageConfig
from stlm_selfplay.selfplay.pool_sampling import POOL_SAMPLERS
from stlm_selfplay.selfplay.policies import BotPolicy, ModelPolicy
from stlm_selfplay.selfplay.rollout import EpisodeSpec
from stlm_selfplay.selfplay.search import SearchConfig, SearchPolicy

LEARNER = "learner"
POOL_PREFIX = "pool/"


@dataclass
class Snapshot:
    name: str  # pool/step_<N>
    update: int  # updates done when it was taken
    model: torch.nn.Module  # frozen copy (eval mode, no gradients)
    score: float = 0.5  # EMA of the learner's score against it (prioritized sampling)


@dataclass
class Pool:
    """Frozen snapshots of the learner (at most `cfg.max_size`, oldest dropped first)."""

    cfg: PoolConfig
    snapshots: list[Snapshot] = field(default_factory=list)

    def add(self, learner: torch.nn.Module, update: int) -> Snapshot:
        frozen = copy.deepcopy(learner).eval().requires_grad_(False)
        snap = Snapshot(f"{POOL_PREFIX}step_{update}", update, frozen)
        kept = [s for s in self.snapshots if s.name != snap.name] + [snap]
        self.snapshots = kept[-self.cfg.max_size:]
        return snap

    def sample(self, rng: random.Random) -> str:
        weights = POOL_SAMPLERS.get(self.cfg.sampling)(self)
        return rng.choices([s.name for s in self.snapshots], weights=weights)[0]

    def record(self, scores: dict[str, tuple[float, int]]) -> None:
        """Update each snapshot's EMA score from {name: (learner's summed score, games)}:
        s <- d^n s + (1 - d^n) * mean score, d = score_decay, n = games."""
        for snap in self.snapshots:
            total, games = scores.get(snap.name, (0.0, 0))
            if games:
                keep = self.cfg.score_decay ** games
                snap.score = keep * snap.score + (1.0 - keep) * total / games

    def by_name(self) -> dict[str, Snapshot]:
        return {s.name: s for s in self.snapshots}

    def state_dict(self) -> dict:
        return {"snapshots": [{"name": s.name, "update": s.update, "score": s.score,
                               "tensors": {k: v.detach().cpu().clone() for k, v in s.model.state_dict().items()}}
                              for s in self.snapshots]}

    def load_state_dict(self, state: dict, template: torch.nn.Module) -> None:
        self.snapshots = []
        for item in state["snapshots"]:
            model = copy.deepcopy(template).eval().requires_grad_(False)
            model.load_state_dict(item["tensors"])
            self.snapshots.append(Snapshot(item["name"], int(item["update"]), model, float(item["score"])))


def split_counts(total: int, weights: dict[str, float]) -> dict[str, int]:
    """Whole-number shares of `total` proportional to `weights` (largest remainder, ties by order)."""
    positive = {k: float(w) for k, w in weights.items() if w > 0}
    norm = sum(positive.values())
    exact = {k: total * w / norm for k, w in positive.items()}
    counts = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: -(exact[k] - counts[k]))[: total - sum(counts.values())]:
        counts[k] += 1
    return counts


def bot_name(game: str, bot: str) -> str:
    return f"{game}/{bot}"


def plan_games(stage: StageConfig, n_games: int, group_size: int, pool: Pool, rng: random.Random,
               seed: int, update: int, rank: int = 0) -> list[EpisodeSpec]:
    """This rank's games for one update: `n_games` in groups of `group_size` sharing a seed,
    seats and opponent. Opponents come from `rng`; game seeds from (seed, update, rank, group)."""
    from stlm_selfplay.envs import make

    specs = []
    for game, count in split_counts(n_games // group_size, stage.games).items():
        options = dict(stage.game_options.get(game, {}))
        players = make(game, **options).num_players
        for _ in range(count):
            group = len(specs) // group_size
            opponent = rng.choices(list(stage.opponents), weights=list(stage.opponents.values()))[0]
            other = LEARNER if opponent == "self" else pool.sample(rng) if opponent == "pool" else bot_name(game, opponent)
            seat = group % players
            seats = [LEARNER if s == seat else other for s in range(players)]
            game_seed = derive_seed(seed, "selfplay", update, rank, group)
            specs.extend(EpisodeSpec(game, game_seed, seats, options, stage.random_opening) for _ in range(group_size))
    return specs


def build_policies(specs: list[EpisodeSpec], learner: torch.nn.Module, pool: Pool, mode: str,
                   temperature: float, max_action_bytes: int = 8, search: SearchConfig | None = None,
                   routing: dict | None = None, style: str = "compact") -> dict:
    """Every policy named in `specs`: the learner, the snapshots it meets, the scripted bots.
    With `search.simulations > 0` the learner moves by PUCT search (selfplay/search.py)."""
    snapshots = pool.by_name()
    policies: dict = {}
    for spec in specs:
        for name in spec.seats:
            if name in policies:
                continue
            if name == LEARNER and search is not None and search.simulations > 0:
                policies[name] = SearchPolicy(learner, search, name=name, temperature=temperature,
                                              routing=dict(routing or {}))  # compact prompts (tree nodes, images)
            elif name == LEARNER or name.startswith(POOL_PREFIX):
                model = learner if name == LEARNER else snapshots[name].model
                policies[name] = ModelPolicy(model, name=name, mode=mode, temperature=temperature,
                                             max_action_bytes=max_action_bytes, style=style)
            else:
                game, _, bot = name.partition("/")
                policies[name] = BotPolicy(game, bot)
    return policies
