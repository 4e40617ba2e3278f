"""The two kinds of comparison run ("tracks"): how each sets a run's budget, trains it, measures
it and reports it. `PRETRAINING` drives `pretrain(cfg, max_steps)`, `SELFPLAY` drives
`selfplay(cfg, max_updates)`; the budget arithmetic is in the compare package's docstring.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from stlm_selfplay.compare.report import _header, _mean_std, _variant_overrides, exits_markdown, plot_curves, summarize
from stlm_selfplay.config import RootConfig, build_model_config
from stlm_selfplay.errors import UserError
from stlm_selfplay.runs import METRICS_FILE, run_dir
from stlm_selfplay.selfplay.config import eval_games

if TYPE_CHECKING:
    from stlm_selfplay.compare.spec import CompareSpec


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


def budget_used(spec: CompareSpec, cfg: RootConfig, step: int, seconds_per_step: float, fpb: float) -> float:
    """How much of the budget `step` optimizer steps spend, in the budget's unit."""
    if spec.budget == "steps":
        return float(step)
    if spec.budget == "seconds":
        return step * seconds_per_step
    used_bytes = step * bytes_per_step(cfg)
    return float(used_bytes) if spec.budget == "bytes" else used_bytes * fpb


def checkpoint_step(folder: Path) -> int:
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
        """schedule.steps from a steps / bytes / flops budget (the compare package docstring); seconds keep it."""
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

        start = checkpoint_step(run_dir(cfg))
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
            from stlm_selfplay.eval.early_exit import exit_numbers

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
        """selfplay.updates from a steps / games budget (the compare package docstring); seconds keep it."""
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

        start = checkpoint_step(run_dir(cfg))
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
        update, times = checkpoint_step(folder), update_times(folder)
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
