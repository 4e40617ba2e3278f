"""Metrics: `runs/<name>/metrics.jsonl` always, wandb when enabled, a tqdm bar, a summary table.

Each line of metrics.jsonl is one JSON object `{"step": N, "kind": "train"|"eval"|..., ...}`.
On resume from step N, lines after step N (written by the interrupted run after its last
checkpoint) are dropped first, so the file reads as if the run had never stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from stlm_selfplay.io import write_text_atomic
from stlm_selfplay.runs import METRICS_FILE


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSONL file. A cut-off last line (a kill during a write) is skipped with a
    one-line warning on stderr; a bad line elsewhere is an error (the file is damaged)."""
    import sys

    from stlm_selfplay.errors import UserError

    lines = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                print(f"warning: skipping the cut-off last line of {path}", file=sys.stderr)
                break
            raise UserError(f"'{path}' line {i + 1} is not JSON; the file is damaged (fix or delete that line)") from None
    return rows


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only the rows with step <= last_step (atomically); a cut-off last line is dropped."""
    path = Path(path)
    if not path.is_file():
        return
    kept = [row for row in read_jsonl(path) if row.get("step", 0) <= last_step]
    write_text_atomic(path, "".join(json.dumps(row) + "\n" for row in kept))


def read_metrics(path: Path, kind: str | None = None) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [r for r in read_jsonl(path) if kind is None or r.get("kind") == kind]


class MetricsLogger:
    """Appends metric rows to metrics.jsonl (and wandb). Inactive (all no-ops) when `active=False`.

    wandb mode: `logging.wandb` (offline by default: files under the run folder, no network);
    the WANDB_MODE environment variable wins when set.
    """

    def __init__(self, run_dir: Path, logging_cfg, config: dict[str, Any], active: bool = True,
                 resume_step: int | None = None):
        self.active = active
        self.path = Path(run_dir) / METRICS_FILE
        self._wandb = None
        if not active:
            return
        if resume_step is None:
            self.path.unlink(missing_ok=True)
        else:
            truncate_metrics(self.path, resume_step)
        mode = os.environ.get("WANDB_MODE") or logging_cfg.wandb
        if mode != "disabled":
            import wandb

            run_id = hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:12]  # same run on resume
            self._wandb = wandb.init(project=logging_cfg.project, name=Path(run_dir).name, id=run_id,
                                     dir=str(run_dir), mode=mode, config=config, resume="allow",
                                     settings=wandb.Settings(silent=True))  # no console output; files as before

    def log(self, step: int, kind: str, metrics: dict[str, Any]) -> None:
        if not self.active:
            return
        row = {"step": step, "kind": kind, **metrics}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self._wandb is not None:
            numbers = {f"{kind}/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}
            self._wandb.log(numbers, step=step)

    def close(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def progress_bar(total: int, initial: int, active: bool):
    """A tqdm bar over optimizer steps (shows ETA); disabled off rank 0 or when asked."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not active, unit="step", dynamic_ncols=True, leave=True)


def summary_table(rows: dict[str, Any]) -> str:
    """A two-column `name  value` table for the end of a run."""
    width = max(len(k) for k in rows)
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    return "\n".join(f"{k.ljust(width)}  {fmt(v)}" for k, v in rows.items())
