"""compare.md and compare.png: tables (mean +- sample std over seeds) and curves vs budget."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stlm_selfplay.compare.spec import CompareSpec


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
