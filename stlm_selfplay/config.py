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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from stlm_selfplay.bundled import config_file
from stlm_selfplay.errors import UserError, as_user_error, closest
from stlm_selfplay.options import check_choices, option
from stlm_selfplay.runs import STAGES
from stlm_selfplay.selfplay.config import SELFPLAY_ONLY, EvalConfig, SelfPlayConfig, check_unread, evaluation_defaults
from stlm_selfplay.train.optim import LR_SCHEDULES


@dataclass
class RunConfig:
    name: str = option("pretrain", "run folder name: outputs go to <out_dir>/<name>/")
    out_dir: str = option("runs", "parent folder of run folders")
    seed: int = option(0, "seeds model init, data order, dropout and samples; same seed -> same run")
    device: str = option("auto", "where to run: auto (cuda > mps > cpu), cpu, cuda or mps",
                         choices=("auto", "cpu", "cuda", "mps"))
    dtype: str = option("auto", "auto (bf16 autocast on CUDA, fp32 elsewhere), float32 or bfloat16; pretraining only "
                        "(self-play runs in fp32)", choices=("auto", "float32", "bfloat16"))
    compile: bool = option(False, "wrap the model in torch.compile (faster on GPU, slow to start); pretraining only")
    cpu_threads: int = option(0, "torch intra-op CPU threads while training (0 = torch's default); 1 is much faster "
                              "on a machine shared with other jobs")
    resume: str = option("auto", "auto: continue from the run's latest complete checkpoint if any; never: start fresh "
                         "(refused if the run folder has checkpoints); <path>: continue from this checkpoint folder")
    checkpoint_every: int = option(500, "optimizer steps between checkpoints (one is also saved at the end)")
    keep_last: int = option(3, "number of most recent checkpoints kept (the best by val loss is kept too)")


@dataclass
class ModelSection:
    preset: str = option("tiny", "a preset name (micro, tiny, stlm-10m, ...: configs/model/) or a model YAML path")
    overrides: Dict[str, Any] = option({}, "STLMConfig fields replacing the preset's, e.g. {n_layers: 2}")


@dataclass
class DataConfig:
    source: str = option("text", "registered source: text (local files), hf (a hub dataset) or games (transcripts "
                         "of the envs' scripted players); stlm_selfplay/data/sources.py")
    # -- text: local files
    path: str = option("", "file, glob or folder of .txt / .jsonl / .parquet files (source: text)")
    text_field: str = option("text", "column holding the text in .jsonl / .parquet / hf rows")
    # -- hf: datasets.load_dataset(hf_name, hf_config, split=hf_split, streaming=streaming)
    hf_name: str = option("", "hub dataset name, e.g. roneneldan/TinyStories (source: hf)")
    hf_config: str = option("", "dataset config name, \"\" for the default (source: hf)")
    hf_split: str = option("train", "split to read (source: hf)")
    streaming: bool = option(True, "stream instead of downloading the whole dataset (source: hf)")
    # -- games: transcripts from the envs' scripted players
    games: Dict[str, float] = option({}, "game name -> sampling weight (source: games)")
    players: List[str] = option(["random", "random"], "scripted players, one per seat (source: games)")
    episodes: int = option(1000, "number of transcripts to generate (source: games)")
    game_style: str = option("compact", "transcript style: compact (tens of bytes a game) or verbose (source: games)",
                             choices=("compact", "verbose"))
    seed: int = option(0, "seed of generated corpora (games); separate from run.seed so the cache is shared")
    # -- all sources
    max_documents: int = option(0, "read at most this many documents (0 = all)")
    max_bytes: int = option(0, "stop after this many bytes of text (0 = all; cap streaming corpora)")
    split: str = option("tail", "train/val split: tail (the last val_fraction of the byte stream) or hash (a document "
                        "goes to val when its hash falls under val_fraction)", choices=("tail", "hash"))
    val_fraction: float = option(0.05, "fraction of bytes (tail) or documents (hash) held out for val, in [0, 1)")
    val_max_sequences: int = option(256, "cap on the fixed val set, in sequences (0 = whole val split)")
    seq_len: int = option(256, "ids per training sequence (consecutive sequences overlap by one id)")
    batch_size: int = option(16, "sequences per micro-batch on each rank")
    shift_epochs: bool = option(False, "each epoch after the first reads every train sequence from one random offset "
                                "in [0, seq_len - 1) further on (a function of run.seed and the epoch): repeated "
                                "epochs see new windows and new patch boundaries (data/loader.py)")
    cache_dir: str = option("", "preprocessed shard cache; \"\" -> $STLM_DATA_CACHE or ~/.cache/stlm_selfplay/data")
    shard_tokens: int = option(268435456, "ids per cache shard file (2^28 = 512 MiB of uint16)")
    prefetch: int = option(4, "batches prepared ahead by a background thread (0 = load in the loop)")


@dataclass
class OptimizerConfig:
    name: str = option("adamw", "adamw, or muon (Muon for 2-D trunk weights, AdamW for everything else)",
                       choices=("adamw", "muon"))
    lr: float = option(3e-3, "peak AdamW learning rate (the schedule scales it)")
    betas: List[float] = option([0.9, 0.95], "AdamW (beta1, beta2)")
    eps: float = option(1e-8, "AdamW epsilon")
    weight_decay: float = option(0.1, "decoupled weight decay; never applied to norms, biases, embeddings")
    muon_lr: float = option(0.02, "peak Muon learning rate (name: muon)")
    muon_momentum: float = option(0.95, "Muon momentum (name: muon)")
    muon_scope: str = option("trunk", "name: muon: which 2-D linear weights Muon updates: trunk (the patch-level "
                             "blocks), or all (the local encoder and decoder too); embeddings and heads stay AdamW",
                             choices=("trunk", "all"))
    grad_clip: float = option(1.0, "clip the global gradient norm to this (0 disables)")
    grad_accum: int = option(1, "micro-batches accumulated per optimizer step")


@dataclass
class ScheduleConfig:
    steps: int = option(1000, "optimizer steps in the run")
    kind: str = option("cosine", "learning-rate shape after warmup: cosine, linear, wsd (warmup-stable-decay) or "
                       "constant", choices=LR_SCHEDULES)
    warmup_steps: int = option(100, "linear warmup from 0 to the peak learning rate")
    min_lr_ratio: float = option(0.1, "final learning rate as a fraction of the peak")
    decay_fraction: float = option(0.2, "wsd only: fraction of steps spent in the final linear decay")


@dataclass
class LoggingConfig:
    wandb: str = option("offline", "offline (local files, no network), online or disabled; the WANDB_MODE "
                        "environment variable, when set, wins", choices=("offline", "online", "disabled"))
    project: str = option("stlm-selfplay", "wandb project")
    log_every: int = option(10, "optimizer steps between train-metric lines in metrics.jsonl")
    eval_every: int = option(200, "optimizer steps between val evaluations (and at the end)")
    val_batch_size: int = option(32, "sequences per val forward pass")
    sample_bytes: int = option(128, "bytes sampled from the model at each eval (0 = no sample)")
    sample_prompt: str = option("", "prompt for that sample (\"\" = start of a document)")
    sample_temperature: float = option(0.8, "sampling temperature for that sample")
    progress: bool = option(True, "tqdm progress bar (rank 0 only)")


@dataclass
class RootConfig:
    run: RunConfig = option(help="identity, seed, device, resume", factory=RunConfig)
    model: ModelSection = option(help="the model: a preset and field overrides", factory=ModelSection)
    data: DataConfig = option(help="where text comes from and how it is packed", factory=DataConfig)
    optimizer: OptimizerConfig = option(help="AdamW / Muon, clipping, accumulation", factory=OptimizerConfig)
    schedule: ScheduleConfig = option(help="steps and learning-rate shape", factory=ScheduleConfig)
    objectives: List[Dict[str, Any]] = option([{"name": "ce"}], "weighted sum of registered objectives, e.g. "
                                              "[{name: ce}, {name: z_loss, weight: 1e-4}]")
    logging: LoggingConfig = option(help="metrics, wandb, eval, samples", factory=LoggingConfig)
    stages: List[str] = option(["pretrain"], f"what `stlm run` runs, in order: {', '.join(STAGES)}")
    selfplay: SelfPlayConfig = option(help="`stlm selfplay` and a staged run's self-play stage",
                                      factory=SelfPlayConfig)
    evaluation: EvalConfig = option(help="`stlm run`: the pretrained vs the final model against the bots, then the "
                                    "report", factory=evaluation_defaults)


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


def _paths(node: Any, prefix: str = ""):
    """Every dotted path of a user's config layer, list items as `[i]` (`selfplay.stages[0].search`)."""
    if OmegaConf.is_dict(node):
        for k in node.keys():
            path = f"{prefix}.{k}" if prefix else str(k)
            yield path
            yield from _paths(node._get_node(k), path)
    elif OmegaConf.is_list(node):
        for i in range(len(node)):
            yield from _paths(node._get_node(i), f"{prefix}[{i}]")


def _unknown_key(err: ConfigKeyError, schema: Any, layer: Any, source: str) -> UserError:
    """'unknown config key' naming the key's whole path in the layer: OmegaConf reports a key inside a
    list item (a stage's `search.simulatons`) relative to that item, so it is looked up in the layer
    and the suggestion is the closest field of the dataclass the key was set on."""
    key = getattr(err, "full_key", None) or getattr(err, "key", None) or "?"
    inside = [p for p in _paths(layer) if p.endswith("." + key) and "[" in p] if layer is not None else []
    owner = getattr(err, "object_type", None)
    if not inside or not dataclasses.is_dataclass(owner):
        return UserError(f"unknown config key '{key}' in {source}{closest(key, _all_keys(schema))}")
    path = inside[0]
    parent = path[:-len(str(getattr(err, "key", key)))]
    return UserError(f"unknown config key '{path}' in {source}"
                     f"{closest(path, [parent + f.name for f in dataclasses.fields(owner)])}")


def _one_line(err: OmegaConfBaseException, schema: Any, source: str, layer: Any = None) -> UserError:
    key = getattr(err, "full_key", None) or getattr(err, "key", None) or "?"
    if isinstance(err, ConfigKeyError):
        return _unknown_key(err, schema, layer, source)
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

    check_choices(cfg, skip=("selfplay",))  # the selfplay section is checked when self-play runs (check_selfplay)
    for key in POSITIVE:
        if get(key) <= 0:
            raise UserError(f"config key '{key}' must be > 0, got {get(key)}")
    for key in NON_NEGATIVE:
        if get(key) < 0:
            raise UserError(f"config key '{key}' must be >= 0, got {get(key)}")
    if not 0.0 <= cfg.data.val_fraction < 1.0:
        raise UserError(f"config key 'data.val_fraction' must be in [0, 1), got {cfg.data.val_fraction}")
    check_unread(cfg.evaluation, evaluation_defaults(), SELFPLAY_ONLY, "evaluation", "selfplay.eval")
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
            raise _one_line(err, schema, source, layer) from None
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
