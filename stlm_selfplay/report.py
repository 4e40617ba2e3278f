"""A run's report: `runs/<name>/report.md` and its PNG plots under `runs/<name>/plots/`, built only
from the files in the run folder (`stlm report RUN` rebuilds it; `stlm run` writes it at the end).

Sections (each only when the run has what it shows):

    Pretraining          train/val bits-per-byte vs bytes seen
    Self-play            W/D/L vs each bot by seat, illegal-move rate, optimal-move rate and Kuhn
                         exploitability vs updates
    Ratings              the latest Bradley-Terry (Elo) table per game, with intervals
    Before and after     pretrained vs final model against each bot by seat, Wilson 95%
                         intervals, and the significance tests of `before_after`
    Sample games         a few games of the final model, as the model sees them
    Language-model evaluation   `eval_lm.md`, when `stlm eval-lm` wrote one
    Reproduce            the command that started the run, and its resolved config

Works for a staged run (`pretrain/`, `selfplay/` sub-runs) and for a single pretrain or
self-play run folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from stlm_selfplay import plots
from stlm_selfplay.before_after import ALPHA
from stlm_selfplay.envs.evaluation import wilson_interval
from stlm_selfplay.errors import UserError
from stlm_selfplay.io import write_text_atomic
from stlm_selfplay.runs import (COMMAND_FILE, CONFIG_FILE, EVAL_LM_MD, EVALUATION_FILE, METRICS_FILE, PLOTS_DIR,
                                RATINGS_FILE, REPORT_FILE, STAGES, stage_dir)
from stlm_selfplay.train.metrics import read_metrics
SECTIONS = ("Pretraining", "Self-play", "Ratings", "Before and after", "Sample games", "Reproduce")


def stage_folders(run_dir: Path) -> dict[str, Path]:
    """{stage: folder holding its metrics.jsonl}: the sub-runs of a staged run, or the run itself
    (a pretrain run logs val rows; a self-play run logs games digests)."""
    run_dir = Path(run_dir)
    found = {s: stage_dir(run_dir, s) for s in STAGES if (stage_dir(run_dir, s) / METRICS_FILE).is_file()}
    if found:
        return found
    rows = read_metrics(run_dir / METRICS_FILE)
    if any("games_digest" in r for r in rows):
        return {"selfplay": run_dir}
    if any(r.get("kind") == "val" for r in rows):
        return {"pretrain": run_dir}
    return {}


def write_report(run_dir: Path) -> Path:
    """Build the plots and report.md of `run_dir` (atomically); returns the report's path."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise UserError(f"'{run_dir}' is not a run folder (no config.yaml); pass the folder `stlm run` or "
                        "`stlm pretrain` wrote")
    text = "\n".join(_sections(run_dir))
    path = run_dir / REPORT_FILE
    write_text_atomic(path, text)
    return path


def _sections(run_dir: Path):
    stages = stage_folders(run_dir)
    evaluation = _read_json(run_dir / EVALUATION_FILE)
    plot_dir = run_dir / PLOTS_DIR
    yield f"# Run report: {run_dir.name}\n"
    yield f"Stages: {', '.join(stages) or 'none yet'}. " + _verdict(evaluation) + "\n"
    if "pretrain" in stages:
        yield from _pretraining(read_metrics(stages["pretrain"] / METRICS_FILE), plot_dir)
    if "selfplay" in stages:
        yield from _selfplay(read_metrics(stages["selfplay"] / METRICS_FILE), plot_dir)
        yield from _ratings(stages["selfplay"] / RATINGS_FILE)
    if evaluation:
        yield from _before_after(evaluation)
        yield from _samples(evaluation)
    for folder in [run_dir, *stages.values()]:
        if (folder / EVAL_LM_MD).is_file():
            yield f"## Language-model evaluation ({folder.relative_to(run_dir.parent)})\n"
            yield (folder / EVAL_LM_MD).read_text()
    yield from _reproduce(run_dir)


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _image(plot_dir: Path, path: Path | None, alt: str):
    if path is not None:
        yield f"![{alt}]({plot_dir.name}/{path.name})\n"


def _verdict(evaluation: dict | None) -> str:
    tests = (evaluation or {}).get("tests") or []
    targets = (evaluation or {}).get("targets") or []
    lines = []
    if tests:
        passed = sum(t["passed"] for t in tests)
        lines.append(f"Final vs pretrained model: {passed} of {len(tests)} significance tests passed (alpha = {ALPHA}).")
    if targets:
        lines.append(f"Targets: {sum(t['met'] for t in targets)} of {len(targets)} met by the final model.")
    return " ".join(lines)


def _reproduce(run_dir: Path):
    yield "## Reproduce\n"
    command = (run_dir / COMMAND_FILE).read_text().strip() if (run_dir / COMMAND_FILE).is_file() else ""
    if command:
        yield f"Started with:\n\n```bash\n{command}\n```\n"
    yield ("The resolved config below repeats the run exactly (same seed, same games); into a new "
           "folder with:\n\n```bash\n"
           f"stlm run {_config_path(run_dir)} run.name={run_dir.name}-again\n```\n")
    yield "```yaml\n" + (run_dir / CONFIG_FILE).read_text().rstrip() + "\n```\n"


def _config_path(run_dir: Path) -> Path:
    """The run's config.yaml as the run named it (`<run.out_dir>/<run.name>/config.yaml`), so the
    report does not depend on how its folder was named to `stlm report`."""
    from omegaconf import OmegaConf

    run = OmegaConf.load(run_dir / CONFIG_FILE).get("run") or {}
    if run.get("out_dir") and run.get("name"):
        return Path(run["out_dir"]) / run["name"] / CONFIG_FILE
    return run_dir / CONFIG_FILE


def _pretraining(rows: list[dict], plot_dir: Path):
    yield "## Pretraining\n"
    val = [r for r in rows if r.get("kind") == "val"]
    train = [r for r in rows if r.get("kind") == "train"]
    if train:
        last = train[-1]
        yield (f"{last['step']} steps, {last.get('bytes_seen', 0):,} bytes seen; final train bpb "
               f"{last.get('ce/bpb', float('nan')):.3f}" + (f", val bpb {val[-1]['bpb']:.3f}" if val else "") + ".\n")
    yield from _image(plot_dir, plots.pretraining(rows, plot_dir / "pretraining.png"), "pretraining curve")


def _selfplay(rows: list[dict], plot_dir: Path):
    yield "## Self-play\n"
    train = [r for r in rows if r.get("kind") == "train"]
    evals = [r for r in rows if r.get("kind") == "eval"]
    if train:
        yield f"{train[-1]['step']} updates, {sum(r.get('games', 0) for r in train):,.0f} games played.\n"
    yield from _image(plot_dir, plots.matches(evals, plot_dir / "selfplay_matches.png"), "win/draw/loss by seat")
    yield from _image(plot_dir, plots.series(train, {"illegal_rate": "illegal-move rate"}, plot_dir / "illegal_rate.png",
                                             "Illegal moves (learner turns)", "rate"), "illegal-move rate")
    yield from _image(plot_dir, plots.series(evals, {"tictactoe/optimal_rate": "optimal-move rate (policy mass)",
                                                     "tictactoe/optimal_greedy": "optimal-move rate (greedy)"},
                                             plot_dir / "optimal_rate.png", "Tic-tac-toe optimal moves", "rate"),
                      "optimal-move rate")
    yield from _image(plot_dir, plots.series(evals, {"kuhn_poker/exploitability": "current policy",
                                                     "kuhn_poker/avg_exploitability": "average policy"},
                                             plot_dir / "exploitability.png", "Kuhn poker exploitability", "chips / hand"),
                      "Kuhn exploitability")


def _ratings(path: Path):
    from stlm_selfplay.selfplay.ratings import read_rows

    rows = read_rows(path)
    if not rows:
        return
    yield "## Ratings\n"
    for game in dict.fromkeys(r["game"] for r in rows):
        last = max(r["step"] for r in rows if r["game"] == game)
        table = [r for r in rows if r["game"] == game and r["step"] == last]
        yield f"{game}, after update {last} (Bradley-Terry, Elo scale, {table[0]['anchor']} = 0, 95% bootstrap interval):\n"
        yield "| player | Elo | interval | games |\n|---|---:|---|---:|"
        yield "\n".join(f"| {r['player']} | {r['elo']:.0f} | [{r['lo']:.0f}, {r['hi']:.0f}] | {r['games']} |" for r in table)
        yield ""


def _rate_cell(metrics: dict, prefix: str, n: int) -> str:
    """`win 0.580 [0.531, 0.627] / draw 0.100 / loss 0.320` for one seat's record."""
    parts = []
    for what in ("win", "draw", "loss"):
        rate = metrics.get(f"{prefix}{what}_rate")
        if rate is None:
            return "n/a"
        lo, hi = wilson_interval(round(rate * n), n)
        parts.append(f"{rate:.3f} [{lo:.2f}, {hi:.2f}]")
    return " / ".join(parts)


def _before_after(evaluation: dict):
    settings, metrics = evaluation["settings"], evaluation["metrics"]
    labels = list(metrics)
    n = settings["episodes"]
    yield "## Before and after\n"
    yield (f"{' vs '.join(labels)} model, {n} games per seat against each bot, {settings['mode']} moves at "
           f"temperature {settings['temperature']}, the same seeded games for both; "
           "win / draw / loss rate with Wilson 95% intervals.\n")
    for label, folder in settings["models"].items():
        yield f"- {label}: `{folder}`"
    yield ""
    seats = sorted({int(k.split("/seat")[1].split("/")[0]) for m in metrics.values() for k in m if "/seat" in k})
    if n and seats:
        yield "| game | opponent | model seat | " + " | ".join(f"{lab}: win / draw / loss" for lab in labels) + " |"
        yield "|---|---|---|" + "---|" * len(labels)
        for game in settings["games"]:
            for bot in settings["bots"]:
                for seat in seats:
                    prefix = f"{game}/{bot}/seat{seat}/"
                    if any(f"{prefix}win_rate" in m for m in metrics.values()):
                        yield f"| {game} | {bot} | {seat} | " + " | ".join(_rate_cell(metrics[lab], prefix, n) for lab in labels) + " |"
        yield ""
    exact = [("tictactoe/optimal_rate", "tic-tac-toe optimal-move rate (policy mass, 4,520 positions)"),
             ("tictactoe/optimal_greedy", "tic-tac-toe optimal-move rate (greedy move)"),
             ("kuhn_poker/exploitability", "Kuhn poker exploitability (chips/hand, lower is better)")]
    present = [(k, name) for k, name in exact if any(k in m for m in metrics.values())]
    if present:
        yield "| measure | " + " | ".join(labels) + " |\n|---|" + "---:|" * len(labels)
        yield "\n".join(f"| {name} | " + " | ".join(f"{metrics[lab].get(k, float('nan')):.4f}" for lab in labels) + " |"
                        for k, name in present)
        yield ""
    if evaluation.get("tests"):
        yield (f"Significance (one-sided pooled two-proportion z-test, alpha = {ALPHA}): *rise* passes when the "
               "final model is significantly higher; *no worse* passes unless it is significantly lower.\n")
        yield "| metric | test | n | pretrained | final | z | p | result |\n|---|---|---:|---:|---:|---:|---:|---|"
        yield "\n".join(f"| {t['metric']} | {t['kind']} | {t['n']} | {t['pretrained']:.3f} | {t['final']:.3f} | "
                        f"{t['z']:.2f} | {t['p']:.2g} | {'pass' if t['passed'] else 'FAIL'} |" for t in evaluation["tests"])
        yield ""
    if evaluation.get("targets"):
        yield (f"Targets (`evaluation.at_most` / `at_least`): *met* when the final model's value is within the "
               f"bound; a match rate also gets a one-sided z-test that its true rate is within it (p < {ALPHA}: "
               "beyond chance at these game counts).\n")
        yield "| metric | target | final | met | n | z | p |\n|---|---|---:|---|---:|---:|---:|"
        yield "\n".join(f"| {t['metric']} | {t['kind']} {t['bound']:g} | "
                        + ("-" if t["final"] is None else f"{t['final']:.4f}") + f" | {'yes' if t['met'] else 'NO'} | "
                        + ("- | - | - |" if t["n"] is None else f"{t['n']} | {t['z']:.2f} | {t['p']:.2g} |")
                        for t in evaluation["targets"])
        yield ""


def _samples(evaluation: dict):
    samples = evaluation.get("samples") or []
    if not samples:
        return
    label = list(evaluation["metrics"])[-1]
    yield f"## Sample games\n\nThe {label} model against each bot, as the model reads the games (one `prompt[move]` line per turn, then the outcome).\n"
    for s in samples:
        verb = {"win": "wins", "draw": "draws", "loss": "loses"}[s["outcome"]]
        yield f"{s['game']}, the model as {s.get('side', '?')} (seat {s['seat']}) vs {s['bot']}: the model {verb}\n"
        yield "```text\n" + s["transcript"].rstrip() + "\n```\n"
