"""One self-play update's optimisation, whole: `optimize_update` (CleanRL style).

Given the learner's turns, their advantages A (after `finalize` / `global_normalize`) and a plan
of minibatches (`minibatch_plan`: ppo_epochs shuffled splits of the kept turns into `minibatches`;
with replay, `ReplayBuffer.plan`: steps_per_update draws from the buffer, selfplay/replay.py):

    for minibatch in plan:
        lr = peak_lr * stage_lr_scale(stage, u_s + (k + 1) / n) * lr_factor(step)
                    (u_s: the updates the stage has done before this one; the k-th of its n steps;
                     stage_lr_scale = lr_scale x min(1, updates into the stage / warmup_updates))
        [aux]   one micro-step of the auxiliary objectives on this rank's played transcripts
        [rl]    micro-steps of <= micro_batch_turns turns (constrained: each turn's rows share
                their prompt's trunk pass, `prefix_groups`), the same count on every rank (an
                empty one backpropagates a zero loss, so DDP's all-reduces line up); each RL
                loss is scaled by n_part / (n_minibatch / world_size), so that the summed
                micro-steps, averaged by DDP, are the mean over the minibatch's turns on all
                ranks ("dapo": instead batch.extras["num_items"] = action tokens / world_size)
                [value] (a `value` objective): + weight * its loss on the same turns, V(s)
                of each prompt from the model with gradient, targets R and rollout V_old,
                scaled like grpo's to the minibatch mean
                [legal_mass] (free mode): + weight * -mean_t log sum_{a legal} p(a | prompt_t) on
                the same turns (objectives/legal_mass.py), scaled the same way
        clip the global gradient norm; optimizer step;  step += 1

DDP synchronises gradients only in the last micro-step of each optimizer step (`no_sync` before).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from stlm_selfplay.config import ScheduleConfig
from stlm_selfplay.model.value_head import state_values
from stlm_selfplay.objectives.base import Batch
from stlm_selfplay.objectives.registry import ObjectiveSet
from stlm_selfplay.objectives.rl import _turn_log_policy, policy_logprobs
from stlm_selfplay.selfplay.batch import (action_logit_positions, legal_batch, prompt_batch, transcript_batch,
                                          turns_to_batch)
from stlm_selfplay.selfplay.replay import ReplayBuffer, with_images
from stlm_selfplay.train import distributed as D
from stlm_selfplay.train.optim import lr_factor, set_lr


@dataclass
class Learner:
    """What an update trains, and with what."""

    model: torch.nn.Module  # the learner
    train_model: torch.nn.Module  # the learner, DDP-wrapped when distributed (forwards go through it)
    optimizer: torch.optim.Optimizer
    schedule: ScheduleConfig  # the lr schedule over the run's optimizer steps
    rl: torch.nn.Module  # the RL objective
    aux: ObjectiveSet | None  # the auxiliary objectives with their weights, or None
    reference: torch.nn.Module | None  # the frozen KL reference policy (objectives with beta != 0)
    routing: dict  # forward kwargs that make training forwards route as sampling did
    value: tuple | None = None  # (the `value` objective, its weight), or None: no value loss
    legal: tuple | None = None  # (the `legal_mass` objective, its weight), or None
    objective_steps: int = 0  # the objectives' batch.total_steps (their phase's, selfplay/phases.py); 0 = schedule.steps

    @property
    def total_steps(self) -> int:
        return self.objective_steps or self.schedule.steps


def minibatch_plan(kept: np.ndarray, epochs: int, minibatches: int, shuffle: torch.Generator) -> list[np.ndarray]:
    """`epochs` passes over the kept turn indices, each shuffled and split into `minibatches`."""
    plan: list[np.ndarray] = []
    for _ in range(epochs):
        plan.extend(np.array_split(kept[torch.randperm(len(kept), generator=shuffle).numpy()], minibatches))
    return plan


def training_plan(sp, turns: Sequence, adv: np.ndarray, keep: np.ndarray, returns: np.ndarray | None,
                  buffer: ReplayBuffer | None, shuffle: torch.Generator):
    """(turns, advantages, returns, plan) that `optimize_update` trains on this update: the kept
    turns (+ their symmetry images with search.symmetries, sharing the source turn's advantage and
    return), or with a replay buffer, the buffer after adding them (advantages 0: search_policy
    reads none) and steps_per_update draws from it."""
    if sp.search.symmetries:
        turns, source = with_images(turns)
        adv, keep = adv[source], keep[source]
        returns = None if returns is None else returns[source]
    kept = np.flatnonzero(keep)
    if buffer is None:
        return turns, adv, returns, minibatch_plan(kept, sp.ppo_epochs, sp.minibatches, shuffle)
    buffer.add([turns[i] for i in kept])
    return buffer.turns, np.zeros(len(buffer)), None, buffer.plan(sp.replay.steps_per_update, sp.replay.batch_turns,
                                                                   shuffle)


def stage_lr_scale(stage, updates_into_stage: float) -> float:
    """lr_scale x min(1, updates_into_stage / warmup_updates): the stage's multiplier of the run's lr
    schedule (StageConfig.lr_scale, warmup_updates; lr_scale alone when warmup_updates = 0)."""
    if stage.warmup_updates <= 0:
        return stage.lr_scale
    return stage.lr_scale * min(1.0, updates_into_stage / stage.warmup_updates)


def optimize_update(learner: Learner, sp, stage, turns: Sequence, adv: np.ndarray, plan: Sequence[np.ndarray],
                    episodes, step: int, device: torch.device, dist: D.DistInfo,
                    returns: np.ndarray | None = None, lr_step: float | None = None,
                    lr_stride: float = 1.0, stage_updates: int = 0) -> dict[str, float]:
    """One optimizer step per minibatch of `plan` (indices into `turns`; module docstring), starting
    at the objectives' optimizer step `step` (batch.step) and at position `lr_step` (default `step`)
    of the lr schedule, which each step advances by `lr_stride` (selfplay/phases.py); `stage_updates`:
    the updates the current stage did before this one (its lr warmup). Returns the summed metrics
    (`<prefix><name>` with counts `_n/...`) and `grad_norm` of the last step.
    `returns` [N]: the value targets (needed with a `value` objective)."""
    sums: dict[str, float] = {}
    lr_step = step if lr_step is None else lr_step
    for k, minibatch in enumerate(plan):
        scale = stage_lr_scale(stage, stage_updates + (k + 1) / len(plan))
        set_lr(learner.optimizer, scale * lr_factor(lr_step + k * lr_stride, learner.schedule))
        # minibatch size on all ranks: turns, and action tokens (turns, or bytes in free mode)
        n_global, n_tokens = (float(x) for x in D.all_reduce_sum(torch.tensor(
            [len(minibatch), len(minibatch) if stage.mode == "constrained" else
             sum(len(turns[i].action) for i in minibatch)], dtype=torch.float64, device=device)))
        n_micro = max(max(D.all_gather_objects(math.ceil(len(minibatch) / sp.micro_batch_turns))), 1)
        parts = [minibatch[k * sp.micro_batch_turns:(k + 1) * sp.micro_batch_turns] for k in range(n_micro)]
        backwards = len(parts) + (learner.aux is not None)
        if learner.aux is not None:
            with _sync_on_last(learner, dist, 0, backwards):
                out = aux_loss(learner, episodes, step, device)
                out.loss.backward()
            _add(sums, "aux/", out.metrics)
        for k, part in enumerate(parts, start=backwards - len(parts)):
            with _sync_on_last(learner, dist, k, backwards):
                if len(part) == 0:  # keeps every rank's micro-step count equal (DDP)
                    zero_loss(learner, device).backward()
                    continue
                loss, out = rl_loss(learner, [turns[i] for i in part], adv[part], stage.temperature, step,
                                    n_global / dist.world_size, n_tokens / dist.world_size, device)
                if learner.value is not None:
                    value, value_out = value_loss(learner, [turns[i] for i in part], returns[part],
                                                  n_global / dist.world_size, device)
                    loss = loss + value
                    _add(sums, "value/", value_out.metrics)
                if learner.legal is not None:
                    legal, legal_out = legal_loss(learner, [turns[i] for i in part], n_global / dist.world_size,
                                                  device)
                    loss = loss + legal
                    _add(sums, "legal_mass/", legal_out.metrics)
                loss.backward()
            _add(sums, f"{learner.rl.name}/", out.metrics)
        if sp.grad_clip > 0:
            sums["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(learner.model.parameters(), sp.grad_clip))
        learner.optimizer.step()
        learner.optimizer.zero_grad(set_to_none=True)
        step += 1
    return sums


def rl_loss(learner: Learner, part: Sequence, adv: np.ndarray, temperature: float, step: int,
            turns_per_rank: float, tokens_per_rank: float, device: torch.device):
    """(scaled loss, objective output) of the RL objective on one micro-step's turns."""
    batch = turns_to_batch(part, torch.as_tensor(adv), temperature, step=step, total_steps=learner.total_steps)
    batch.extras["num_items"] = tokens_per_rank  # dapo's denominator
    dapo = getattr(learner.rl.options, "loss_type", "") == "dapo"
    scale = 1.0 if dapo else len(part) / turns_per_rank  # grpo, dr_grpo: the minibatch mean
    ids, attn = batch.input_ids.to(device), batch.attention_mask.to(device)
    # constrained rows: each turn's prompt patches go through the trunk once (model/shared_prefix.py),
    # and the local decoder runs only on the windows of the action bytes, the only logits read
    shared = {"prefix_groups": batch.extras["groups"].to(device),
              "logits_needed": action_logit_positions(batch).to(device)} if "groups" in batch.extras else {}
    if learner.reference is not None:  # the KL reference (beta) or mmd's magnet
        with torch.no_grad():
            ref_out = learner.reference(ids, attention_mask=attn, **shared)
            batch.ref_logprobs = policy_logprobs(ref_out, batch)[0]
            if "groups" in batch.extras:  # constrained: log rho_b of every candidate row (objectives/mmd.py)
                batch.extras["ref_logq"] = _turn_log_policy(ref_out, batch)[0]
    out = learner.rl(learner.train_model(ids, attention_mask=attn, **learner.routing, **shared), batch)
    return out.loss * scale, out


def value_loss(learner: Learner, part: Sequence, returns: np.ndarray, turns_per_rank: float, device: torch.device):
    """(weight * loss scaled to the minibatch mean, objective output) of the `value` objective on
    one micro-step's turns: V(s) of each prompt with gradient, targets `returns`, V_old = Turn.value.
    V is read through the unwrapped model: under DDP its gradients still reach every parameter's
    all-reduce hook, since the RL and value losses share one backward."""
    objective, weight = learner.value
    ids, attn = prompt_batch(part)
    values = state_values(learner.model, ids.to(device), attn.to(device), **learner.routing)
    batch = Batch(ids, attention_mask=attn, extras={
        "values": values, "returns": torch.as_tensor(returns, dtype=torch.float32, device=device),
        "old_values": torch.tensor([t.value for t in part], dtype=torch.float32, device=device)})
    out = objective(None, batch)
    return out.loss * (weight * len(part) / turns_per_rank), out


def legal_loss(learner: Learner, part: Sequence, turns_per_rank: float, device: torch.device):
    """(weight * loss scaled to the minibatch mean, objective output) of `legal_mass` on one
    micro-step's free-mode turns: each turn's prompt through the trunk once (`prefix_groups`), the
    local decoder on its legal actions' bytes only. Read through the unwrapped model, as `value_loss`."""
    objective, weight = learner.legal
    batch = legal_batch(part)
    groups = batch.extras["groups"].to(device)
    output = learner.model(batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                           prefix_groups=groups, logits_needed=action_logit_positions(batch).to(device),
                           **learner.routing)
    out = objective(output, batch)
    return out.loss * (weight * len(part) / turns_per_rank), out


def aux_loss(learner: Learner, episodes, step: int, device: torch.device):
    """The auxiliary objectives' output on this rank's played games as transcripts."""
    batch = transcript_batch(episodes, learner.model.config.max_seq_len)
    batch.step, batch.total_steps = step, learner.total_steps
    return learner.aux(learner.train_model(batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                                           **learner.routing, **learner.aux.model_kwargs(batch)), batch)


def zero_loss(learner: Learner, device: torch.device) -> torch.Tensor:
    """A loss of exactly 0 through the whole model (an empty micro-step's backward under DDP)."""
    ids = torch.full((1, 2), 10, dtype=torch.long, device=device)
    loss = learner.train_model(ids, **learner.routing).logits.sum() * 0.0
    head = getattr(learner.model, "value_head", None)
    return loss if head is None else loss + sum(p.sum() for p in head.parameters()) * 0.0


def _sync_on_last(learner: Learner, dist: D.DistInfo, k: int, backwards: int):
    """DDP's `no_sync` for every backward of an optimizer step but the last."""
    last = k == backwards - 1
    return learner.train_model.no_sync() if dist.enabled and not last else contextlib.nullcontext()


def _add(sums: dict[str, float], prefix: str, metrics: dict[str, Any]) -> None:
    for name, value in metrics.items():
        sums[prefix + name] = sums.get(prefix + name, 0.0) + value
        sums["_n/" + prefix + name] = sums.get("_n/" + prefix + name, 0.0) + 1
