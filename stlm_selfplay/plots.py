"""The report's PNG plots (matplotlib, Agg backend: no display needed), each written atomically.

    pretraining(rows, path)      train and val bits-per-byte vs bytes seen
    matches(rows, path)          win/draw/loss rate vs each bot, one panel per (game, bot, seat)
    series(rows, keys, path)     named metrics vs step (illegal-move rate, optimal-move rate, ...)

Each takes metrics.jsonl rows and returns the path written, or None when the rows hold nothing
to draw.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SEAT_RATE = re.compile(r"^(?P<game>[^/]+)/(?P<bot>[^/]+)/seat(?P<seat>\d+)/(?P<what>win|draw|loss)_rate$")
COLORS = {"win": "tab:green", "draw": "tab:gray", "loss": "tab:red"}


def save(fig, path: Path) -> Path:
    """Write the figure as PNG through a temp file renamed over `path`; closes the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=100, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return path


def pretraining(rows: list[dict], path: Path) -> Path | None:
    """Train bpb (`ce/bpb`) and val bpb against bytes seen (val rows: step x bytes per step)."""
    train = [r for r in rows if r.get("kind") == "train" and "ce/bpb" in r and "bytes_seen" in r]
    val = [r for r in rows if r.get("kind") == "val" and "bpb" in r]
    if not train and not val:
        return None
    per_step = train[-1]["bytes_seen"] / max(train[-1]["step"], 1) if train else 1.0
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train:
        ax.plot([r["bytes_seen"] for r in train], [r["ce/bpb"] for r in train], label="train", lw=1)
    if val:
        ax.plot([r["step"] * per_step for r in val], [r["bpb"] for r in val], "o-", label="val", ms=3)
    ax.set(xlabel="bytes seen" if train else "step", ylabel="bits per byte", title="Pretraining")
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, path)


def matches(rows: list[dict], path: Path) -> Path | None:
    """Win/draw/loss rate vs update, one panel per (game, bot) row and seat column."""
    series: dict[tuple[str, str, int], dict[str, list]] = {}
    for r in rows:
        for key, value in r.items():
            m = SEAT_RATE.match(key)
            if m:
                panel = series.setdefault((m["game"], m["bot"], int(m["seat"])), {})
                panel.setdefault(m["what"], []).append((r["step"], value))
    if not series:
        return None
    pairs = sorted({(g, b) for g, b, _ in series})
    seats = sorted({s for _, _, s in series})
    fig, axes = plt.subplots(len(pairs), len(seats), figsize=(4 * len(seats), 2.6 * len(pairs)), squeeze=False,
                             sharex=True, sharey=True)
    for i, (game, bot) in enumerate(pairs):
        for j, seat in enumerate(seats):
            ax = axes[i][j]
            for what, points in sorted(series.get((game, bot, seat), {}).items()):
                ax.plot(*zip(*points), "o-", ms=3, color=COLORS[what], label=what)
            ax.set_title(f"{game} vs {bot}, model in seat {seat}", fontsize=9)
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("update")
    return save(fig, path)


def series(rows: list[dict], keys: dict[str, str], path: Path, title: str, ylabel: str) -> Path | None:
    """Each metric in `keys` ({metric: label}) against step, on one axis."""
    lines = {label: [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
             for key, label in keys.items()}
    lines = {label: points for label, points in lines.items() if points}
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, points in lines.items():
        ax.plot(*zip(*points), "o-" if len(points) < 40 else "-", ms=3, label=label)
    ax.set(xlabel="update", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)
