"""The self-play loop: `selfplay(cfg)` improves a model by playing text games (CleanRL style).

Per update u (every rank in lockstep; rank r plays games_per_update / world_size games):

    specs    = plan_games(stage, ...)                   opponents from the mix: self, pool, bots
    episodes = play(specs, policies, gen)               batched model calls (constrained / free;
                                                        selfplay.search on: the learner moves by
                                                        batched PUCT, selfplay/search.py, and
                                                        search_policy trains on the visit targets)
    r_t      = payoff - illegal_penalty * [illegal]     learner turns only
    V_t      = V(s) of each learner turn's prompt       (a model with a value head; no gradient)
    A_t      = estimator(turns); finalize (drop zero); normalize with all-reduced mean/std
    R_t      = estimator.value_targets(turns, A)        (gae: A + V; else the reward-to-go)
    plan = training_plan(...)                           the turns (+ symmetry images, search.symmetries)
                                                        split ppo_epochs x minibatches ways, or draws
                                                        from the replay buffer (selfplay/replay.py)
    optimize_update(...)                                one optimizer step per minibatch of the plan:
                                                        the RL objective (+ auxiliary objectives on
                                                        the played transcripts): selfplay/update.py
    mmd (objectives/mmd.py): every magnet_every, the magnet (the reference model) moves to the learner;
    every pool.snapshot_every: snapshot;  stage ends by until_update / until_metric; a stage that sets
    its own objectives / search / replay starts a new training phase (selfplay/phases.py);
    every eval.every: matches vs bots by seat, optimal-move rate, exploitability, ratings;
    every run.checkpoint_every (and at the end, and on SIGINT/SIGTERM): a checkpoint.

A run resumes exactly from its last checkpoint (same games, same parameters): the checkpoint
holds the learner, optimizer, pool, KL reference (or mmd magnet), advantage baselines, curriculum
stage and its phase's first update, ratings results, the replay buffer and every RNG (game seeds are pure functions of (run.seed, update, rank,
game)). The learner stays
in eval mode (no dropout) so training forwards see what sampling saw. Test-only fault hook:
`STLM_FAULT_SELFPLAY_UPDATE=k` ends the process with os._exit(17) right after update k.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from stlm_selfplay.config import RootConfig, ScheduleConfig, build_model_config
from stlm_selfplay.envs.base import derive_seed
from stlm_selfplay.errors import UserError
from stlm_selfplay.objectives.value import explained_variance
from stlm_selfplay.runs import (CONFIG_FILE, RATINGS_FILE, load_model, resume_checkpoint, run_dir as run_dir_of_config,
                                save_config)
from stlm_selfplay.selfplay import ratings as R
from stlm_selfplay.selfplay.action_values import with_exact_values
from stlm_selfplay.selfplay.advantages import Turns, build_estimator, finalize, global_normalize, shaped_reward
from stlm_selfplay.selfplay.batch import turn_values
from stlm_selfplay.selfplay.config import (SelfPlayConfig, check_selfplay, check_value_head, eval_games as eval_games_of,
                                           same_training, stage_settings, steps_per_update as steps_per_update_of)
from stlm_selfplay.selfplay.evaluate import SCORE, evaluate, match_results, record_snapshot
from stlm_selfplay.selfplay.opponents import LEARNER, POOL_PREFIX, Pool, build_policies, plan_games
from stlm_selfplay.selfplay.policies import ModelPolicy, RolloutRandom
from stlm_selfplay.selfplay.rollout import play
from stlm_selfplay.selfplay.phases import phase_buffer, start_phase
from stlm_selfplay.selfplay.update import optimize_update, training_plan
from stlm_selfplay.train import distributed as D
from stlm_selfplay.train.checkpoint import (capture_rng_state, load_trainer_state,
                                            restore_rng_state, save_checkpoint)
from stlm_selfplay.train.metrics import MetricsLogger, progress_bar, summary_table, truncate_metrics
from stlm_selfplay.train.optim import build_optimizer
from stlm_selfplay.train.signals import install_stop_handlers

FAULT_ENV = "STLM_FAULT_SELFPLAY_UPDATE"


def initial_model(cfg: RootConfig, device: torch.device, resume_from: Path | None):
    """The learner: from the checkpoint being resumed, else `selfplay.init_from` (a pretrain run,
    checkpoint or HF folder), else a fresh `model.*` (init seeded by run.seed, global RNG untouched)."""
    if resume_from is not None or cfg.selfplay.init_from:
        model = load_model(resume_from if resume_from is not None else cfg.selfplay.init_from)
    else:
        from stlm_selfplay.model import STLMForCausalLM

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.run.seed)
            model = STLMForCausalLM(build_model_config(cfg.model))
    return model.to(device).eval()


def rollout_routing(model) -> dict:
    """Forward kwargs that make training forwards route as sampling did: causal Mixture-of-Depths
    routing for a model with routed blocks (`model/mod.py`), nothing otherwise."""
    return {"routing": "causal"} if model.config.routed_layers else {}


def learner_scores(episodes) -> dict[str, tuple[float, int]]:
    """{opponent: (learner's summed score, games)} over games with exactly one learner seat."""
    out: dict[str, list[float]] = {}
    for ep in episodes:
        seats = [s for s, name in enumerate(ep.spec.seats) if name == LEARNER]
        if len(seats) == 1:
            other = next(n for n in ep.spec.seats if n != LEARNER)
            out.setdefault(other, []).append(SCORE[ep.outcome[seats[0]]])
    return {k: (sum(v), len(v)) for k, v in out.items()}


def merge_scores(per_rank: list[dict]) -> dict[str, tuple[float, int]]:
    merged: dict[str, tuple[float, int]] = {}
    for scores in per_rank:
        for k, (s, n) in scores.items():
            a, b = merged.get(k, (0.0, 0))
            merged[k] = (a + s, b + n)
    return merged


def games_digest(episodes) -> str:
    """A short hash of every move of every game (equal digests = the same games were played)."""
    h = hashlib.sha1()
    for ep in episodes:
        h.update(repr((ep.spec.game, ep.spec.seed, list(ep.spec.seats), ep.transcript, ep.rewards)).encode())
    return h.hexdigest()[:16]


def selfplay(cfg: RootConfig, max_updates: int | None = None) -> dict:
    """Run (or resume) self-play per `cfg.selfplay`; returns the summary. torchrun for DDP.

    `max_updates` stops this call after that many updates (with a checkpoint); the next call resumes."""
    return D.launch(cfg.run, lambda device, dist: _selfplay(cfg, device, dist, max_updates))


def _selfplay(cfg: RootConfig, device: torch.device, dist: D.DistInfo, max_updates: int | None) -> dict:
    sp: SelfPlayConfig = cfg.selfplay
    check_selfplay(sp, dist.world_size)
    # -- everything the user can get wrong is checked before the run folder is written
    run_dir = run_dir_of_config(cfg)
    resume_from = resume_checkpoint(cfg, run_dir)
    model = initial_model(cfg, device, resume_from)
    check_value_head(sp, getattr(model, "value_head", None) is not None,
                     f"the model from {resume_from or sp.init_from or 'model.* (a fresh model)'}")
    optimizer = build_optimizer(model, dataclasses.replace(cfg.optimizer, lr=sp.lr), device)
    run_steps = steps_per_update_of(sp)  # the lr schedule's steps per update (selfplay/phases.py)
    schedule = ScheduleConfig(steps=sp.updates * run_steps, kind=sp.lr_schedule,
                              warmup_steps=sp.warmup_updates, min_lr_ratio=sp.min_lr_ratio)
    estimator = build_estimator(sp.advantages.estimator, sp.advantages.options)
    pool = Pool(sp.pool)
    seed, rank, world = cfg.run.seed, dist.rank, dist.world_size
    gen = RolloutRandom(derive_seed(seed, "rollout", rank))  # model sampling and bots
    opponent_rng = random.Random(derive_seed(seed, "opponents", rank))  # opponent mix and pool draws
    shuffle = torch.Generator().manual_seed(derive_seed(seed, "shuffle", rank))  # minibatch order
    eval_games = eval_games_of(sp)
    update, stage_index, phase_start, stage_start, last_eval = 0, 0, 0, 0, {}
    reference = None  # the phase's KL reference / mmd magnet being resumed (selfplay/phases.py)
    rating_results: list = []  # (game, a, b, score of a) from every evaluation so far
    exact_history: dict = {}  # game -> what its exact metric keeps of each snapshot (Kuhn: the policy table)
    if resume_from is not None:
        state = load_trainer_state(resume_from)
        if state.get("games_per_update") != sp.games_per_update or state.get("world_size") != world:
            raise UserError(f"checkpoint '{resume_from}' was made with games_per_update={state.get('games_per_update')} "
                            f"on {state.get('world_size')} process(es); resume with the same values")
        optimizer.load_state_dict(state["optimizer"])
        pool.load_state_dict(state["pool"], model)
        update, stage_index, last_eval = state["update"], state["stage"], state["last_eval"]
        phase_start, reference = state.get("phase_start", 0), state.get("reference")
        stage_start = state.get("stage_start", phase_start)  # older checkpoints: a stage started its phase
        rating_results, exact_history = [tuple(r) for r in state["ratings"]], state["exact_history"]
        mine = state["ranks"][rank]
        restore_rng_state(mine["rng"], {"rollout": gen.torch, "shuffle": shuffle})
        gen.py.setstate(mine["rollout_py"])
        opponent_rng.setstate(mine["opponents"])
        estimator.load_state_dict(mine["advantages"])
    else:
        pool.add(model, 0)
    settings = stage_settings(sp, stage_index)  # the phase's objectives, search and replay
    buffer = phase_buffer(None, settings)  # selfplay/replay.py
    if buffer is not None and resume_from is not None:
        buffer.load_state_dict(state["ranks"][rank]["replay"])
    end_update = sp.updates if max_updates is None else min(sp.updates, update + max_updates)

    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / CONFIG_FILE)
        if resume_from is not None:
            truncate_metrics(run_dir / RATINGS_FILE, update)
    logger = MetricsLogger(run_dir, cfg.logging, dataclasses.asdict(cfg), active=dist.is_main,
                           resume_step=update if resume_from is not None else None)
    train_model: torch.nn.Module = model
    routing = rollout_routing(model)
    if dist.enabled:
        train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    learner = start_phase(settings, model, train_model, optimizer, schedule, routing, phase_start, reference)
    if dist.is_main:
        where = f"resuming from {resume_from}" if resume_from is not None else f"from {sp.init_from or 'a fresh model'}"
        print(f"selfplay {run_dir}: {model.num_parameters():,} parameters, {sp.games_per_update} games per update, "
              f"{world} process(es) on {device}; {where}")

    def evaluate_now(update: int) -> dict:
        """Rank 0 evaluates; every rank gets the metrics (stage thresholds)."""
        metrics: dict = {}
        if dist.is_main:
            metrics = run_evaluation(model, cfg, eval_games, update, pool, rating_results, exact_history, run_dir,
                                     sp.stages[stage_index])
            logger.log(update, "eval", metrics)
            shown = {k: v for k, v in metrics.items() if k.endswith(("/win_rate", "optimal_rate", "exploitability"))
                     and "/seat" not in k}
            bar.write(f"update {update}: " + ", ".join(f"{k} {v:.3f}" for k, v in shown.items()))
        return D.broadcast_object(metrics)

    def checkpoint(update: int) -> None:
        ranks = D.all_gather_objects({"rng": capture_rng_state({"rollout": gen.torch, "shuffle": shuffle}),
                                      "rollout_py": gen.py.getstate(), "opponents": opponent_rng.getstate(),
                                      "advantages": plain(estimator.state_dict()),
                                      "replay": None if buffer is None else buffer.state_dict()})
        if dist.is_main:
            state = {"update": update, "stage": stage_index, "phase_start": phase_start, "stage_start": stage_start,
                     "optimizer": optimizer.state_dict(), "ranks": ranks,
                     "pool": pool.state_dict(), "ratings": [list(r) for r in rating_results], "exact_history": exact_history,
                     "last_eval": {k: float(v) for k, v in last_eval.items() if isinstance(v, (int, float))},
                     "games_per_update": sp.games_per_update, "world_size": world,
                     "reference": None if learner.reference is None else {
                         k: v.detach().cpu().clone() for k, v in learner.reference.state_dict().items()}}
            save_checkpoint(run_dir, update, model, state, cfg.run.keep_last)
        D.barrier()

    stop = install_stop_handlers()
    bar = progress_bar(sp.updates, update, dist.is_main and cfg.logging.progress)
    fault = int(os.environ.get(FAULT_ENV, "0") or 0)
    local_games = sp.games_per_update // world
    started_update, run_started = update, time.perf_counter()
    last_train: dict = {}
    try:
        if update == 0 and resume_from is None and end_update > 0:
            last_eval = evaluate_now(0)
        while update < end_update:
            t0, cpu0 = time.perf_counter(), time.process_time()
            stage = sp.stages[stage_index]
            # -- 1. rollouts
            specs = plan_games(stage, local_games, sp.advantages.group_size, pool, opponent_rng, seed, update, rank)
            policies = build_policies(specs, model, pool, stage.mode, stage.temperature, stage.max_action_bytes,
                                      settings.search, routing, stage.prompt_style)
            policies = with_exact_values(policies, learner.rl, LEARNER)  # mmd values: exact (selfplay/action_values.py)
            with torch.no_grad():
                episodes = play(specs, policies, gen)
            turns = [t for ep in episodes for t in ep.turns if t.policy == LEARNER]
            values = None
            if getattr(model, "value_head", None) is not None:  # V(s) of every learner turn, one batched pass
                values = turn_values(model, turns, sp.micro_batch_turns, **routing)
                for t, v in zip(turns, values):
                    t.value = float(v)
            rollout_s = time.perf_counter() - t0
            # -- 2. advantages (learner turns only)
            reward = shaped_reward([t.payoff for t in turns], [not t.legal for t in turns], sp.advantages.illegal_penalty)
            episode_ids = np.array([t.episode for t in turns], dtype=np.int64)
            record = Turns(reward, [t.game for t in turns], np.array([t.seat for t in turns], dtype=np.int64),
                           episode_ids, episode_ids // sp.advantages.group_size,
                           np.array([t.payoff for t in turns], dtype=np.float64), values)
            adv = estimator(record)
            returns = None if values is None else estimator.value_targets(record, adv)
            adv, keep = finalize(adv, normalize=False, drop_zero=sp.advantages.drop_zero)
            if sp.advantages.normalize:
                adv = global_normalize(adv, keep, device)
            # -- 3. optimize: steps_per_update optimizer steps of accumulated micro-steps, on the
            #       update's turns (+ symmetry images) or draws from the replay buffer
            train_turns, train_adv, train_returns, plan = training_plan(settings, turns, adv, keep, returns, buffer,
                                                                        shuffle)
            sums = optimize_update(learner, settings, stage, train_turns, train_adv, plan, episodes,
                                   (update - phase_start) * len(plan), device, dist, train_returns,
                                   lr_step=update * run_steps, lr_stride=run_steps / len(plan),
                                   stage_updates=update - stage_start)
            update += 1
            if hasattr(learner.rl, "maybe_update_magnet"):  # mmd's magnet moves every magnet_every updates
                learner.rl.maybe_update_magnet(learner.reference, model, update - phase_start)
            # -- 4. pool, metrics, curriculum, evaluation, checkpoint
            scores = merge_scores(D.all_gather_objects(learner_scores(episodes)))
            pool.record({k: v for k, v in scores.items() if k.startswith(POOL_PREFIX)})
            if update % sp.pool.snapshot_every == 0:
                pool.add(model, update)
                record_snapshot(model, eval_games, sp.eval, exact_history)
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            metrics = {k: v / sums["_n/" + k] for k, v in sums.items() if "_n/" + k in sums}
            metrics.update(update_metrics(episodes, turns, reward, adv, keep, scores, world, device))
            if values is not None:  # calibration of the rollout's V(s) against its targets, all ranks
                pairs = D.all_gather_objects((returns, values))
                ev = explained_variance(np.concatenate([r for r, _ in pairs]), np.concatenate([v for _, v in pairs]))
                if np.isfinite(ev):  # undefined when every return is equal
                    metrics["value/explained_variance"] = ev
            metrics.update(stage=stage_index, lr=optimizer.param_groups[0]["lr"], grad_norm=sums.get("grad_norm", 0.0),
                           games_per_s=sp.games_per_update / elapsed, rollout_s=rollout_s, update_s=elapsed,
                           update_cpu_s=cpu,
                           pool_size=len(pool.snapshots), games_digest=games_digest(episodes))
            if buffer is not None:
                metrics["replay_turns"] = len(buffer)
            logger.log(update, "train", metrics)
            last_train = metrics
            bar.update(1)
            bar.set_postfix(games_s=f"{metrics['games_per_s']:.1f}", loss=f"{metrics.get(learner.rl.name + '/loss', 0):.3f}",
                            **{k[4:]: f"{v:.2f}" for k, v in metrics.items() if k.startswith("win/")})
            stopping = D.any_rank(stop.requested, device)
            finished = update == end_update or stopping
            if (sp.eval.every and update % sp.eval.every == 0) or (update == sp.updates):
                last_eval = evaluate_now(update)
            if stage_index < len(sp.stages) - 1 and stage_done(sp.stages[stage_index], update, last_eval):
                stage_index, stage_start = stage_index + 1, update
                if not same_training(sp, stage_index - 1, stage_index):  # a new phase (selfplay/phases.py)
                    phase_start, settings = update, stage_settings(sp, stage_index)
                    learner = start_phase(settings, model, train_model, optimizer, schedule, routing, phase_start)
                    buffer = phase_buffer(buffer, settings)
                if dist.is_main:
                    bar.write(f"update {update}: curriculum stage {stage_index} begins")
            if update % cfg.run.checkpoint_every == 0 or finished:
                checkpoint(update)
            if fault and update == fault:
                os._exit(17)
            if stopping:
                if dist.is_main:
                    bar.write(f"stopped by {stop.signal_name or 'a signal'} at update {update}; checkpoint saved, "
                              "run the same command again to resume")
                break
    finally:
        stop.restore()
        bar.close()
        logger.close()

    elapsed = time.perf_counter() - run_started
    summary = {"run": str(run_dir), "update": update, "of_updates": sp.updates,
               "games_per_s": sp.games_per_update * (update - started_update) / elapsed if elapsed else 0.0,
               "stopped_by_signal": stop.requested, "loss": last_train.get(f"{learner.rl.name}/loss", float("nan"))}
    summary.update({k: v for k, v in last_eval.items() if k.endswith(("/win_rate", "optimal_rate", "exploitability"))
                    and "/seat" not in k})
    if dist.is_main:
        print(summary_table(summary))
    return summary


def plain(obj):
    """`obj` with numpy scalars as Python numbers (checkpoints load with weights_only=True)."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    return obj.item() if isinstance(obj, np.generic) else obj


def stage_done(stage, update: int, last_eval: dict) -> bool:
    """A stage ends after `until_update` updates, or when its eval metric reaches `until_value`."""
    if stage.until_update and update >= stage.until_update:
        return True
    return bool(stage.until_metric) and last_eval.get(stage.until_metric, float("-inf")) >= stage.until_value


def update_metrics(episodes, turns, reward, adv, keep, scores, world: int, device) -> dict[str, float]:
    """Per-update training metrics summed over ranks: games, turns, illegal rate, mean reward,
    the learner's score (win 1, draw 1/2) against each kind of opponent."""
    local = torch.tensor([len(episodes), len(turns), sum(not t.legal for t in turns), float(np.sum(reward)),
                          float(keep.sum()), float(np.abs(adv[keep]).sum())], dtype=torch.float64, device=device)
    games, n_turns, illegal, reward_sum, kept, adv_abs = (float(x) for x in D.all_reduce_sum(local))
    out = {"games": games, "turns": n_turns, "illegal_rate": illegal / max(n_turns, 1),
           "reward_mean": reward_sum / max(n_turns, 1), "turns_trained": kept, "adv_abs_mean": adv_abs / max(kept, 1)}
    by_kind: dict[str, list[float]] = {}
    for name, (total, n) in scores.items():
        kind = "pool" if name.startswith(POOL_PREFIX) else name.partition("/")[2]
        a, b = by_kind.get(kind, [0.0, 0])
        by_kind[kind] = [a + total, b + n]
    out.update({f"win/{kind}": total / n for kind, (total, n) in by_kind.items()})
    return out


def run_evaluation(model, cfg: RootConfig, games: list[str], update: int, pool: Pool, rating_results: list,
                   exact_history: dict, run_dir: Path, stage) -> dict:
    """Matches vs bots by seat, optimal-move rate, exploitability and ratings (rank 0); the current
    stage's action mode (unless eval.mode) and prompt style."""
    ev = cfg.selfplay.eval
    mode, style = ev.mode or stage.mode, stage.prompt_style
    name = f"step_{update}"
    seed = derive_seed(cfg.run.seed, "eval")  # the same games at every evaluation: paired comparisons
    started = time.perf_counter()
    evaluation = evaluate(model, games, ev, seed, mode, name=name, history=exact_history, style=style)
    metrics, results = evaluation.metrics, evaluation.results
    if ev.ratings and results:
        rating_results.extend((g, a, b, s) for g, (a, b, s) in results)
        player = ModelPolicy(model, name=name, mode=mode, temperature=ev.temperature, style=style)
        for game in dict.fromkeys(g for g, _ in results):
            opponents = {s.name[len(POOL_PREFIX):]: ModelPolicy(s.model, name=s.name, mode=mode, temperature=ev.temperature,
                                                                style=style)
                         for s in pool.snapshots if s.update != update}
            if opponents and ev.pool_episodes:
                res = match_results(player, game, opponents, ev.pool_episodes, seed, name=name)
                rating_results.extend((game, *r) for o in opponents for r in res[o]["results"])
            rows = R.rating_rows([(a, b, s) for g, a, b, s in rating_results if g == game], update,
                                 n_boot=ev.rating_bootstrap, seed=seed)
            R.append_rows(run_dir / RATINGS_FILE, [{**row, "game": game} for row in rows])
            metrics[f"{game}/elo"] = next(r["elo"] for r in rows if r["player"] == name)
    metrics["eval_s"] = time.perf_counter() - started
    return metrics
