"""Training phases: runs of consecutive curriculum stages that train alike.

A stage may set its own `objectives`, `search` and `replay` (StageConfig; null = the run-level
`selfplay.*` option); `stage_settings(sp, i)` (selfplay/config.py) is the run as stage i trains.
A phase is a run of consecutive stages whose settings are equal (`same_training`). A config
without stage settings is one phase from update 0: exactly the run it was before stages could
set them. Where a stage's settings differ from the previous stage's, the loop starts a new phase
(`start_phase`) at the update the previous stage ended:

    objectives   built anew from the stage's list (no objective state carried over)
    reference    the KL reference (beta) or mmd's magnet: a frozen copy of the learner at the
                 phase start (saved in each checkpoint, as before)
    clock        the objectives' optimizer-step clock restarts: batch.step = (update - phase
                 start) x its steps per update + k (entropy and alpha schedules), mmd's
                 magnet_every counts updates from the phase start, batch.total_steps = the
                 updates left in the run x its steps per update
    replay       the buffer carries into a phase that also replays (resized to its capacity: the
                 oldest turns go at the next add) and is dropped by one that does not; a phase
                 that turns replay on starts empty
    lr           NOT restarted (nor the optimizer's moments; a stage's `lr_scale` multiplies the
                 schedule while that stage trains, ramped up from ~0 over its first `warmup_updates`,
                 update.stage_lr_scale): the lr schedule spans the run,
                 selfplay.updates x the run-level steps per update S; the k-th of a phase's n
                 steps in update u sits at position (u + k / n) x S, so each update moves it
                 equally whatever its step count (n = S: step u S + k, as before)

Why the objectives' clocks start with the phase: a phase's objectives are the ones its stage
lists, laid out for that stage (e.g. a Kuhn stage's entropy_decay_steps over its own updates),
while the lr belongs to the run's one optimizer. The phase's first update is checkpointed
(`phase_start`; 0 in checkpoints older than phases), since a stage can end on an eval metric.
"""

from __future__ import annotations

import copy

import torch

from stlm_selfplay.objectives import build_objectives
from stlm_selfplay.objectives.registry import ObjectiveSet
from stlm_selfplay.objectives.rl import is_rl
from stlm_selfplay.selfplay.config import (SEARCH_OBJECTIVE, TURN_OBJECTIVES, SelfPlayConfig,
                                           steps_per_update as steps_per_update_of)
from stlm_selfplay.selfplay.replay import ReplayBuffer
from stlm_selfplay.selfplay.update import Learner


def split_objectives(specs) -> tuple[torch.nn.Module, tuple | None, tuple | None, ObjectiveSet | None]:
    """(the RL objective (or search_policy), (the value objective, its weight) or None, (legal_mass,
    its weight) or None, the auxiliary objectives with their weights or None). The value and
    legal_mass objectives train on the RL turns, the others on transcripts."""
    objectives = build_objectives(specs)
    pairs = list(zip(objectives.objectives, objectives.weights))
    policy = [o for o, _ in pairs if is_rl(o) or o.name == SEARCH_OBJECTIVE][0]
    value, legal = (next(((o, w) for o, w in pairs if o.name == name), None) for name in TURN_OBJECTIVES)
    aux = [(o, w) for o, w in pairs if o is not policy and o.name not in TURN_OBJECTIVES]
    return policy, value, legal, ObjectiveSet(aux) if aux else None


def pool_model_copy(template: torch.nn.Module, tensors: dict) -> torch.nn.Module:
    """A frozen copy of `template` holding `tensors` (the KL reference policy)."""
    model = copy.deepcopy(template).eval().requires_grad_(False)
    model.load_state_dict(tensors)
    return model


def start_phase(settings: SelfPlayConfig, model: torch.nn.Module, train_model: torch.nn.Module, optimizer,
                schedule, routing: dict, first_update: int, reference: dict | None = None) -> Learner:
    """The learner of a phase training with `settings` from `first_update`: its objectives built
    anew, and the KL reference / mmd magnet holding `reference` (resuming) or a copy of `model`
    now, when they need one. The model, optimizer, lr schedule and routing are the run's."""
    rl, value, legal, aux = split_objectives(settings.objectives)
    rl.to(next(model.parameters()).device)
    magnet = getattr(rl, "needs_magnet_model", lambda: False)()  # mmd: the reference is its magnet
    frozen = None
    if getattr(rl.options, "beta", 0.0) != 0.0 or magnet or reference is not None:
        frozen = pool_model_copy(model, reference if reference is not None else
                                 {k: v.detach().clone() for k, v in model.state_dict().items()})
    steps = (settings.updates - first_update) * steps_per_update_of(settings)
    return Learner(model, train_model, optimizer, schedule, rl, aux, frozen, routing, value, legal, objective_steps=steps)


def phase_buffer(buffer: ReplayBuffer | None, settings: SelfPlayConfig) -> ReplayBuffer | None:
    """The replay buffer of a phase with `settings`: `buffer` carried over (at the phase's
    capacity), a new empty one, or None without replay."""
    if not settings.replay.capacity:
        return None
    if buffer is None:
        return ReplayBuffer(settings.replay.capacity)
    buffer.capacity = settings.replay.capacity
    return buffer
