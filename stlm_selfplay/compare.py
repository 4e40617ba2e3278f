"""Equal-budget comparisons: every variant x seed through the pretraining loop, then a table and a plot.

A compare config (YAML):

    name: objectives-shakespeare        # output folder <base's run.out_dir>/<name>/ (default: file stem)
    base: ../pretrain/shakespeare-tiny.yaml   # root config, relative to this file
    overrides: [data.seq_len=64]         # optional: key=value over the base, for every variant
    variants:                            # name -> dotlist overrides applied over the base
      ce: []
      ce+z: ["objectives=[{name: ce}, {name: z_loss}]"]
    seeds: [0, 1]                        # run.seed of each repeat (also fixes the data order)
    budget: {bytes: 2000000}             # exactly one of steps | bytes | seconds | flops

Budgets, with bytes/step = batch_size x grad_accum x (seq_len - 1):
    steps:   schedule.steps = N
    bytes:   schedule.steps = ceil(N / bytes per step)
    flops:   schedule.steps = ceil(N / (flops_per_byte(model) x bytes per step))  (one shared FLOPs model)
    seconds: train in chunks of logging.eval_every steps until N seconds of step time are spent
             (at most schedule.steps; the learning-rate schedule still spans schedule.steps)

Every run sees the same data: variants may not override data.* (except data.batch_size and
data.prefetch) nor run.seed / run.name / run.out_dir / run.resume. Runs live in
`<name>/<variant>/seed<k>/`; a finished run leaves `result.json` there and is skipped when the
comparison is run again, an unfinished one resumes from its last checkpoint. The outputs:

    compare.md    per variant: parameters, final val bpb mean +- sample std over seeds, bytes/s,
                  FLOPs/byte; then one row per run
    compare.png   val bpb vs budget, one line per variant (mean over seeds), spread (min..max) shaded

Early-exit variants (an `early_exit` objective) also get, from each run's final model: val bpb
at every trunk exit, and greedy sampler bytes/s (one prompt at a time, val-text prompts) of the
full model, of the early exit after layer E = (L-1)//2, and of self-speculative decoding drafted
by that exit, with its acceptance rate. Their FLOPs/byte count the extra exits' decoder passes
(`early_exit.mean_extra_exits`), so a `flops` budget is equal compute.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from stlm_selfplay.config import RootConfig, build_model_config, load_config, write_text_atomic
from stlm_selfplay.errors import UserError, closest

BUDGETS = ("steps", "bytes", "seconds", "flops")
KEYS = ("name", "base", "overrides", "variants", "seeds", "budget")
RESULT = "result.json"
LOCKED = ("run.seed", "run.name", "run.out_dir", "run.resume")
DATA_ALLOWED = ("data.batch_size", "data.prefetch")


@dataclass
class CompareSpec:
    name: str
    base: Path  # root config file
    overrides: list[str]  # applied to every variant: the file's `overrides`, then the command line
    variants: dict[str, list[str]]
    seeds: list[int]
    budget: str  # steps | bytes | seconds | flops
    amount: float
    out_dir: Path = field(default=Path("runs"))

    @property
    def folder(self) -> Path:
        return self.out_dir / self.name


def _check_override(variant: str, item: str, budget: str) -> None:
    key = item.split("=", 1)[0].strip()
    if "=" not in item:
        raise UserError(f"variant '{variant}': override '{item}' must look like key=value")
    if key in LOCKED or (key.startswith("data.") and key not in DATA_ALLOWED) or \
            (key == "schedule.steps" and budget != "seconds"):
        raise UserError(f"variant '{variant}' may not override '{key}': compare sets it so that every run sees the "
                        "same data and budget")


def load_compare(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> CompareSpec:
    """Read and check a compare config; every variant's root config is loaded once to check it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"compare config '{path}' not found; see configs/compare/")
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
        raise UserError(f"'budget' in '{path}' must have exactly one of {', '.join(BUDGETS)}, got {budget!r}")
    (kind, amount), = budget.items()
    if kind not in BUDGETS:
        raise UserError(f"unknown budget '{kind}' in '{path}'{closest(kind, BUDGETS)}; valid: {', '.join(BUDGETS)}")
    if not isinstance(amount, (int, float)) or isinstance(amount, bool) or amount <= 0:
        raise UserError(f"budget '{kind}' in '{path}' must be a number > 0, got {amount!r}")
    shared = raw.get("overrides") or []
    if not isinstance(shared, list) or not all(isinstance(i, str) for i in shared):
        raise UserError(f"'overrides' in '{path}' must be a list of key=value strings")
    for name, items in variants.items():
        for item in items:
            _check_override(name, item, kind)
    overrides = shared + list(overrides)
    base_cfg = load_config(base, overrides)
    spec = CompareSpec(str(raw.get("name") or path.stem), base, overrides, variants, seeds, kind, float(amount),
                       Path(base_cfg.run.out_dir))
    for name in variants:
        run_config(spec, name, seeds[0])  # check every variant before any training
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

    import torch

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

    torch.manual_seed(0)
    stats = []
    sampler = {
        "full_bytes_per_s": bytes_per_s(lambda p: generate(model, [p], new_bytes, greedy=True)[0]),
        "exit_bytes_per_s": bytes_per_s(lambda p: generate(model, [p], new_bytes, greedy=True, exit_layer=exit_layer)[0]),
        "speculative_bytes_per_s": bytes_per_s(
            lambda p: stats.append(speculative_generate(model, [p], new_bytes, exit_layer=exit_layer)) or stats[-1][0][0]),
    }
    drafted, accepted = sum(s.drafted for _, s in stats), sum(s.accepted for _, s in stats)
    sampler["acceptance_rate"] = accepted / drafted if drafted else 0.0
    return {"val_bpb": {str(k): v for k, v in bpb.items()}, "exit_layer": exit_layer, **sampler}


def run_config(spec: CompareSpec, variant: str, seed: int) -> RootConfig:
    """The root config of one run: base + command-line overrides + variant + seed, folder and budget."""
    fixed = [f"run.seed={seed}", f"run.out_dir={spec.folder / variant}", f"run.name=seed{seed}", "run.resume=auto"]
    cfg = load_config(spec.base, spec.overrides + spec.variants[variant] + fixed)
    if spec.budget != "seconds":
        per_step = bytes_per_step(cfg)
        if spec.budget == "steps":
            steps = spec.amount
        elif spec.budget == "bytes":
            steps = spec.amount / per_step
        else:
            steps = spec.amount / (model_numbers(cfg)[1] * per_step)
        cfg.schedule.steps = max(1, math.ceil(steps - 1e-9))
    return cfg


def budget_used(spec: CompareSpec, cfg: RootConfig, step: int, seconds_per_step: float, fpb: float) -> float:
    """How much of the budget `step` optimizer steps spend, in the budget's unit."""
    if spec.budget == "steps":
        return float(step)
    if spec.budget == "seconds":
        return step * seconds_per_step
    used_bytes = step * bytes_per_step(cfg)
    return float(used_bytes) if spec.budget == "bytes" else used_bytes * fpb


def _train(cfg: RootConfig, max_steps: int | None) -> tuple[int, float]:
    """One pretrain call -> (steps done in it, seconds of step time)."""
    from stlm_selfplay.train.pretrain import pretrain
    from stlm_selfplay.runs import latest_checkpoint
    from stlm_selfplay.config import run_dir

    ckpt = latest_checkpoint(run_dir(cfg))
    start = int(ckpt.name.split("_")[1]) if ckpt is not None else 0
    summary = pretrain(cfg, max_steps=max_steps)
    if summary["stopped_by_signal"]:
        raise KeyboardInterrupt
    done = summary["step"] - start
    seconds = done * bytes_per_step(cfg) / summary["bytes_per_s"] if summary["bytes_per_s"] else 0.0
    return done, seconds


def run_one(spec: CompareSpec, variant: str, seed: int) -> dict:
    """Train one variant x seed to the budget (or find it finished); returns its result.json."""
    from stlm_selfplay.config import run_dir
    from stlm_selfplay.train.metrics import read_metrics

    cfg = run_config(spec, variant, seed)
    folder = run_dir(cfg)
    budget = {spec.budget: spec.amount}
    if (folder / RESULT).is_file():
        result = json.loads((folder / RESULT).read_text())
        if result.get("budget") != budget:
            raise UserError(f"'{folder}' holds a run with budget {result.get('budget')}, not {budget}; "
                            "delete the folder or give the comparison another name")
        return result
    progress_file = folder / "compare_progress.json"
    progress = json.loads(progress_file.read_text()) if progress_file.is_file() else {"seconds": 0.0, "steps": 0}
    if spec.budget == "seconds":
        chunk = cfg.logging.eval_every
        while progress["seconds"] < spec.amount and progress["steps"] < cfg.schedule.steps:
            done, seconds = _train(cfg, chunk)
            progress = {"seconds": progress["seconds"] + seconds, "steps": progress["steps"] + done}
            write_text_atomic(progress_file, json.dumps(progress))
    else:
        done, seconds = _train(cfg, None)
        progress = {"seconds": progress["seconds"] + seconds, "steps": progress["steps"] + done}
    val = read_metrics(folder / "metrics.jsonl", "val")
    if not val:
        raise UserError(f"run '{folder}' logged no val metrics; give the base config a val split (data.val_fraction > 0)")
    params, fpb = model_numbers(cfg)
    steps = val[-1]["step"]
    seconds_per_step = progress["seconds"] / max(progress["steps"], 1)
    result = {
        "variant": variant, "seed": seed, "budget": budget, "steps": steps, "params": params, "flops_per_byte": fpb,
        "val_bpb": val[-1]["bpb"], "val_loss": val[-1]["loss"],
        "bytes_per_s": bytes_per_step(cfg) / seconds_per_step if seconds_per_step else 0.0,
        "curve": [[budget_used(spec, cfg, r["step"], seconds_per_step, fpb), r["step"], r["bpb"]] for r in val],
    }
    if early_exit_specs(cfg):
        result["exits"] = exit_numbers(cfg, folder)
    write_text_atomic(folder / RESULT, json.dumps(result, indent=1))
    return result


def _mean_std(values: list[float]) -> tuple[float, float]:
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


def markdown(spec: CompareSpec, results: dict[str, list[dict]]) -> str:
    table = summarize(results)
    unit = {"steps": "steps", "bytes": "bytes", "seconds": "seconds of step time", "flops": "training FLOPs"}[spec.budget]
    lines = [f"# Comparison: {spec.name}", "",
             f"Base config `{spec.base}`; budget {spec.amount:g} {unit} per run; seeds {', '.join(map(str, spec.seeds))}.",
             "", f"Shared overrides: {' '.join(f'`{o}`' for o in spec.overrides) or 'none'}.", "",
             "| variant | params | val bpb (mean ± std) | bytes/s | FLOPs/byte | steps | seeds |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for variant, row in table.items():
        lines.append(f"| {variant} | {row['params']:,} | {row['val_bpb_mean']:.4f} ± {row['val_bpb_std']:.4f} | "
                     f"{row['bytes_per_s']:,.0f} | {row['flops_per_byte']:.3g} | {row['steps']} | {row['seeds']} |")
    lines += exits_markdown(results)
    lines += ["", "Overrides per variant:", ""]
    lines += [f"- {v}: {' '.join(f'`{o}`' for o in spec.variants[v]) or '(base)'}" for v in table]
    lines += ["", "## Runs", "", "| variant | seed | val bpb | val loss | steps | bytes/s |", "|---|---:|---:|---:|---:|---:|"]
    for variant, runs in results.items():
        for r in runs:
            lines.append(f"| {variant} | {r['seed']} | {r['val_bpb']:.4f} | {r['val_loss']:.4f} | {r['steps']} | "
                         f"{r['bytes_per_s']:,.0f} |")
    lines += ["", "![val bpb vs budget](compare.png)", ""]
    return "\n".join(lines)


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


def plot(spec: CompareSpec, results: dict[str, list[dict]], path: Path) -> Path:
    """Val bpb vs budget: mean over seeds per variant, seed spread (min..max) shaded."""
    from stlm_selfplay.plots import plt, save

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for variant, runs in results.items():
        common = set.intersection(*({step for _, step, _ in r["curve"]} for r in runs))
        points = sorted(common)
        if not points:
            continue
        by_step = [[next((x, y) for x, s, y in r["curve"] if s == step) for r in runs] for step in points]
        xs = [statistics.fmean(x for x, _ in pts) for pts in by_step]
        ys = [[y for _, y in pts] for pts in by_step]
        line, = ax.plot(xs, [statistics.fmean(v) for v in ys], "o-", ms=3, label=variant)
        ax.fill_between(xs, [min(v) for v in ys], [max(v) for v in ys], color=line.get_color(), alpha=0.2)
    unit = {"steps": "optimizer steps", "bytes": "bytes", "seconds": "seconds (step time)", "flops": "training FLOPs"}
    ax.set(xlabel=unit[spec.budget], ylabel="val bits per byte", title=f"{spec.name}: val bpb vs budget")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)


def compare(spec: CompareSpec) -> dict[str, list[dict]]:
    """Run (or resume) every variant x seed, then write compare.md and compare.png."""
    spec.folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(spec.folder / "compare.yaml", yaml.safe_dump(
        {"name": spec.name, "base": str(spec.base), "overrides": spec.overrides, "variants": spec.variants,
         "seeds": spec.seeds, "budget": {spec.budget: spec.amount}}, sort_keys=False))
    results: dict[str, list[dict]] = {}
    for variant in spec.variants:
        for seed in spec.seeds:
            print(f"compare {spec.name}: {variant}, seed {seed}")
            results.setdefault(variant, []).append(run_one(spec, variant, seed))
    write_text_atomic(spec.folder / "compare.md", markdown(spec, results))
    plot(spec, results, spec.folder / "compare.png")
    print(f"wrote {spec.folder / 'compare.md'} and {spec.folder / 'compare.png'}")
    return results
