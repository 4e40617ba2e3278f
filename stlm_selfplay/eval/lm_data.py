"""Rows of a benchmark task: from the Hugging Face hub, or from `--data-dir` files.

With `--data-dir DIR`, a task reads `DIR/<task>.jsonl` (one JSON object a line) or
`DIR/<task>.parquet`, holding the same fields as the public dataset (`LMTask.fields`). Without
it, `datasets.load_dataset(task.dataset, config, split=task.split)` for each of the task's
configs. Either way a missing dataset is a one-line `UserError` naming the task and the fix.
"""

from __future__ import annotations

import json
from itertools import chain, zip_longest
from pathlib import Path

from stlm_selfplay.errors import UserError
from stlm_selfplay.eval.lm_tasks import LMTask

DATA_SUFFIXES = (".jsonl", ".parquet")


def how_to_supply(task: LMTask) -> str:
    return (f"pass --data-dir DIR holding {task.name}.jsonl or {task.name}.parquet "
            f"with fields {', '.join(task.fields)}")


def read_local_rows(task: LMTask, data_dir: Path) -> list[dict]:
    """`<data_dir>/<task>.jsonl` or `.parquet` -> rows (dicts)."""
    for suffix in DATA_SUFFIXES:
        path = Path(data_dir) / f"{task.name}{suffix}"
        if path.is_file():
            break
    else:
        raise UserError(f"task '{task.name}': no {task.name}.jsonl or {task.name}.parquet in '{data_dir}'; "
                        + how_to_supply(task))
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except Exception as err:  # malformed file: one line naming it
        raise UserError(f"task '{task.name}': cannot read '{path}' ({str(err).splitlines()[0]}); "
                        f"write one JSON object per line (or a parquet table) with fields {', '.join(task.fields)}") from None


def download_rows(task: LMTask) -> list[dict]:
    """Rows of every config of `task.dataset` (cached by `datasets`), configs concatenated."""
    import datasets

    try:
        configs = task.configs or tuple(datasets.get_dataset_config_names(task.dataset))
        return [dict(row) for config in configs
                for row in datasets.load_dataset(task.dataset, config, split=task.split)]
    except Exception as err:  # offline, missing or renamed: one line and the way out
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise UserError(f"task '{task.name}': cannot load dataset '{task.dataset}' ({reason}); "
                        "without internet " + how_to_supply(task)) from None


def limit_rows(rows: list[dict], limit: int | None, group_field: str | None) -> list[dict]:
    """The first `limit` rows; when rows carry `group_field` (BLiMP's phenomenon, MMLU's
    subject), rows are taken round-robin across groups so a small limit still covers them."""
    if not limit or limit >= len(rows):
        return rows
    if group_field is None or any(group_field not in r for r in rows):
        return rows[:limit]
    groups: dict[object, list[dict]] = {}
    for row in rows:
        groups.setdefault(row[group_field], []).append(row)
    interleaved = (r for r in chain.from_iterable(zip_longest(*groups.values())) if r is not None)
    return [r for _, r in zip(range(limit), interleaved)]


def check_fields(task: LMTask, rows: list[dict], source: str) -> None:
    if not rows:
        raise UserError(f"task '{task.name}': {source} holds no rows; " + how_to_supply(task))
    missing = [f for f in task.fields if f not in rows[0]]
    if missing:
        raise UserError(f"task '{task.name}': rows in {source} lack field(s) {', '.join(missing)} "
                        f"(found: {', '.join(rows[0])}); use the schema of {task.dataset}")


def load_rows(task: LMTask, data_dir: str | Path | None = None, limit: int | None = None) -> list[dict]:
    """The task's rows (all, or `limit` of them), from `data_dir` when given, else the hub."""
    rows = read_local_rows(task, Path(data_dir)) if data_dir else download_rows(task)
    check_fields(task, rows, f"'{data_dir}'" if data_dir else f"'{task.dataset}'")
    return limit_rows(rows, limit, task.group_field)
