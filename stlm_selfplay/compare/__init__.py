"""Equal-budget comparisons: every variant x seed through the pretraining or self-play loop, then a
table and a plot.

A compare config (YAML; its keys are declared, each with its help, in `spec.CompareFile`):

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

import yaml

from stlm_selfplay.compare.report import markdown, plot
from stlm_selfplay.compare.spec import CompareSpec, is_selfplay, load_compare, run_config
from stlm_selfplay.compare.tracks import bytes_per_step, model_numbers
from stlm_selfplay.errors import UserError
from stlm_selfplay.io import write_text_atomic
from stlm_selfplay.runs import PROGRESS_FILE, RESULT_FILE, run_dir

__all__ = ["CompareSpec", "bytes_per_step", "compare", "is_selfplay", "load_compare", "model_numbers", "run_config",
           "run_one"]


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
