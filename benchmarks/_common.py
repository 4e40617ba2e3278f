"""Shared benchmark helpers: timing, a JSON line plus a readable table, and a `--quick` flag.

Every script in `benchmarks/` builds its rows as dicts, then calls `report(name, rows, ...)`,
which prints one JSON object (machine-readable, first line `{"benchmark": ...}`) followed by a
plain-text table. Ratios against a baseline measured in the same run go in `ratios`.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from typing import Any, Callable, Sequence


def base_parser(description: str) -> argparse.ArgumentParser:
    """An argparse parser with the flags every benchmark shares (`--quick`, `--json-only`)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, <= 10 s on CPU (a smoke run)")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    return parser


def time_it(fn: Callable[[], Any], *, repeats: int = 3, warmup: int = 1, sync: Callable[[], None] | None = None) -> float:
    """Best wall-clock seconds of `repeats` calls of `fn` after `warmup` untimed calls.

    The minimum (not the mean) is reported: on a shared machine it is the least noisy estimate
    of what the code costs. `sync` (e.g. `torch.cuda.synchronize`) runs before each clock read.
    """
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        if sync:
            sync()
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        best = min(best, time.perf_counter() - start)
    return best


def machine() -> str:
    """A short description of where the numbers were measured."""
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
        return f"CPU x{torch.get_num_threads()} threads, {platform.machine()} (torch {torch.__version__})"
    except ImportError:  # pragma: no cover - torch is a dependency
        return platform.machine()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows of dicts as an aligned plain-text table (columns in first-seen order)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    cells = [[_fmt(row.get(c, "")) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def report(
    name: str,
    rows: Sequence[dict[str, Any]],
    *,
    ratios: dict[str, float] | None = None,
    goals: dict[str, tuple[float, float]] | None = None,
    args: argparse.Namespace | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Print the JSON line and the table; return the JSON payload.

    `goals` maps a ratio name to (measured, target): each is reported as met when measured >= target.
    """
    payload: dict[str, Any] = {
        "benchmark": name,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "quick": bool(getattr(args, "quick", False)),
        "rows": list(rows),
        "ratios": dict(ratios or {}),
        "goals": {k: {"measured": m, "target": t, "met": m >= t} for k, (m, t) in (goals or {}).items()},
    }
    if extra:
        payload.update(extra)
    print(json.dumps(payload))
    if not getattr(args, "json_only", False):
        print()
        print(table(rows))
        for key, value in payload["ratios"].items():
            print(f"{key}: {_fmt(value)}")
        for key, goal in payload["goals"].items():
            status = "met" if goal["met"] else "MISSED"
            print(f"goal {key}: {_fmt(goal['measured'])} vs >= {_fmt(goal['target'])} -> {status}")
    return payload
