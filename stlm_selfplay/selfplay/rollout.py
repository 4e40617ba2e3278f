"""The rollout engine: many games at once, one batched model call per policy per tick.

    while some game is running:
        group the running games by the policy of the player to move
        for each policy: decisions = policy.act(its games)     # one score/generate call
        step every game with its decision; record model turns

Scripted bots answer without the model. Every model turn is recorded as a `Turn` (game,
episode, seat, prompt, action, log-prob, legality); when a game ends, each of its turns gets
the game's own zero-sum payoff of its seat. Reward shaping (e.g. an illegal-move penalty) is
not applied here: `selfplay.advantages.shaped_reward` does it from `payoff` and `legal`.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

from stlm_selfplay.envs import make
from stlm_selfplay.envs.base import derive_seed
from stlm_selfplay.envs.formats import format_action, format_prompt
from stlm_selfplay.selfplay.policies import Decision, Policy, RolloutRandom


@dataclass
class Turn:
    """One move made by a model policy (the unit RL trains on). (envs' one-game `play_game` records
    plainer `Move`s in a `GameRecord`.)"""

    game: str
    episode: int  # index of the episode in this rollout
    seat: int  # player index in the game
    policy: str  # name of the policy that moved
    decision: Decision
    legal: bool = True  # the game accepted the text as a legal move
    payoff: float = 0.0  # the seat's payoff, filled when the episode ends
    value: float | None = None  # V(s) of the prompt at rollout time (a learner with a value head;
    #                             the loop fills it with one batched `batch.turn_values` call)

    @property
    def prompt(self) -> bytes:
        return self.decision.prompt

    @property
    def action(self) -> bytes:
        return self.decision.text


@dataclass
class EpisodeSpec:
    """A game to play: which game (and options), its seed, and which policy sits in each seat."""

    game: str
    seed: int
    seats: Sequence[str]  # policy name per seat
    options: dict = field(default_factory=dict)
    opening: int = 0  # at most this many uniformly random moves before any policy moves
    #                   (`random_opening`: their number k ~ U{0..opening}, the moves themselves and
    #                   k come from the game's seed; a move that would end the game ends the opening)


@dataclass
class Episode:
    """One game played by a rollout: its outcome, and the model turns RL trains on."""

    spec: EpisodeSpec
    rewards: list[float] = field(default_factory=list)  # the game's payoffs per seat
    outcome: list[str] = field(default_factory=list)  # win / draw / loss per seat
    illegal: list[int] = field(default_factory=list)  # illegal moves made per seat
    length: int = 0  # moves played (legal or not)
    turns: list[Turn] = field(default_factory=list)  # model turns, in order
    transcript: list[tuple[int, bytes, bytes]] = field(default_factory=list)  # (seat, prompt, action)


def play(
    specs: Sequence[EpisodeSpec],
    policies: dict[str, Policy],
    gen: RolloutRandom,
) -> list[Episode]:
    """Play every episode to the end; returns them in the order of `specs`.

    Every move goes in the episode's transcript; model moves also become `Turn`s.
    """
    games = []
    episodes = [Episode(spec=s, illegal=[0] * len(s.seats)) for s in specs]
    for spec, episode in zip(specs, episodes):
        g = make(spec.game, **spec.options)
        g.reset(seed=spec.seed)
        if spec.opening > 0:
            random_opening(g, episode, spec)
        games.append(g)
    running = [i for i, g in enumerate(games) if not g.done]
    while running:
        waiting: dict[str, list[int]] = defaultdict(list)
        for i in running:
            waiting[specs[i].seats[games[i].current_player]].append(i)
        for name in sorted(waiting):  # fixed order: same seed, same games
            idxs = waiting[name]
            policy = policies[name]
            players = [games[i].current_player for i in idxs]
            decisions = policy.act([games[i] for i in idxs], players, gen)
            for i, player, decision in zip(idxs, players, decisions):
                _apply(games[i], episodes[i], player, name, policy, decision, i)
        running = [i for i in running if not games[i].done]
    for game, ep in zip(games, episodes):
        ep.rewards = [float(r) for r in game.rewards]
        ep.outcome = list(game.outcome)
        for turn in ep.turns:
            turn.payoff = ep.rewards[turn.seat]
    return episodes


def random_opening(game, episode: Episode, spec: EpisodeSpec) -> None:
    """Play k ~ U{0..spec.opening} uniformly random legal moves (a Random seeded from the game's
    seed), stopping before a move that would end the game; they go in the transcript as moves
    of no policy (no Turn), so training starts from positions good play rarely reaches."""
    rng = random.Random(derive_seed(spec.seed, "opening"))
    for _ in range(rng.randint(0, spec.opening)):
        legal = game.legal_actions()
        action = legal[rng.randrange(len(legal))]
        trial = game.clone()
        trial.step(action)
        if trial.done:
            break
        player = game.current_player
        prompt = format_prompt(game, player, style="compact").encode()
        game.step(action)
        episode.length += 1
        episode.transcript.append((player, prompt, format_action(action).encode()))


def _apply(game, episode: Episode, player: int, name: str, policy: Policy, decision: Decision, index: int) -> None:
    """Step one game with one decision and record it."""
    result = game.step(decision.text)
    episode.length += 1
    if not result.legal:
        episode.illegal[player] += 1
    episode.transcript.append((player, decision.prompt, decision.text))
    if policy.is_model:
        episode.turns.append(Turn(game=episode.spec.game, episode=index, seat=player, policy=name,
                                  decision=decision, legal=bool(result.legal)))
