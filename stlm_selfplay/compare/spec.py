"""The compare config: its file's schema (`CompareFile`), reading and checking it into a
`CompareSpec`, and each run's root config.

See `stlm_selfplay/compare/__init__.py` for what each budget means.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

from omegaconf import OmegaConf

from stlm_selfplay.bundled import config_file
from stlm_selfplay.compare.tracks import PRETRAINING, SELFPLAY, Pretraining, SelfPlay
from stlm_selfplay.config import RootConfig, load_config
from stlm_selfplay.errors import UserError, closest
from stlm_selfplay.options import check_choices, option
from stlm_selfplay.selfplay.config import eval_games

BUDGETS = ("steps", "bytes", "seconds", "flops")  # pretraining comparisons
SELFPLAY_BUDGETS = ("steps", "games", "seconds")  # self-play comparisons (steps = updates)
ALL_BUDGETS = tuple(dict.fromkeys(BUDGETS + SELFPLAY_BUDGETS))
LOCKED = ("run.seed", "run.name", "run.out_dir", "run.resume")
DATA_ALLOWED = ("data.batch_size", "data.prefetch")
SELFPLAY_LOCKED = ("selfplay.init_from", "selfplay.eval")  # and every key below them


@dataclass
class CompareFile:
    """The keys of a compare config file, as written (`load_compare` checks them into a `CompareSpec`)."""

    name: str = option("", "output folder <base's run.out_dir>/<name>/ (\"\" = the file's stem)")
    base: str = option("", "the root config every run starts from, relative to this file (required)")
    overrides: List[str] = option([], "key=value over the base, for every variant (the command line's come after)")
    variants: Dict[str, List[str]] = option({}, "variant name -> key=value overrides applied over the base "
                                            "(required, at least one)")
    seeds: List[int] = option([0], "run.seed of each repeat (also fixes the data order); distinct integers")
    budget: Dict[str, float] = option({}, "exactly one budget, e.g. {bytes: 2000000}: steps, bytes, seconds or flops "
                                      "(pretraining); steps, games or seconds (self-play) (required)")
    metric: str = option("", "self-play only: the plotted metric (\"\" = tictactoe/optimal_rate if evaluated, else "
                         "the first */random/win_rate, else the first metric)")
    direction: str = option("", "self-play only: max or min, which way `metric` is better (\"\" = min for "
                            "*exploitability, else max)", choices=("", "max", "min"))


KEYS = tuple(f.name for f in dataclasses.fields(CompareFile))
REQUIRED = ("base", "variants", "budget")


@dataclass
class CompareSpec:
    name: str
    base: Path  # root config file
    overrides: list[str]  # applied to every variant: the file's `overrides`, then the command line
    variants: dict[str, list[str]]
    seeds: list[int]
    budget: str  # steps | bytes | seconds | flops (pretraining); steps | games | seconds (self-play)
    amount: float
    out_dir: Path = field(default=Path("runs"))
    selfplay: bool = False  # a self-play comparison (the compare package docstring)
    metrics: list[str] = field(default_factory=list)  # self-play: the table's metrics (`metric_names`)
    metric: str = ""  # self-play: the plotted metric, one of `metrics`
    higher: bool = True  # self-play: a higher `metric` is better

    @property
    def folder(self) -> Path:
        return self.out_dir / self.name

    @property
    def kind(self) -> Pretraining | SelfPlay:
        return SELFPLAY if self.selfplay else PRETRAINING


def is_selfplay(cfg: RootConfig) -> bool:
    """A self-play comparison: the base names a model to improve, or only runs the self-play stage."""
    return bool(cfg.selfplay.init_from) or list(cfg.stages) == ["selfplay"]


def _check_override(variant: str, item: str, budget: str, selfplay: bool = False) -> None:
    key = item.split("=", 1)[0].strip()
    if "=" not in item:
        raise UserError(f"variant '{variant}': override '{item}' must look like key=value")
    limit = "selfplay.updates" if selfplay else "schedule.steps"
    if key in LOCKED or (key.startswith("data.") and key not in DATA_ALLOWED) or (key == limit and budget != "seconds"):
        raise UserError(f"variant '{variant}' may not override '{key}': compare sets it so that every run sees the "
                        "same data and budget")
    if selfplay and (key == "selfplay" or any(key == k or key.startswith(k + ".") for k in SELFPLAY_LOCKED)):
        raise UserError(f"variant '{variant}' may not override '{key}': every self-play run starts from the same "
                        "model and is evaluated alike; set it in the base or the compare config's `overrides`")


def _check_budget(path: Path, kind: str, selfplay: bool) -> None:
    valid = SELFPLAY_BUDGETS if selfplay else BUDGETS
    if kind not in valid:
        what = "self-play" if selfplay else "pretraining"
        raise UserError(f"budget '{kind}' in '{path}' does not apply to a {what} comparison; valid: {', '.join(valid)}")


def _choose_metric(path: Path, raw: dict, file: CompareFile, names: list[str], selfplay: bool) -> tuple[str, bool]:
    """(the plotted metric, higher is better) from the config's `metric` / `direction` (the compare package docstring)."""
    if not selfplay:
        for key in ("metric", "direction"):
            if key in raw:
                raise UserError(f"'{key}' in '{path}' is for self-play comparisons; a pretraining comparison "
                                "reports val bpb")
        return "", False
    if not names:
        raise UserError("the base's self-play evaluation logs no metric to compare; set selfplay.eval.episodes > 0 "
                        "and selfplay.eval.bots (or eval.optimal_rate / eval.exploitability)")
    default = next((n for n in names if n == "tictactoe/optimal_rate"), None) or \
        next((n for n in names if n.endswith("/random/win_rate")), names[0])
    metric = str(file.metric or default)
    if metric not in names:
        raise UserError(f"metric '{metric}' in '{path}' is not evaluated{closest(metric, names)}; valid: {', '.join(names)}")
    check_choices(file, label=f"'{{}}' in '{path}'")  # direction
    direction = file.direction or ("min" if metric.endswith("exploitability") else "max")
    return metric, direction == "max"


def load_compare(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> CompareSpec:
    """Read and check a compare config; every variant's root config is loaded once to check it."""
    found = config_file(path)  # a file here, else a bundled config (works after a wheel install)
    if found is None:
        raise UserError(f"compare config '{path}' not found; see configs/compare/")
    path = found
    try:  # OmegaConf's YAML loader, as for root configs (it reads 1e12 as a number)
        raw = OmegaConf.to_container(OmegaConf.load(path))
    except Exception as err:
        raise UserError(f"cannot parse compare config '{path}': {str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise UserError(f"compare config '{path}' must be a mapping with keys {', '.join(KEYS)}")
    for key in raw:
        if key not in KEYS:
            raise UserError(f"unknown key '{key}' in compare config '{path}'{closest(key, KEYS)}; valid: {', '.join(KEYS)}")
    for key in REQUIRED:
        if key not in raw:
            raise UserError(f"compare config '{path}' has no '{key}'")
    file = CompareFile(**raw)  # the defaults of the keys not given
    base = Path(str(file.base))
    base = base if base.is_absolute() else path.parent / base
    variants = file.variants
    if not isinstance(variants, dict) or not variants:
        raise UserError(f"'variants' in '{path}' must map names to lists of key=value overrides")
    variants = {str(k): list(v or []) for k, v in variants.items()}
    for name, items in variants.items():
        if not all(isinstance(i, str) for i in items) or not name.replace("-", "").replace("_", "").replace("+", "").isalnum():
            raise UserError(f"variant '{name}' in '{path}': names are letters, digits, - _ +; values lists of key=value strings")
    seeds = file.seeds
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds) \
            or len(set(seeds)) != len(seeds):
        raise UserError(f"'seeds' in '{path}' must be a list of distinct integers, got {seeds!r}")
    budget = file.budget
    if not isinstance(budget, dict) or len(budget) != 1:
        raise UserError(f"'budget' in '{path}' must have exactly one of {', '.join(ALL_BUDGETS)}, got {budget!r}")
    (kind, amount), = budget.items()
    if kind not in ALL_BUDGETS:
        raise UserError(f"unknown budget '{kind}' in '{path}'{closest(kind, ALL_BUDGETS)}; valid: {', '.join(ALL_BUDGETS)}")
    if not isinstance(amount, (int, float)) or isinstance(amount, bool) or amount <= 0:
        raise UserError(f"budget '{kind}' in '{path}' must be a number > 0, got {amount!r}")
    shared = file.overrides or []
    if not isinstance(shared, list) or not all(isinstance(i, str) for i in shared):
        raise UserError(f"'overrides' in '{path}' must be a list of key=value strings")
    overrides = shared + list(overrides)
    base_cfg = load_config(base, overrides)
    selfplay = is_selfplay(base_cfg)
    _check_budget(path, kind, selfplay)
    for name, items in variants.items():
        for item in items:
            _check_override(name, item, kind, selfplay)
    from stlm_selfplay.selfplay.evaluate import metric_names

    names = metric_names(eval_games(base_cfg.selfplay), base_cfg.selfplay.eval) if selfplay else []
    metric, higher = _choose_metric(path, raw, file, names, selfplay)
    spec = CompareSpec(str(file.name or path.stem), base, overrides, variants, seeds, kind, float(amount),
                       Path(base_cfg.run.out_dir), selfplay, names, metric, higher)
    for name in variants:
        spec.kind.check(spec, base_cfg, run_config(spec, name, seeds[0]), name)  # every variant before any training
    return spec


def run_config(spec: CompareSpec, variant: str, seed: int) -> RootConfig:
    """The root config of one run: base + command-line overrides + variant + seed, folder and budget."""
    fixed = [f"run.seed={seed}", f"run.out_dir={spec.folder / variant}", f"run.name=seed{seed}", "run.resume=auto"]
    cfg = load_config(spec.base, spec.overrides + spec.variants[variant] + fixed)
    spec.kind.set_budget(spec, cfg)
    return cfg
