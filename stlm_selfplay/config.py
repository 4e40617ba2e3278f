"""The one root config shared by `stlm pretrain`, `selfplay`, `compare` and `run`.

A config is a YAML file merged over the dataclass defaults below, then `key=value` overrides
(OmegaConf dotlist) merged over that:

    cfg = load_config("configs/pretrain/shakespeare-tiny.yaml", ["optimizer.lr=1e-3"])

Every option is declared, typed and documented here. Unknown keys, wrong types and invalid
choices are `UserError`s naming the key and the closest valid key. The resolved config is written
beside a run's outputs (`runs/<name>/config.yaml`, `runs.save_config`) so the run can be repeated exactly.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from stlm_selfplay.bundled import config_file
from stlm_selfplay.errors import UserError, as_user_error, closest
from stlm_selfplay.runs import STAGES
from stlm_selfplay.selfplay.config import (ACTION_MODES, SELFPLAY_ONLY, EvalConfig, SelfPlayConfig, check_unread,
                                           evaluation_defaults)
from stlm_selfplay.train.optim import LR_SCHEDULES


@dataclass
class RunConfig:
    name: str = "pretrain"  # run folder name: outputs go to <out_dir>/<name>/
    out_dir: str = "runs"  # parent folder of run folders
    seed: int = 0  # seeds model init, data order, dropout and samples; same seed -> same run
    device: str = "auto"  # auto (cuda > mps > cpu) | cpu | cuda | mps
    dtype: str = "auto"  # auto (bf16 autocast on CUDA, fp32 elsewhere) | float32 | bfloat16
    compile: bool = False  # wrap the model in torch.compile (faster on GPU, slow to start)
    cpu_threads: int = 0  # torch intra-op CPU threads while training (0 = torch's default); 1 is
    #                       much faster on a machine shared with other jobs
    resume: str = "auto"  # auto: continue from the run's latest complete checkpoint if any;
    #                       never: start fresh (refused if the run folder has checkpoints);
    #                       <path>: continue from this checkpoint folder
    checkpoint_every: int = 500  # optimizer steps between checkpoints (one is also saved at the end)
    keep_last: int = 3  # number of most recent checkpoints kept (the best by val loss is kept too)


@dataclass
class ModelSection:
    preset: str = "tiny"  # a preset name (tiny, stlm-10m, ...) or a model YAML path
    overrides: Dict[str, Any] = field(default_factory=dict)  # STLMConfig fields replacing the
    #                                                          preset's, e.g. {n_layers: 2}


@dataclass
class DataConfig:
    source: str = "text"  # registered source: text | hf | games (stlm_selfplay/data/sources.py)
    # -- text: local files
    path: str = ""  # file, glob or folder of .txt / .jsonl / .parquet files (source: text)
    text_field: str = "text"  # column holding the text in .jsonl / .parquet / hf rows
    # -- hf: datasets.load_dataset(hf_name, hf_config, split=hf_split, streaming=streaming)
    hf_name: str = ""  # hub dataset name, e.g. roneneldan/TinyStories (source: hf)
    hf_config: str = ""  # dataset config name, "" for the default (source: hf)
    hf_split: str = "train"  # split to read (source: hf)
    streaming: bool = True  # stream instead of downloading the whole dataset (source: hf)
    # -- games: transcripts from the envs' scripted players
    games: Dict[str, float] = field(default_factory=dict)  # game name -> sampling weight
    players: List[str] = field(default_factory=lambda: ["random", "random"])  # scripted players, one per seat
    episodes: int = 1000  # number of transcripts to generate (source: games)
    game_style: str = "compact"  # transcript style: compact | verbose (source: games)
    seed: int = 0  # seed of generated corpora (games); separate from run.seed so the cache is shared
    # -- all sources
    max_documents: int = 0  # read at most this many documents (0 = all)
    max_bytes: int = 0  # stop after this many bytes of text (0 = all; cap streaming corpora)
    split: str = "tail"  # train/val split: tail (last val_fraction of the byte stream) | hash
    #                      (a document goes to val when its hash falls under val_fraction)
    val_fraction: float = 0.05  # fraction of bytes (tail) or documents (hash) held out for val
    val_max_sequences: int = 256  # cap on the fixed val set, in sequences (0 = whole val split)
    seq_len: int = 256  # ids per training sequence (consecutive sequences overlap by one id)
    batch_size: int = 16  # sequences per micro-batch on each rank
    cache_dir: str = ""  # preprocessed shard cache; "" -> $STLM_DATA_CACHE or ~/.cache/stlm_selfplay/data
    shard_tokens: int = 268435456  # ids per cache shard file (2^28 = 512 MiB of uint16)
    prefetch: int = 4  # batches prepared ahead by a background thread (0 = load in the loop)


@dataclass
class OptimizerConfig:
    name: str = "adamw"  # adamw | muon (Muon for 2-D trunk weights, AdamW for everything else)
    lr: float = 3e-3  # peak AdamW learning rate (the schedule scales it)
    betas: List[float] = field(default_factory=lambda: [0.9, 0.95])  # AdamW (beta1, beta2)
    eps: float = 1e-8  # AdamW epsilon
    weight_decay: float = 0.1  # decoupled weight decay; never applied to norms, biases, embeddings
    muon_lr: float = 0.02  # peak Muon learning rate (name: muon)
    muon_momentum: float = 0.95  # Muon momentum (name: muon)
    grad_clip: float = 1.0  # clip the global gradient norm to this (0 disables)
    grad_accum: int = 1  # micro-batches accumulated per optimizer step


@dataclass
class ScheduleConfig:
    steps: int = 1000  # optimizer steps in the run
    kind: str = "cosine"  # cosine | linear | wsd (warmup-stable-decay) | constant (after warmup)
    warmup_steps: int = 100  # linear warmup from 0 to the peak learning rate
    min_lr_ratio: float = 0.1  # final learning rate as a fraction of the peak
    decay_fraction: float = 0.2  # wsd only: fraction of steps spent in the final linear decay


@dataclass
class LoggingConfig:
    wandb: str = "offline"  # offline (local files, no network) | online | disabled;
    #                         the WANDB_MODE environment variable, when set, wins
    project: str = "stlm-selfplay"  # wandb project
    log_every: int = 10  # optimizer steps between train-metric lines in metrics.jsonl
    eval_every: int = 200  # optimizer steps between val evaluations (and at the end)
    val_batch_size: int = 32  # sequences per val forward pass
    sample_bytes: int = 128  # bytes sampled from the model at each eval (0 = no sample)
    sample_prompt: str = ""  # prompt for that sample ("" = start of a document)
    sample_temperature: float = 0.8  # sampling temperature for that sample
    progress: bool = True  # tqdm progress bar (rank 0 only)


@dataclass
class RootConfig:
    run: RunConfig = field(default_factory=RunConfig)  # identity, seed, device, resume
    model: ModelSection = field(default_factory=ModelSection)  # preset + overrides
    data: DataConfig = field(default_factory=DataConfig)  # where text comes from, how it is packed
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)  # AdamW / Muon, clipping
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)  # steps and learning-rate shape
    objectives: List[Dict[str, Any]] = field(default_factory=lambda: [{"name": "ce"}])  # weighted
    #   sum of registered objectives: [{name: ce}, {name: z_loss, weight: 1e-4}, ...]
    logging: LoggingConfig = field(default_factory=LoggingConfig)  # metrics, wandb, eval, samples
    stages: List[str] = field(default_factory=lambda: ["pretrain"])  # what `stlm run` runs, in order
    selfplay: SelfPlayConfig = field(default_factory=SelfPlayConfig)  # see the self-play issue
    evaluation: EvalConfig = field(default_factory=evaluation_defaults)  # `stlm run`: pretrained
    #   vs final model against the bots, then the report


CHOICES: dict[str, tuple[str, ...]] = {
    "run.device": ("auto", "cpu", "cuda", "mps"),
    "run.dtype": ("auto", "float32", "bfloat16"),
    "data.split": ("tail", "hash"),
    "data.game_style": ("compact", "verbose"),
    "optimizer.name": ("adamw", "muon"),
    "schedule.kind": LR_SCHEDULES,
    "logging.wandb": ("offline", "online", "disabled"),
}
POSITIVE = ("run.checkpoint_every", "run.keep_last", "data.seq_len", "data.batch_size",
            "optimizer.grad_accum", "schedule.steps", "logging.log_every", "logging.eval_every",
            "logging.val_batch_size", "data.shard_tokens")
NON_NEGATIVE = ("schedule.warmup_steps", "optimizer.lr", "optimizer.weight_decay", "optimizer.grad_clip",
                "data.max_documents", "data.max_bytes", "data.val_max_sequences", "data.prefetch",
                "logging.sample_bytes", "data.episodes", "run.cpu_threads", "evaluation.episodes",
                "evaluation.sample_games", "evaluation.temperature")


def _all_keys(node: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every declared key (for 'did you mean' suggestions)."""
    keys = []
    if OmegaConf.is_dict(node):
        for k in node.keys():
            path = f"{prefix}{k}"
            keys.append(path)
            child = node._get_node(k)
            if OmegaConf.is_dict(child) and not OmegaConf.is_missing(node, k):
                keys.extend(_all_keys(child, path + "."))
    return keys


def _one_line(err: OmegaConfBaseException, schema: Any, source: str) -> UserError:
    key = getattr(err, "full_key", None) or getattr(err, "key", None) or "?"
    if isinstance(err, ConfigKeyError):
        valid = _all_keys(schema)
        return UserError(f"unknown config key '{key}' in {source}{closest(key, valid)}")
    if isinstance(err, ValidationError):
        message = str(err).splitlines()[0]
        return UserError(f"bad value for config key '{key}' in {source}: {message}")
    return UserError(f"invalid config in {source}: {str(err).splitlines()[0]}")


def _numbers(node: Any, prefix: str = ""):
    """(dotted key, value) of every float in a config: dataclass fields, dict values (game and
    opponent mixes, objective options) and list items, nested."""
    if dataclasses.is_dataclass(node):
        items = ((f.name, getattr(node, f.name)) for f in dataclasses.fields(node))
    elif isinstance(node, dict):
        items = node.items()
    elif isinstance(node, (list, tuple)):
        items = ((str(i), v) for i, v in enumerate(node))
    else:
        if isinstance(node, float):
            yield prefix, node
        return
    for key, value in items:
        yield from _numbers(value, f"{prefix}.{key}" if prefix else str(key))


def _check(cfg: RootConfig) -> None:
    """Value checks OmegaConf's types cannot express: finite numbers, choices, ranges, stage names."""
    def get(dotted: str):
        section, key = dotted.split(".")
        return getattr(getattr(cfg, section), key)

    for key, value in _numbers(cfg):  # NaN passes every `<`/`>` range check below: refuse it first
        if not math.isfinite(value):
            raise UserError(f"config key '{key}' is {value}; it must be a finite number")

    for key, choices in CHOICES.items():
        value = get(key)
        if value not in choices:
            raise UserError(f"config key '{key}' must be one of {', '.join(choices)}, got '{value}'"
                            f"{closest(value, choices)}")
    for key in POSITIVE:
        if get(key) <= 0:
            raise UserError(f"config key '{key}' must be > 0, got {get(key)}")
    for key in NON_NEGATIVE:
        if get(key) < 0:
            raise UserError(f"config key '{key}' must be >= 0, got {get(key)}")
    if not 0.0 <= cfg.data.val_fraction < 1.0:
        raise UserError(f"config key 'data.val_fraction' must be in [0, 1), got {cfg.data.val_fraction}")
    check_unread(cfg.evaluation, evaluation_defaults(), SELFPLAY_ONLY, "evaluation", "selfplay.eval")
    if cfg.evaluation.mode and cfg.evaluation.mode not in ACTION_MODES:
        raise UserError(f"config key 'evaluation.mode' must be one of {', '.join(ACTION_MODES)} or empty, "
                        f"got '{cfg.evaluation.mode}'{closest(cfg.evaluation.mode, ACTION_MODES)}")
    if len(cfg.optimizer.betas) != 2:
        raise UserError(f"config key 'optimizer.betas' must be two numbers, got {cfg.optimizer.betas}")
    if cfg.data.seq_len < 2:
        raise UserError("config key 'data.seq_len' must be >= 2 (one input and one target)")
    if cfg.run.resume not in ("auto", "never") and not Path(cfg.run.resume).exists():
        raise UserError(f"run.resume: no checkpoint at '{cfg.run.resume}'; use auto, never or a checkpoint folder")
    from stlm_selfplay.objectives import build_objectives

    build_objectives(cfg.objectives)  # unknown names / options -> UserError naming the closest
    for stage in cfg.stages:
        if stage not in STAGES:
            raise UserError(f"unknown stage '{stage}' in 'stages'{closest(stage, STAGES)}; valid: {', '.join(STAGES)}")


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> RootConfig:
    """YAML file (optional) + dotlist overrides merged over the defaults -> a checked `RootConfig`."""
    schema = OmegaConf.structured(RootConfig)
    layers = []
    if path is not None:
        found = config_file(path)  # a file here, else a bundled config (works after a wheel install)
        if found is None:
            raise UserError(f"config file '{path}' not found; pass a YAML file such as configs/pretrain/shakespeare-tiny.yaml")
        path = found
        try:
            layer = OmegaConf.load(path)
        except Exception as err:
            raise as_user_error(err, str(path)) or UserError(
                f"cannot parse config file '{path}': {str(err).splitlines()[0]}") from None
        if not OmegaConf.is_dict(layer):  # e.g. a top-level YAML list
            raise UserError(f"config file '{path}' must be a mapping of sections (run:, model:, data:, ...), "
                            f"not a {'list' if OmegaConf.is_list(layer) else type(layer).__name__}")
        layers.append((layer, str(path)))
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override '{item}' must look like key=value (e.g. optimizer.lr=1e-3)")
    try:
        layers.append((OmegaConf.from_dotlist(list(overrides)), "overrides"))
    except OmegaConfBaseException as err:
        raise UserError(f"cannot parse overrides: {str(err).splitlines()[0]}") from None
    merged = schema
    for layer, source in layers:
        try:
            merged = OmegaConf.merge(merged, layer)
        except OmegaConfBaseException as err:
            raise _one_line(err, schema, source) from None
        except TypeError as err:  # e.g. `selfplay.stages.0.x=1`: a mapping given where the schema has a list
            raise UserError(f"invalid config in {source}: {err} (a mapping where a list is expected, or the other "
                            "way round); set lists whole, e.g. selfplay.stages=[{...}]") from None
    try:
        cfg: RootConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as err:
        raise _one_line(err, schema, "config") from None
    _check(cfg)
    return cfg


def build_model_config(section: ModelSection):
    """`model.preset` + `model.overrides` -> an `STLMConfig`; bad names/values are `UserError`s."""
    from stlm_selfplay.model.config import CONFIG_FIELDS, load_preset

    for key in section.overrides:
        if key not in CONFIG_FIELDS:
            raise UserError(f"unknown model field 'model.overrides.{key}'{closest(key, CONFIG_FIELDS)}")
    return load_preset(section.preset, **dict(section.overrides))
