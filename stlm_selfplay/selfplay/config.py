"""`SelfPlayConfig`: the `selfplay:` section of the root config (what `stlm selfplay` reads).

Every option is declared, typed and documented where it is declared. The rest of a self-play run
comes from the root config: `run.*` (name, seed, device, resume, checkpoint_every, keep_last),
`optimizer.*` (AdamW/Muon betas, eps, weight decay; `selfplay.lr` replaces the peak lr) and
`logging.*` (wandb, progress bar, log_every). `check_selfplay` validates values that types cannot.

Why self-play has its own lr, schedule and clipping (`lr`, `lr_schedule`, `warmup_updates`,
`min_lr_ratio`, `grad_clip`) instead of reading `optimizer.lr`, `optimizer.grad_clip` and
`schedule.*`: a staged run (`stlm run`) pretrains and then self-plays from ONE config, and the two
stages want different values (RL fine-tuning runs at a far smaller lr, and its clock is
`updates x steps_per_update` optimizer steps, not `schedule.steps`). `run.dtype` and
`run.compile` apply to pretraining only; self-play runs in fp32 eager mode.

    selfplay:
      init_from: runs/ttt-pretrain          # a pretrain run, a checkpoint folder or an HF folder
      games_per_update: 64
      updates: 200
      stages: [{games: {tictactoe: 1.0}, opponents: {self: 0.5, pool: 0.2, random: 0.3}}]
      objectives: [{name: reinforce}]
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from stlm_selfplay.envs.formats import PROMPT_STYLES
from stlm_selfplay.errors import UserError, closest, unknown_name
from stlm_selfplay.options import check_choices, option
from stlm_selfplay.selfplay.pool_sampling import POOL_SAMPLERS
from stlm_selfplay.selfplay.replay import ReplayConfig, check_replay
from stlm_selfplay.selfplay.search import SearchConfig, check_search, check_searchable
from stlm_selfplay.train.optim import LR_SCHEDULES

ACTION_MODES = ("constrained", "free")
SPECIAL_OPPONENTS = ("self", "pool")  # every other opponent name is a scripted bot of the game
VALUE_OBJECTIVE = "value"  # the objective that trains the value head (objectives/value.py)
SEARCH_OBJECTIVE = "search_policy"  # the policy objective of search runs (objectives/search_policy.py)
MMD_OBJECTIVE = "mmd"  # magnetic mirror descent, constrained mode only (objectives/mmd.py)
LEGAL_OBJECTIVE = "legal_mass"  # free mode's legality term on the RL turns (objectives/legal_mass.py)
TURN_OBJECTIVES = (VALUE_OBJECTIVE, LEGAL_OBJECTIVE)  # trained on the RL turns, not on transcripts


@dataclass
class StageConfig:
    """One curriculum stage: which games, against whom, how the learner acts, and when it ends."""

    # (the two mixes below start empty so that a YAML mix replaces, not extends, a default one;
    #  the default curriculum is DEFAULT_STAGE)
    games: Dict[str, float] = option({}, "game -> share of the update's games (shares are rounded to whole games by "
                                     "largest remainder), e.g. {tictactoe: 1.0}")
    opponents: Dict[str, float] = option({}, "opponent mix, drawn per game, e.g. {self: 0.5, pool: 0.2, random: 0.3}: "
                                         "self (the learner in every seat; all seats train), pool (a frozen snapshot, "
                                         "picked by pool.sampling) or a scripted bot of the game (random, optimal, ...)")
    game_options: Dict[str, Dict[str, Any]] = option({}, "game -> make() options, e.g. {tictactoe: {illegal: "
                                                     "\"retry:1\"}}")
    temperature: float = option(1.0, "sampling temperature of learner and snapshots (constrained: on the summed "
                                "action log-probs; free: per byte)")
    mode: str = option("constrained", "constrained (softmax over the legal actions' log-probs) or free (text)",
                       choices=ACTION_MODES)
    max_action_bytes: int = option(8, "free mode: bytes the model may write per move")
    prompt_style: str = option("compact", "prompts of the learner and snapshots, in training games and the "
                               "evaluation's matches: compact (one line restating the position) or transcript "
                               "(the game so far as compact lines, then the current one: append-only, so each move "
                               "reuses the previous prompt's trunk caches, model/prompt_cache.py; needs a model "
                               "context that holds a whole game; games with private information, and search, keep compact)",
                               choices=PROMPT_STYLES)
    random_opening: int = option(0, "each game first plays k ~ U{0..random_opening} uniformly random moves (from the "
                                 "game's seed; not trained on), so training reaches positions that the policies' own "
                                 "play rarely does; 0 = off")
    lr_scale: float = option(1.0, "multiplies the run's lr schedule while this stage trains (the schedule itself "
                             "spans the run): e.g. 0.3 for the quickstart's Kuhn stage, whose model's logit_scale of 10 "
                             "makes each step move its policy ~10x as far as at logit_scale 1, and whose steps at "
                             "the full lr undo much of the tic-tac-toe stage before it (RESULTS.md)")
    warmup_updates: int = option(0, "the stage's lr rises linearly from ~0 to lr_scale x the run's schedule over its "
                                 "first n updates (0 = off): the optimizer's momentum from the previous stage, and "
                                 "a new game's first large gradients, then move the shared weights at a small lr "
                                 "(a Kuhn stage after tic-tac-toe at lr_scale 1: 11-22% instead of 22-47% "
                                 "tic-tac-toe losses to minimax, RESULTS.md)")
    until_update: int = option(0, "the stage ends once this many updates (counted from the run's start) are done; 0 = "
                               "no update limit (the last stage runs to `updates`)")
    until_metric: str = option("", "eval metric that ends the stage when >= until_value, e.g. "
                               "\"tictactoe/random/win_rate\" or \"tictactoe/optimal_rate\"; \"\" = none")
    until_value: float = option(0.0, "threshold for until_metric")
    # per-stage training settings (selfplay/phases.py): null = the run-level option of the same name
    objectives: Optional[List[Dict[str, Any]]] = option(None, "this stage's objectives, as selfplay.objectives (null = "
                                                        "the run's); where a stage's objectives, search or replay "
                                                        "differ from the previous stage's, they start afresh: new "
                                                        "objective state, the KL reference / mmd magnet = the learner "
                                                        "at the stage start, schedules in optimizer steps (entropy, "
                                                        "alpha) and magnet_every counted from the stage start")
    search: Optional[SearchConfig] = option(None, "this stage's search, as selfplay.search (null = the run's), e.g. "
                                            "{simulations: 256, prior: uniform} for a tic-tac-toe stage, "
                                            "{simulations: 0} to turn it off")
    replay: Optional[ReplayConfig] = option(None, "this stage's replay, as selfplay.replay (null = the run's); the "
                                            "buffer carries into a next stage that also replays and is dropped by "
                                            "one that does not")


def default_stage() -> StageConfig:
    """The default curriculum's one stage: tic-tac-toe against self, snapshots and random play."""
    return StageConfig(games={"tictactoe": 1.0}, opponents={"self": 0.5, "pool": 0.2, "random": 0.3})


@dataclass
class PoolConfig:
    """Frozen snapshots of the learner that `pool` opponents are drawn from."""

    snapshot_every: int = option(10, "updates between snapshots (the initial model is snapshot 0)")
    max_size: int = option(8, "snapshots kept; the oldest is dropped first")
    sampling: str = option("uniform", "which snapshot a pool opponent is: uniform, latest (newest favoured, weight "
                           "latest_decay^age) or prioritized (weight (1 - learner score vs it)^priority_power, PFSP)",
                           choices=POOL_SAMPLERS)
    latest_decay: float = option(0.5, "latest: a snapshot one step older is this much less likely")
    priority_power: float = option(2.0, "prioritized: sharpness of the preference for hard snapshots")
    score_decay: float = option(0.9, "prioritized: EMA decay of the learner's score against each snapshot")


@dataclass
class AdvantageConfig:
    """Advantages from rewards (stlm_selfplay/selfplay/advantages.py)."""

    estimator: str = option("rae", "rae (EMA baseline per game and role), rloo, group, none or gae (generalised "
                            "advantage estimation over each seat's turns from the value head's V(s): needs model "
                            "value_head: true and a `value` objective)")
    options: Dict[str, Any] = option({}, "estimator options, e.g. {decay: 0.95} (rae), {gamma: 1.0, lambda: 0.95} "
                                     "(gae)")
    normalize: bool = option(False, "rescale the kept advantages to mean 0, std 1 over the update (all ranks)")
    drop_zero: bool = option(False, "skip turns whose advantage is 0 (no gradient)")
    group_size: int = option(1, "games per seed group (rloo and group need > 1: same seed, same seats)")
    illegal_penalty: float = option(0.0, "reward shaping: subtracted from an illegal move's reward")


@dataclass
class EvalConfig:
    """A game evaluation (`selfplay/evaluate.py`): matches against scripted bots in each seat, and
    each game's exact metrics. Two sections are one: `selfplay.eval` (every `every` updates, also
    before the first and after the last) and the root `evaluation` (`stlm run`'s pretrained vs
    final model; its defaults are `evaluation_defaults()`). An option only one section reads
    (`SELFPLAY_ONLY`, `EVALUATION_ONLY`) is refused in the other when changed from its default."""

    every: int = option(20, "selfplay.eval: updates between evaluations (0 = only before the first and after the "
                        "last)")
    games: List[str] = option([], "games to evaluate ([] = every stage's games; evaluation: self-play's eval games, "
                              "else the pretraining transcripts' games)")
    bots: List[str] = option(["random", "optimal"], "scripted opponents; each game uses the ones it has (tictactoe: "
                             "random, minimax, optimal; kuhn_poker: random, nash)")
    episodes: int = option(50, "games per bot per seat (so 2 x episodes per bot; 0 = skip the matches)")
    temperature: float = option(0.0, "evaluation decoding (0 = greedy: the fixed, most likely move)")
    mode: str = option("", "action mode for evaluation (\"\" = the current stage's mode; evaluation: the "
                       "selfplay.eval mode, else the last stage's)", choices=("",) + ACTION_MODES)
    optimal_rate: bool = option(True, "tictactoe: optimal-move rate over all 4,520 positions (one batched score)")
    exploitability: bool = option(True, "kuhn_poker: exploitability of the current and the average policy")
    ratings: bool = option(True, "selfplay.eval: Bradley-Terry ratings of the learner, its snapshots and the bots")
    pool_episodes: int = option(20, "selfplay.eval, ratings: games of the learner against each pool snapshot")
    rating_bootstrap: int = option(100, "selfplay.eval, ratings: bootstrap refits for the intervals (0 = none)")
    sample_games: int = option(0, "evaluation: games per seat against each bot rendered as text in the report")
    at_most: Dict[str, float] = option({}, "evaluation: targets the final model must meet, metric -> bound, e.g. "
                                       "{tictactoe/minimax/loss_rate: 0.25, kuhn_poker/exploitability: 0.2}; each gets a "
                                       "row in evaluation.json's `targets` and the report (a match rate also a one-sided "
                                       "z-test that it lies below the bound)")
    at_least: Dict[str, float] = option({}, "evaluation: the same for metrics that must reach a bound, e.g. "
                                        "{tictactoe/optimal_rate: 0.85}")


SELFPLAY_ONLY = ("every", "ratings", "pool_episodes", "rating_bootstrap")  # read by selfplay.eval only
EVALUATION_ONLY = ("sample_games", "at_most", "at_least")  # read by the root `evaluation` only


def evaluation_defaults() -> EvalConfig:
    """The root `evaluation` section's defaults: 400 games per seat against every kind of bot."""
    return EvalConfig(bots=["random", "minimax", "nash"], episodes=400, sample_games=1)


def check_unread(cfg: EvalConfig, defaults: EvalConfig, names, where: str, reader: str) -> None:
    """`UserError` for an option of `names` changed from its default in a section that ignores it."""
    for name in names:
        if getattr(cfg, name) != getattr(defaults, name):
            raise UserError(f"config key '{where}.{name}' is not read there (only {reader} reads it); remove it")


@dataclass
class SelfPlayConfig:
    """Everything `stlm selfplay` needs beyond `run`, `optimizer` and `logging`."""

    init_from: str = option("", "the model to improve: a pretrain run folder, a checkpoint folder or a Hugging Face "
                            "model folder (\"\" = a fresh model from `model.*`)")
    updates: int = option(100, "policy updates in the run (each: play, compute advantages, optimize)")
    games_per_update: int = option(64, "games played per update, over all ranks (divisible by processes)")
    stages: List[StageConfig] = option(help="the curriculum: one or more stages, in order",
                                       factory=lambda: [default_stage()])
    pool: PoolConfig = option(help="frozen snapshots to play against", factory=PoolConfig)
    advantages: AdvantageConfig = option(help="baselines and shaping", factory=AdvantageConfig)
    objectives: List[Dict[str, Any]] = option(
        [{"name": "reinforce"}], "one RL objective (reinforce, ppo, grpo or mmd, with its options) plus optional "
        "auxiliary objectives with weights, e.g. [{name: ppo, epsilon: 0.2}, {name: ce, weight: 0.1}] (ce reads the "
        "played transcripts; `value`, e.g. {name: value, weight: 0.5, epsilon: 0.2}, trains the value head on the RL "
        "turns; `legal_mass`, free mode, e.g. {name: legal_mass, weight: 1.0}, raises the probability of writing a "
        "legal move on the RL turns); the loss is their weighted sum")
    ppo_epochs: int = option(1, "passes over the collected turns per update")
    minibatches: int = option(1, "optimizer steps per pass (the turns are shuffled and split)")
    micro_batch_turns: int = option(256, "turns per forward/backward (gradient accumulation above it)")
    lr: float = option(1e-4, "peak learning rate (optimizer.* gives betas, eps, weight decay, muon)")
    lr_schedule: str = option("constant", "learning-rate shape over the run's optimizer steps: constant, cosine, "
                              "linear or wsd", choices=LR_SCHEDULES)
    warmup_updates: int = option(0, "linear warmup, in optimizer steps")
    min_lr_ratio: float = option(0.1, "final lr / peak lr for decaying schedules")
    grad_clip: float = option(1.0, "clip the global gradient norm (0 = off)")
    eval: EvalConfig = option(help="matches, optimal-move rate, ratings", factory=EvalConfig)
    search: SearchConfig = option(help="PUCT search for the learner's training moves (simulations > 0; constrained "
                                  "mode, two-player perfect-information games); train it with objectives "
                                  "[{name: search_policy}, {name: value}]; evaluation never searches",
                                  factory=SearchConfig)
    replay: ReplayConfig = option(help="search_policy on the last searched turns across updates (capacity > 0), "
                                  "batch_turns per step, steps_per_update steps per update", factory=ReplayConfig)


STAGE_TRAINING = ("objectives", "search", "replay")  # run-level options a stage may set for itself


def stage_settings(cfg: SelfPlayConfig, index: int) -> SelfPlayConfig:
    """The run as stage `index` trains: `cfg` with that stage's objectives, search and replay in
    place of the run-level ones where it sets them (the stage list unchanged)."""
    stage = cfg.stages[index]
    return dataclasses.replace(cfg, **{k: getattr(stage, k) for k in STAGE_TRAINING if getattr(stage, k) is not None})


def same_training(cfg: SelfPlayConfig, a: int, b: int) -> bool:
    """Whether stages `a` and `b` train with equal objectives, search and replay (one phase,
    selfplay/phases.py, when they are consecutive)."""
    x, y = stage_settings(cfg, a), stage_settings(cfg, b)
    return all(getattr(x, k) == getattr(y, k) for k in STAGE_TRAINING)


def steps_per_update(cfg: SelfPlayConfig) -> int:
    """Optimizer steps per update: replay.steps_per_update with replay, else ppo_epochs x minibatches."""
    return cfg.replay.steps_per_update if cfg.replay.capacity else cfg.ppo_epochs * cfg.minibatches


def eval_games(cfg: SelfPlayConfig) -> list[str]:
    """The games a self-play run evaluates on: `eval.games`, else every stage's games in order."""
    return list(cfg.eval.games) or list(dict.fromkeys(g for s in cfg.stages for g in s.games))


def _positive(name: str, value) -> None:
    if value <= 0:
        raise UserError(f"config key 'selfplay.{name}' must be > 0, got {value}")


def check_selfplay(cfg: SelfPlayConfig, world_size: int = 1, value_head: bool | None = None) -> None:
    """Value checks the types cannot express; raises a one-line `UserError`. With `value_head`
    (whether the model to improve has one; None = not known yet) also `check_value_head`."""
    from stlm_selfplay.envs import GAMES, list_players

    for name in ("updates", "games_per_update", "ppo_epochs", "minibatches", "micro_batch_turns", "lr"):
        _positive(name, getattr(cfg, name))
    _positive("pool.snapshot_every", cfg.pool.snapshot_every)
    _positive("pool.max_size", cfg.pool.max_size)
    _positive("advantages.group_size", cfg.advantages.group_size)
    if cfg.games_per_update % (world_size * cfg.advantages.group_size):
        raise UserError(f"selfplay.games_per_update={cfg.games_per_update} must be divisible by processes x "
                        f"advantages.group_size = {world_size * cfg.advantages.group_size}")
    check_choices(cfg, "selfplay.")  # pool.sampling, lr_schedule, eval.mode, stages[i].mode, search.prior, ...
    if cfg.eval.episodes < 0 or cfg.eval.every < 0:
        raise UserError("selfplay.eval.episodes and selfplay.eval.every must be >= 0")
    check_unread(cfg.eval, EvalConfig(), EVALUATION_ONLY, "selfplay.eval", "the root evaluation section")
    if not cfg.stages:
        raise UserError("selfplay.stages is empty; give at least one stage, e.g. [{games: {tictactoe: 1.0}}]")
    for i, stage in enumerate(cfg.stages):
        where = f"selfplay.stages[{i}]"
        if not stage.games or sum(stage.games.values()) <= 0:
            raise UserError(f"{where}.games needs at least one game with a positive weight, e.g. {{tictactoe: 1.0}}")
        if not stage.opponents or sum(stage.opponents.values()) <= 0:
            raise UserError(f"{where}.opponents needs a positive weight, e.g. {{self: 0.5, random: 0.5}}")
        for game in stage.games:
            if game not in GAMES:
                raise unknown_name(f"game in {where}.games", game, GAMES)
            bots = list_players(game)
            for opponent in stage.opponents:
                if opponent not in SPECIAL_OPPONENTS and opponent.partition(":")[0] not in bots:
                    raise UserError(f"{where}.opponents: '{opponent}' is neither self, pool nor a {game} bot"
                                    f"{closest(opponent, SPECIAL_OPPONENTS + tuple(bots))}; valid: "
                                    f"{', '.join(SPECIAL_OPPONENTS + tuple(bots))}")
        if any(w < 0 for w in list(stage.games.values()) + list(stage.opponents.values())):
            raise UserError(f"{where}: game and opponent weights must be >= 0")
        if not stage.lr_scale > 0:
            raise UserError(f"{where}.lr_scale must be > 0 (it multiplies the lr schedule), got {stage.lr_scale}")
        if stage.warmup_updates < 0:
            raise UserError(f"{where}.warmup_updates must be >= 0 (updates of lr warmup at the stage start), "
                            f"got {stage.warmup_updates}")
        if stage.random_opening < 0:
            raise UserError(f"{where}.random_opening must be >= 0 (random moves before the policies move), "
                            f"got {stage.random_opening}")
        if stage.until_metric and i == len(cfg.stages) - 1:
            raise UserError(f"{where}.until_metric: the last stage runs to selfplay.updates; it cannot end early")
    for where, view, indices in training_groups(cfg):  # each stage's objectives, search and replay
        try:
            check_training(view, indices)
        except UserError as err:
            raise (err if where == "selfplay" else at_stage(err, where)) from None
    if cfg.advantages.estimator in ("rloo", "group") and cfg.advantages.group_size < 2:
        raise UserError(f"selfplay.advantages.estimator={cfg.advantages.estimator} compares games sharing a seed; "
                        "set selfplay.advantages.group_size >= 2")
    from stlm_selfplay.selfplay.advantages import build_estimator

    build_estimator(cfg.advantages.estimator, cfg.advantages.options)
    if value_head is not None:
        check_value_head(cfg, value_head)


def training_groups(cfg: SelfPlayConfig) -> list[tuple[str, SelfPlayConfig, list[int]]]:
    """(where, the run as those stages train, their indices): the stages that set none of
    STAGE_TRAINING together under the run-level options ("selfplay"), then each stage that sets
    any alone ("selfplay.stages[i]", `stage_settings`)."""
    own = [i for i, stage in enumerate(cfg.stages) if any(getattr(stage, k) is not None for k in STAGE_TRAINING)]
    inherit = [i for i in range(len(cfg.stages)) if i not in own]
    groups = [("selfplay", dataclasses.replace(cfg, stages=[cfg.stages[i] for i in inherit]), inherit)] if inherit else []
    return groups + [(f"selfplay.stages[{i}]", dataclasses.replace(stage_settings(cfg, i), stages=[cfg.stages[i]]), [i])
                     for i in own]


def at_stage(err: UserError, where: str) -> UserError:
    """`err` about the run-level objectives / search / replay, reworded for the stage at `where`
    that trains with them (`selfplay.search` -> `selfplay.stages[1].search`)."""
    message = str(err)
    for key in STAGE_TRAINING:
        message = message.replace(f"selfplay.{key}", f"{where}.{key}")
    return UserError(message if where in message else f"{where}: {message}")


def check_training(cfg: SelfPlayConfig, indices: list[int]) -> None:
    """The objectives, search and replay of `cfg` against its stages (numbered `indices` in the
    run's curriculum): one RL objective, search with search_policy on searchable games, replay on
    search_policy only, mmd and exact values where they can run, a value objective for gae."""
    from stlm_selfplay.objectives import build_objectives
    from stlm_selfplay.objectives.rl import is_rl, rl_objective_names
    from stlm_selfplay.selfplay.action_values import check_exact_values, values_of, wants_exact_values

    objectives = build_objectives(cfg.objectives)  # unknown names / options -> UserError
    rl = [o.name for o in objectives.objectives if is_rl(o) or o.name == SEARCH_OBJECTIVE]
    if len(rl) != 1:
        raise UserError(f"selfplay.objectives needs exactly one RL objective ({', '.join(rl_objective_names())}, "
                        f"or {SEARCH_OBJECTIVE} with selfplay.search), got {rl or 'none'}")
    check_search_setup(cfg, rl[0], indices)
    check_replay(cfg.replay, rl[0], VALUE_OBJECTIVE in [o.name for o in objectives.objectives])
    if rl[0] == MMD_OBJECTIVE and any(stage.mode != "constrained" for stage in cfg.stages):
        raise UserError(f"selfplay.objectives: {MMD_OBJECTIVE} needs constrained mode in every stage (its KL terms are "
                        "exact sums over the legal actions)")
    if LEGAL_OBJECTIVE in [o.name for o in objectives.objectives] and any(s.mode != "free" for s in cfg.stages):
        raise UserError(f"selfplay.objectives: {LEGAL_OBJECTIVE} needs mode: free in every stage (a constrained policy "
                        "only ever plays legal moves); remove it or set the stages' mode to free")
    for objective in objectives.objectives:
        if wants_exact_values(objective):
            check_exact_values(cfg, values_of(objective))
    if _needs_values(cfg) and VALUE_OBJECTIVE not in [o.name for o in objectives.objectives]:
        raise UserError(f"selfplay.advantages.estimator={cfg.advantages.estimator} reads the value head's V(s), "
                        f"which only the value objective trains: add {{name: {VALUE_OBJECTIVE}}} to selfplay.objectives")


def check_search_setup(cfg: SelfPlayConfig, policy_objective: str, indices: list[int] | None = None) -> None:
    """`UserError` unless search and the `search_policy` objective come together, in constrained
    mode, on two-player perfect-information games that can clone."""
    check_search(cfg.search)
    on = cfg.search.simulations > 0
    if on != (policy_objective == SEARCH_OBJECTIVE):
        raise UserError(f"selfplay.objectives: {SEARCH_OBJECTIVE} trains on search visit targets and search moves "
                        f"train only with it; use it together with selfplay.search.simulations > 0"
                        + (f" (got {policy_objective})" if on else ""))
    if not on:
        return
    if cfg.advantages.drop_zero:
        raise UserError("selfplay.search: advantages.drop_zero would drop turns that search_policy trains on; "
                        "set it to false")
    for i, stage in zip(indices or range(len(cfg.stages)), cfg.stages):
        if stage.mode != "constrained":
            raise UserError(f"selfplay.search needs constrained mode; selfplay.stages[{i}].mode is {stage.mode}")
        for game in stage.games:
            check_searchable(game, stage.game_options.get(game))


def _needs_values(cfg: SelfPlayConfig) -> bool:
    """Does the configured advantage estimator read per-turn values (gae)?"""
    from stlm_selfplay.selfplay.advantages import ESTIMATORS

    estimator = ESTIMATORS.get(cfg.advantages.estimator)
    return estimator is not None and estimator.needs_values


def check_value_head(cfg: SelfPlayConfig, value_head: bool, source: str = "the model") -> None:
    """`UserError` when gae or the value objective is configured for a model without a value head."""
    if value_head:
        return
    if _needs_values(cfg):
        raise UserError(f"selfplay.advantages.estimator={cfg.advantages.estimator} needs model value_head: true "
                        "(per-turn values V(s); build or pretrain the model with it); "
                        f"{source} has no value head")
    if any(o.get("name") == VALUE_OBJECTIVE for i in range(len(cfg.stages)) for o in stage_settings(cfg, i).objectives):
        raise UserError(f"selfplay.objectives: '{VALUE_OBJECTIVE}' trains the value head and needs model "
                        f"value_head: true; {source} has no value head")
