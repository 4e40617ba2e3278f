"""Equal-budget comparisons: every variant x seed through the pretraining or self-play loop, then a
table and a plot.

A compare config (YAML):

    name: objectives-shakespeare        # output folder <base's run.out_dir>/<name>/ (default: file stem)
    base: ../pretrain/shakespeare-tiny.yaml   # root config, relative to this file
    overrides: [data.seq_len=64]         # optional: key=value over the base, for every variant
    variants:                            # name -> dotlist overrides applied over the base
      ce: []
      ce+z: ["objectives=[{name: ce}, {name: z_loss}]"]
    seeds: [0, 1]                        # run.seed of each repeat (also fixes the data order)
    budget: {bytes: 2000000}             # exactly one budget (below)
    metric: tictactoe/optimal_rate       # self-play only, optional: the plotted metric (default below)
    direction: max                       # self-play only, optional: max | min, which way is better
                                         # (default: min for *exploitability, else max)

Two kinds of comparison, told apart by the base root config (after the overrides): a base whose
`selfplay.init_from` names a model, or whose `stages` is [selfplay], is a self-play comparison
(`selfplay(cfg, max_updates)` per run, as `stlm selfplay` runs it); any other base a pretraining
comparison (`pretrain(cfg, max_steps)` per run).

Pretraining budgets, with bytes/step = batch_size x grad_accum x (seq_len - 1):
    steps:   schedule.steps = N
    bytes:   schedule.steps = ceil(N / bytes per step)
    flops:   schedule.steps = ceil(N / (flops_per_byte(model) x bytes per step))  (one shared FLOPs model)
    seconds: train in chunks of logging.eval_every steps until N seconds of step time are spent
             (at most schedule.steps; the learning-rate schedule still spans schedule.steps)

Self-play budgets (a self-play update plays selfplay.games_per_update games, then optimizes):
    steps:   selfplay.updates = N
    games:   selfplay.updates = ceil(N / games_per_update)   (fair when variants change games_per_update)
    seconds: train in chunks of selfplay.eval.every updates (each chunk ends where the loop evaluates)
             until N seconds of update time (the train records' update_s: rollouts + optimization,
             evaluation excluded) are spent; at most selfplay.updates, which the lr schedule spans

Every run sees the same data: variants may not override data.* (except data.batch_size and
data.prefetch) nor run.seed / run.name / run.out_dir / run.resume. In a self-play comparison
every run also starts from the same model and is evaluated alike: variants may not override
selfplay.init_from, selfplay.eval.* (nor the whole `selfplay` section), and every variant must
evaluate on the same games (set selfplay.eval.games in the base when variants change the games).
The budget's own key (schedule.steps / selfplay.updates) is the budget's, except under `seconds`.
Runs live in `<name>/<variant>/seed<k>/`; a finished run leaves `result.json` there and is
skipped when the comparison is run again, an unfinished one resumes from its last checkpoint.

Pretraining outputs:

    compare.md    per variant: parameters, final val bpb mean +- sample std over seeds, bytes/s,
                  FLOPs/byte; then one row per run
    compare.png   val bpb vs budget, one line per variant (mean over seeds), spread (min..max) shaded

Early-exit variants (an `early_exit` objective) also get, from each run's final model: val bpb
at every trunk exit, and greedy sampler bytes/s (one prompt at a time, val-text prompts) of the
full model, of the early exit after layer E = (L-1)//2, and of self-speculative decoding drafted
by that exit, with its acceptance rate. Their FLOPs/byte count the extra exits' decoder passes
(`early_exit.mean_extra_exits`), so a `flops` budget is equal compute.

Self-play outputs, from the "eval" records of each run's metrics.jsonl (`selfplay.eval`: the
same games against the same bots at every evaluation). The metrics, per evaluated game:
<game>/optimal_rate (tictactoe, eval.optimal_rate), <game>/exploitability and avg_exploitability
(kuhn_poker, eval.exploitability; chips/hand, lower is better), <game>/<bot>/win_rate against
each of eval.bots, <game>/<bot>/non_loss_rate = 1 - loss_rate against each bot but random (the
informative number against optimal / minimax / nash play), <game>/elo (eval.ratings; random = 0).
The default `metric` is tictactoe/optimal_rate if evaluated, else the first win rate vs random,
else the first metric.

    compare.md    per variant: parameters, each metric of the final evaluation mean +- sample std
                  over seeds, games/s (games / update time), updates; the best variant by
                  `metric`; then one row per run
    compare.png   `metric` vs budget (updates, games or seconds of update time), one line per
                  variant (mean over seeds), spread (min..max) shaded
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from stlm_selfplay.bundled import config_file
from stlm_selfplay.config import RootConfig, build_model_config, load_config
from stlm_selfplay.errors import UserError, closest
from stlm_selfplay.io import write_text_atomic
from stlm_selfplay.runs import METRICS_FILE, PROGRESS_FILE, RESULT_FILE, run_dir

BUDGETS = ("steps", "bytes", "seconds", "flops")  # pretraining comparisons
SELFPLAY_BUDGETS = ("steps", "games", "seconds")  # self-play comparisons (steps = updates)
ALL_BUDGETS = tuple(dict.fromkeys(BUDGETS + SELFPLAY_BUDGETS))
KEYS = ("name", "base", "overrides", "variants", "seeds", "budget", "metric", "direction")
LOCKED = ("run.seed", "run.name", "run.out_dir", "run.resume")
DATA_ALLOWED = ("data.batch_size", "data.prefetch")
SELFPLAY_LOCKED = ("selfplay.init_from", "selfplay.eval")  # and every key below them


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
    selfplay: bool = False  # a self-play comparison (module docstring)
    metrics: list[str] = field(default_factory=list)  # self-play: the table's metrics (`expected_metrics`)
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


def _choose_metric(path: Path, raw: dict, names: list[str], selfplay: bool) -> tuple[str, bool]:
    """(the plotted metric, higher is better) from the config's `metric` / `direction` (module docstring)."""
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
    metric = str(raw.get("metric") or default)
    if metric not in names:
        raise UserError(f"metric '{metric}' in '{path}' is not evaluated{closest(metric, names)}; valid: {', '.join(names)}")
    direction = raw.get("direction", "min" if metric.endswith("exploitability") else "max")
    if direction not in ("max", "min"):
        raise UserError(f"'direction' in '{path}' must be max or min, got {direction!r}")
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
    for key in ("base", "variants", "budget"):
        if key not in raw:
            raise UserError(f"compare config '{path}' has no '{key}'")
    base = Path(str(raw["base"]))
    base = base if base.is_absolute() else path.parent / base
    variants = raw["variants"]
    if not isinstance(variants, dict) or not variants:
        raise UserError(f"'variants' in '{path}' must map names to lists of key=value overrides")
    variants = {str(k): list(v or []) for k, v in variants.items()}
    for name, items in variants.items():
        if not all(isinstance(i, str) for i in items) or not name.replace("-", "").replace("_", "").replace("+", "").isalnum():
            raise UserError(f"variant '{name}' in '{path}': names are letters, digits, - _ +; values lists of key=value strings")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds) \
            or len(set(seeds)) != len(seeds):
        raise UserError(f"'seeds' in '{path}' must be a list of distinct integers, got {seeds!r}")
    budget = raw["budget"]
    if not isinstance(budget, dict) or len(budget) != 1:
        raise UserError(f"'budget' in '{path}' must have exactly one of {', '.join(ALL_BUDGETS)}, got {budget!r}")
    (kind, amount), = budget.items()
    if kind not in ALL_BUDGETS:
        raise UserError(f"unknown budget '{kind}' in '{path}'{closest(kind, ALL_BUDGETS)}; valid: {', '.join(ALL_BUDGETS)}")
    if not isinstance(amount, (int, float)) or isinstance(amount, bool) or amount <= 0:
        raise UserError(f"budget '{kind}' in '{path}' must be a number > 0, got {amount!r}")
    shared = raw.get("overrides") or []
    if not isinstance(shared, list) or not all(isinstance(i, str) for i in shared):
        raise UserError(f"'overrides' in '{path}' must be a list of key=value strings")
    overrides = shared + list(overrides)
    base_cfg = load_config(base, overrides)
    selfplay = is_selfplay(base_cfg)
    _check_budget(path, kind, selfplay)
    for name, items in variants.items():
        for item in items:
            _check_override(name, item, kind, selfplay)
    names = expected_metrics(base_cfg) if selfplay else []
    metric, higher = _choose_metric(path, raw, names, selfplay)
    spec = CompareSpec(str(raw.get("name") or path.stem), base, overrides, variants, seeds, kind, float(amount),
                       Path(base_cfg.run.out_dir), selfplay, names, metric, higher)
    for name in variants:
        spec.kind.check(spec, base_cfg, run_config(spec, name, seeds[0]), name)  # every variant before any training
    return spec


def bytes_per_step(cfg: RootConfig) -> int:
    return cfg.data.batch_size * cfg.optimizer.grad_accum * (cfg.data.seq_len - 1)


def early_exit_specs(cfg: RootConfig) -> list[dict]:
    return [o for o in cfg.objectives if o.get("name") == "early_exit"]


def model_numbers(cfg: RootConfig) -> tuple[int, float]:
    """(parameters, training FLOPs per byte) of the config's model and objectives' extra exits."""
    from stlm_selfplay.model.flops import flops_per_byte, param_table
    from stlm_selfplay.objectives.early_exit import mean_extra_exits

    model_config = build_model_config(cfg.model)
    extra = sum(mean_extra_exits(o.get("curriculum", "none"), model_config.n_layers) for o in early_exit_specs(cfg))
    return int(param_table(model_config)["total"]), float(flops_per_byte(model_config, extra))


def exit_numbers(cfg: RootConfig, folder: Path, new_bytes: int = 128, n_prompts: int = 4) -> dict:
    """Per-exit val bpb and early-exit / self-speculative sampler speed of a finished run."""
    import time

    from stlm_selfplay.data.cache import cache_folder
    from stlm_selfplay.data.loader import val_sequences
    from stlm_selfplay.model import generate, speculative_generate
    from stlm_selfplay.model.tokenizer import PAD_ID
    from stlm_selfplay.runs import load_model
    from stlm_selfplay.train.evaluate import evaluate_bpb

    model = load_model(folder)
    val_ids = val_sequences(cache_folder(cfg.data), cfg.data.seq_len, cfg.data.val_max_sequences)
    n_layers = model.config.n_layers
    bpb = {layer: evaluate_bpb(model, val_ids, cfg.logging.val_batch_size, exit_layer=layer)["bpb"]
           for layer in range(n_layers)}
    exit_layer = (n_layers - 1) // 2
    new_bytes = min(new_bytes, model.config.max_seq_len // 2)
    prompts = [bytes(int(t) for t in row[: model.config.max_seq_len // 4] if t < PAD_ID) for row in val_ids[:n_prompts]]

    def bytes_per_s(run) -> float:
        started, total = time.perf_counter(), 0
        for prompt in prompts:
            total += len(run(prompt).text)
        return total / (time.perf_counter() - started)

    stats = []

    def speculative(prompt: bytes):
        completions, run_stats = speculative_generate(model, [prompt], new_bytes, exit_layer=exit_layer)
        stats.append(run_stats)
        return completions[0]

    sampler = {
        "full_bytes_per_s": bytes_per_s(lambda p: generate(model, [p], new_bytes, greedy=True)[0]),
        "exit_bytes_per_s": bytes_per_s(lambda p: generate(model, [p], new_bytes, greedy=True, exit_layer=exit_layer)[0]),
        "speculative_bytes_per_s": bytes_per_s(speculative),
    }
    drafted, accepted = sum(s.drafted for s in stats), sum(s.accepted for s in stats)
    sampler["acceptance_rate"] = accepted / drafted if drafted else 0.0
    return {"val_bpb": {str(k): v for k, v in bpb.items()}, "exit_layer": exit_layer, **sampler}


def run_config(spec: CompareSpec, variant: str, seed: int) -> RootConfig:
    """The root config of one run: base + command-line overrides + variant + seed, folder and budget."""
    fixed = [f"run.seed={seed}", f"run.out_dir={spec.folder / variant}", f"run.name=seed{seed}", "run.resume=auto"]
    cfg = load_config(spec.base, spec.overrides + spec.variants[variant] + fixed)
    spec.kind.set_budget(spec, cfg)
    return cfg


def budget_used(spec: CompareSpec, cfg: RootConfig, step: int, seconds_per_step: float, fpb: float) -> float:
    """How much of the budget `step` optimizer steps spend, in the budget's unit."""
    if spec.budget == "steps":
        return float(step)
    if spec.budget == "seconds":
        return step * seconds_per_step
    used_bytes = step * bytes_per_step(cfg)
    return float(used_bytes) if spec.budget == "bytes" else used_bytes * fpb


def _checkpoint_step(folder: Path) -> int:
    """The step (update) of the run folder's latest checkpoint, 0 when none."""
    from stlm_selfplay.runs import latest_checkpoint
    from stlm_selfplay.train.checkpoint import step_of

    ckpt = latest_checkpoint(folder)
    return step_of(ckpt) if ckpt is not None else 0


class Pretraining:
    """How a pretraining comparison sets budgets, trains, measures and reports its runs."""

    step_name = "steps"
    units = {"steps": "steps", "bytes": "bytes", "seconds": "seconds of step time", "flops": "training FLOPs"}
    axes = {"steps": "optimizer steps", "bytes": "bytes", "seconds": "seconds (step time)", "flops": "training FLOPs"}

    def check(self, spec: CompareSpec, base_cfg: RootConfig, cfg: RootConfig, variant: str) -> None:
        """Checks beyond load_config's (none: a pretraining config is checked when loaded)."""

    def set_budget(self, spec: CompareSpec, cfg: RootConfig) -> None:
        """schedule.steps from a steps / bytes / flops budget (module docstring); seconds keep it."""
        if spec.budget == "seconds":
            return
        per_step = bytes_per_step(cfg)
        if spec.budget == "steps":
            steps = spec.amount
        elif spec.budget == "bytes":
            steps = spec.amount / per_step
        else:
            steps = spec.amount / (model_numbers(cfg)[1] * per_step)
        cfg.schedule.steps = max(1, math.ceil(steps - 1e-9))

    def limit(self, cfg: RootConfig) -> int:
        return cfg.schedule.steps

    def chunk(self, cfg: RootConfig) -> int:
        return cfg.logging.eval_every

    def train(self, cfg: RootConfig, max_steps: int | None) -> tuple[int, float]:
        """One pretrain call -> (steps done in it, seconds of step time)."""
        from stlm_selfplay.train.pretrain import pretrain

        start = _checkpoint_step(run_dir(cfg))
        summary = pretrain(cfg, max_steps=max_steps)
        if summary["stopped_by_signal"]:
            raise KeyboardInterrupt
        done = summary["step"] - start
        seconds = done * bytes_per_step(cfg) / summary["bytes_per_s"] if summary["bytes_per_s"] else 0.0
        return done, seconds

    def result(self, spec: CompareSpec, cfg: RootConfig, folder: Path, progress: dict) -> dict:
        """A finished run's numbers: final val bpb, speed, FLOPs/byte, the val curve (and exits)."""
        from stlm_selfplay.train.metrics import read_metrics

        val = read_metrics(folder / METRICS_FILE, "val")
        if not val:
            raise UserError(f"run '{folder}' logged no val metrics; give the base config a val split (data.val_fraction > 0)")
        params, fpb = model_numbers(cfg)
        seconds_per_step = progress["seconds"] / max(progress["steps"], 1)
        result = {
            "steps": val[-1]["step"], "params": params, "flops_per_byte": fpb,
            "val_bpb": val[-1]["bpb"], "val_loss": val[-1]["loss"],
            "bytes_per_s": bytes_per_step(cfg) / seconds_per_step if seconds_per_step else 0.0,
            "curve": [[budget_used(spec, cfg, r["step"], seconds_per_step, fpb), r["step"], r["bpb"]] for r in val],
        }
        if early_exit_specs(cfg):
            result["exits"] = exit_numbers(cfg, folder)
        return result

    def markdown(self, spec: CompareSpec, results: dict[str, list[dict]]) -> str:
        table = summarize(results)
        lines = _header(spec, self.units[spec.budget]) + [
            "| variant | params | val bpb (mean ± std) | bytes/s | FLOPs/byte | steps | seeds |",
            "|---|---:|---:|---:|---:|---:|---:|"]
        for variant, row in table.items():
            lines.append(f"| {variant} | {row['params']:,} | {row['val_bpb_mean']:.4f} ± {row['val_bpb_std']:.4f} | "
                         f"{row['bytes_per_s']:,.0f} | {row['flops_per_byte']:.3g} | {row['steps']} | {row['seeds']} |")
        lines += exits_markdown(results)
        lines += _variant_overrides(spec, results)
        lines += ["", "## Runs", "", "| variant | seed | val bpb | val loss | steps | bytes/s |", "|---|---:|---:|---:|---:|---:|"]
        for variant, runs in results.items():
            for r in runs:
                lines.append(f"| {variant} | {r['seed']} | {r['val_bpb']:.4f} | {r['val_loss']:.4f} | {r['steps']} | "
                             f"{r['bytes_per_s']:,.0f} |")
        lines += ["", "![val bpb vs budget](compare.png)", ""]
        return "\n".join(lines)

    def plot(self, spec: CompareSpec, results: dict[str, list[dict]], path: Path) -> Path:
        """Val bpb vs budget."""
        return plot_curves(results, path, lambda point: point[2], self.axes[spec.budget], "val bits per byte",
                           f"{spec.name}: val bpb vs budget")


def eval_games(sp) -> list[str]:
    """The games a self-play run evaluates on: selfplay.eval.games, else every stage's games (as the loop)."""
    return list(sp.eval.games) or list(dict.fromkeys(g for s in sp.stages for g in s.games))


def expected_metrics(cfg: RootConfig) -> list[str]:
    """The self-play metrics of the config's evaluation, in table order (module docstring); the
    same rules as `run_evaluation`: matches only against the eval.bots a game has."""
    from stlm_selfplay.envs import list_players

    ev = cfg.selfplay.eval
    names: list[str] = []
    for game in eval_games(cfg.selfplay):
        bots = [b for b in ev.bots if b.partition(":")[0] in list_players(game)] if ev.episodes else []
        if game == "tictactoe" and ev.optimal_rate:
            names.append(f"{game}/optimal_rate")
        if game == "kuhn_poker" and ev.exploitability:
            names += [f"{game}/exploitability", f"{game}/avg_exploitability"]
        names += [f"{game}/{b}/win_rate" for b in bots]
        names += [f"{game}/{b}/non_loss_rate" for b in bots if b != "random"]
        if ev.ratings and bots:
            names.append(f"{game}/elo")
    return names


def eval_values(record: dict, names: list[str], folder: Path) -> dict[str, float]:
    """{metric: value} of one "eval" record; non_loss_rate = 1 - loss_rate."""
    out = {}
    for name in names:
        key = name.removesuffix("non_loss_rate") + "loss_rate" if name.endswith("/non_loss_rate") else name
        if key not in record:
            raise UserError(f"run '{folder}' logged no '{key}' at update {record['step']}; delete the run folder and "
                            "run the comparison again")
        out[name] = 1.0 - record[key] if key != name else float(record[key])
    return out


def update_times(folder: Path) -> dict[int, float]:
    """{update: seconds} of a self-play run's train records (update_s: rollouts + optimization)."""
    from stlm_selfplay.train.metrics import read_metrics

    return {r["step"]: r["update_s"] for r in read_metrics(folder / METRICS_FILE, "train")}


class SelfPlay:
    """How a self-play comparison sets budgets, trains, measures and reports its runs."""

    step_name = "updates"
    units = {"steps": "self-play updates", "games": "games", "seconds": "seconds of update time"}
    axes = {"steps": "self-play updates", "games": "games played", "seconds": "seconds (update time)"}

    def check(self, spec: CompareSpec, base_cfg: RootConfig, cfg: RootConfig, variant: str) -> None:
        """What `stlm selfplay` would reject, the same evaluation games as the base, and a model to start from."""
        from stlm_selfplay.runs import resolve_model_folder
        from stlm_selfplay.selfplay.config import check_selfplay

        check_selfplay(cfg.selfplay)
        if eval_games(cfg.selfplay) != eval_games(base_cfg.selfplay):
            raise UserError(f"variant '{variant}' evaluates on {eval_games(cfg.selfplay)}, the base on "
                            f"{eval_games(base_cfg.selfplay)}; set selfplay.eval.games in the base")
        if spec.budget == "seconds" and not cfg.selfplay.eval.every:
            raise UserError("budget 'seconds' trains in chunks of selfplay.eval.every updates; "
                            "set selfplay.eval.every > 0")
        if cfg.selfplay.init_from:
            resolve_model_folder(cfg.selfplay.init_from)

    def set_budget(self, spec: CompareSpec, cfg: RootConfig) -> None:
        """selfplay.updates from a steps / games budget (module docstring); seconds keep it."""
        per_update = {"steps": 1, "games": cfg.selfplay.games_per_update}.get(spec.budget)
        if per_update is not None:
            cfg.selfplay.updates = max(1, math.ceil(spec.amount / per_update - 1e-9))

    def limit(self, cfg: RootConfig) -> int:
        return cfg.selfplay.updates

    def chunk(self, cfg: RootConfig) -> int:
        return cfg.selfplay.eval.every

    def train(self, cfg: RootConfig, max_updates: int | None) -> tuple[int, float]:
        """One selfplay call -> (updates done in it, seconds of update time). A chunk of k updates
        ends at the next multiple of k, where the loop evaluates (also after a resume mid-chunk)."""
        from stlm_selfplay.selfplay.loop import selfplay

        start = _checkpoint_step(run_dir(cfg))
        summary = selfplay(cfg, max_updates - start % max_updates if max_updates else None)
        if summary["stopped_by_signal"]:
            raise KeyboardInterrupt
        times = update_times(run_dir(cfg))
        return summary["update"] - start, sum(t for u, t in times.items() if start < u <= summary["update"])

    def used(self, spec: CompareSpec, cfg: RootConfig, update: int, times: dict[int, float]) -> float:
        """How much of the budget the first `update` updates spend, in the budget's unit."""
        if spec.budget == "steps":
            return float(update)
        if spec.budget == "games":
            return float(update * cfg.selfplay.games_per_update)
        return sum(t for u, t in times.items() if u <= update)

    def result(self, spec: CompareSpec, cfg: RootConfig, folder: Path, progress: dict) -> dict:
        """A finished run's numbers: the final evaluation's metrics, games/s, the metric curve."""
        from stlm_selfplay.runs import load_model
        from stlm_selfplay.train.metrics import read_metrics

        evals = list({r["step"]: r for r in read_metrics(folder / METRICS_FILE, "eval")}.values())
        update, times = _checkpoint_step(folder), update_times(folder)
        if not evals or evals[-1]["step"] != update:
            raise UserError(f"run '{folder}' has no evaluation at its last update {update}; delete the folder and "
                            "run the comparison again")
        seconds = sum(t for u, t in times.items() if u <= update)  # update time of the final model's updates
        games = update * cfg.selfplay.games_per_update
        return {"updates": update, "games": games, "params": load_model(folder).num_parameters(),
                "update_seconds": seconds, "games_per_s": games / seconds if seconds else 0.0,
                "metrics": eval_values(evals[-1], spec.metrics, folder),
                "curve": [[self.used(spec, cfg, r["step"], times), r["step"], eval_values(r, spec.metrics, folder)]
                          for r in evals]}

    def markdown(self, spec: CompareSpec, results: dict[str, list[dict]]) -> str:
        names = spec.metrics
        better = "higher" if spec.higher else "lower"
        means = {v: _mean_std([r["metrics"][spec.metric] for r in runs])[0] for v, runs in results.items()}
        lines = _header(spec, self.units[spec.budget]) + [
            f"Final evaluation of each run, mean ± sample std over seeds; compare.png plots `{spec.metric}` "
            f"({better} is better).", "",
            "| variant | params | " + " | ".join(names) + " | games/s | updates | seeds |",
            "|---|---:|" + "---:|" * (len(names) + 3)]
        for variant, runs in results.items():
            cells = ["{:.4f} ± {:.4f}".format(*_mean_std([r["metrics"][n] for r in runs])) for n in names]
            speed = statistics.fmean(r["games_per_s"] for r in runs)
            lines.append(f"| {variant} | {runs[0]['params']:,} | " + " | ".join(cells) +
                         f" | {speed:,.1f} | {runs[0]['updates']} | {len(runs)} |")
        best = (max if spec.higher else min)(means, key=means.get)
        lines += ["", f"Best by `{spec.metric}` (mean over seeds): {best}."]
        lines += _variant_overrides(spec, results)
        lines += ["", "## Runs", "", "| variant | seed | " + " | ".join(names) + " | updates | games/s |",
                  "|---|---:|" + "---:|" * (len(names) + 2)]
        for variant, runs in results.items():
            for r in runs:
                lines.append(f"| {variant} | {r['seed']} | " + " | ".join(f"{r['metrics'][n]:.4f}" for n in names) +
                             f" | {r['updates']} | {r['games_per_s']:,.1f} |")
        lines += ["", f"![{spec.metric} vs budget](compare.png)", ""]
        return "\n".join(lines)

    def plot(self, spec: CompareSpec, results: dict[str, list[dict]], path: Path) -> Path:
        """`metric` vs budget."""
        better = "higher" if spec.higher else "lower"
        return plot_curves(results, path, lambda point: point[2][spec.metric], self.axes[spec.budget],
                           f"{spec.metric} ({better} is better)", f"{spec.name}: {spec.metric} vs budget")


PRETRAINING, SELFPLAY = Pretraining(), SelfPlay()


def run_one(spec: CompareSpec, variant: str, seed: int) -> dict:
    """Train one variant x seed to the budget (or find it finished); returns its result.json."""
    kind = spec.kind
    cfg = run_config(spec, variant, seed)
    folder = run_dir(cfg)
    budget = {spec.budget: spec.amount}
    if (folder / RESULT_FILE).is_file():
        result = json.loads((folder / RESULT_FILE).read_text())
        if result.get("budget") != budget:
            raise UserError(f"'{folder}' holds a run with budget {result.get('budget')}, not {budget}; "
                            "delete the folder or give the comparison another name")
        return result
    progress_file = folder / PROGRESS_FILE
    progress = json.loads(progress_file.read_text()) if progress_file.is_file() else {"seconds": 0.0, "steps": 0}
    if spec.budget == "seconds":
        chunk = kind.chunk(cfg)
        while progress["seconds"] < spec.amount and progress["steps"] < kind.limit(cfg):
            done, seconds = kind.train(cfg, chunk)
            progress = {"seconds": progress["seconds"] + seconds, "steps": progress["steps"] + done}
            write_text_atomic(progress_file, json.dumps(progress))
    else:
        done, seconds = kind.train(cfg, None)
        progress = {"seconds": progress["seconds"] + seconds, "steps": progress["steps"] + done}
    result = {"variant": variant, "seed": seed, "budget": budget, **kind.result(spec, cfg, folder, progress)}
    write_text_atomic(folder / RESULT_FILE, json.dumps(result, indent=1))
    return result


def _mean_std(values: list[float]) -> tuple[float, float]:
    """(mean, sample std) = (sum x / n, sqrt(sum (x - mean)^2 / (n - 1))); std 0 for one value."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(results: dict[str, list[dict]]) -> dict[str, dict]:
    """Per variant: params, FLOPs/byte, val bpb mean and sample std over seeds, mean bytes/s."""
    table = {}
    for variant, runs in results.items():
        mean, std = _mean_std([r["val_bpb"] for r in runs])
        table[variant] = {"params": runs[0]["params"], "flops_per_byte": runs[0]["flops_per_byte"],
                          "val_bpb_mean": mean, "val_bpb_std": std, "seeds": len(runs),
                          "bytes_per_s": statistics.fmean(r["bytes_per_s"] for r in runs),
                          "steps": runs[0]["steps"]}
    return table


def _header(spec: CompareSpec, unit: str) -> list[str]:
    """compare.md's title, budget, seeds and shared overrides."""
    return [f"# Comparison: {spec.name}", "",
            f"Base config `{spec.base}`; budget {spec.amount:g} {unit} per run; seeds {', '.join(map(str, spec.seeds))}.",
            "", f"Shared overrides: {' '.join(f'`{o}`' for o in spec.overrides) or 'none'}.", ""]


def _variant_overrides(spec: CompareSpec, results: dict[str, list[dict]]) -> list[str]:
    return ["", "Overrides per variant:", ""] + [
        f"- {v}: {' '.join(f'`{o}`' for o in spec.variants[v]) or '(base)'}" for v in results]


def markdown(spec: CompareSpec, results: dict[str, list[dict]]) -> str:
    """compare.md of a pretraining or self-play comparison (module docstring)."""
    return spec.kind.markdown(spec, results)


def exits_markdown(results: dict[str, list[dict]]) -> list[str]:
    """For early-exit variants: val bpb at each exit and sampler speeds, means over seeds."""
    rows = {v: [r["exits"] for r in runs] for v, runs in results.items() if all("exits" in r for r in runs)}
    if not rows:
        return []
    lines = ["", "## Early exits", "",
             "Val bpb at each trunk exit (mean over seeds); greedy sampler bytes/s, one prompt at a time, of the "
             "full model, of the exit after layer E, and of self-speculative decoding drafted by it.", "",
             "| variant | val bpb per exit (layer 0 ..) | E | full B/s | exit E B/s | self-spec B/s | acceptance |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for variant, exits in rows.items():
        layers = sorted(exits[0]["val_bpb"], key=int)
        per_exit = " / ".join(f"{statistics.fmean(e['val_bpb'][l] for e in exits):.3f}" for l in layers)
        mean = {k: statistics.fmean(e[k] for e in exits) for k in
                ("full_bytes_per_s", "exit_bytes_per_s", "speculative_bytes_per_s", "acceptance_rate")}
        lines.append(f"| {variant} | {per_exit} | {exits[0]['exit_layer']} | {mean['full_bytes_per_s']:,.0f} | "
                     f"{mean['exit_bytes_per_s']:,.0f} | {mean['speculative_bytes_per_s']:,.0f} | "
                     f"{mean['acceptance_rate']:.3f} |")
    return lines


def plot_curves(results: dict[str, list[dict]], path: Path, value, xlabel: str, ylabel: str, title: str) -> Path:
    """value(curve point) vs budget: mean over seeds per variant, seed spread (min..max) shaded.
    A curve point is [budget used, step, y]; only steps every seed of a variant logged are drawn."""
    from stlm_selfplay.plots import plt, save

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for variant, runs in results.items():
        common = set.intersection(*({point[1] for point in r["curve"]} for r in runs))
        points = sorted(common)
        if not points:
            continue
        by_step = [[next((p[0], value(p)) for p in r["curve"] if p[1] == step) for r in runs] for step in points]
        xs = [statistics.fmean(x for x, _ in pts) for pts in by_step]
        ys = [[y for _, y in pts] for pts in by_step]
        line, = ax.plot(xs, [statistics.fmean(v) for v in ys], "o-", ms=3, label=variant)
        ax.fill_between(xs, [min(v) for v in ys], [max(v) for v in ys], color=line.get_color(), alpha=0.2)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)


def plot(spec: CompareSpec, results: dict[str, list[dict]], path: Path) -> Path:
    """compare.png: val bpb (pretraining) or `metric` (self-play) vs budget."""
    return spec.kind.plot(spec, results, path)


def compare(spec: CompareSpec) -> dict[str, list[dict]]:
    """Run (or resume) every variant x seed, then write compare.md and compare.png."""
    spec.folder.mkdir(parents=True, exist_ok=True)
    saved = {"name": spec.name, "base": str(spec.base), "overrides": spec.overrides, "variants": spec.variants,
             "seeds": spec.seeds, "budget": {spec.budget: spec.amount}}
    if spec.selfplay:
        saved.update(metric=spec.metric, direction="max" if spec.higher else "min")
    write_text_atomic(spec.folder / "compare.yaml", yaml.safe_dump(saved, sort_keys=False))
    results: dict[str, list[dict]] = {}
    for variant in spec.variants:
        for seed in spec.seeds:
            print(f"compare {spec.name}: {variant}, seed {seed}")
            results.setdefault(variant, []).append(run_one(spec, variant, seed))
    write_text_atomic(spec.folder / "compare.md", markdown(spec, results))
    plot(spec, results, spec.folder / "compare.png")
    print(f"wrote {spec.folder / 'compare.md'} and {spec.folder / 'compare.png'}")
    return results
