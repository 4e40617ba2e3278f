"""Fingerprint a run folder, to check that a refactor left a seeded run bit-identical.

    stlm run configs/micro.yaml run.out_dir=/tmp/before     # on the old code
    stlm run configs/micro.yaml run.out_dir=/tmp/after      # on the new code
    python benchmarks/run_fingerprint.py /tmp/before/micro > a.json
    python benchmarks/run_fingerprint.py /tmp/after/micro > b.json && diff a.json b.json

One sha256 (first 16 hex digits) per file: metrics/ratings rows without their wall-clock fields,
trainer states (loaded with weights_only=True) without them either, JSON/YAML/text with the run
folder's own path replaced; plots and report.md are left out (they hold timings and PNG metadata).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

WALL_CLOCK = {"bytes_per_s", "data_wait", "eval_s", "games_per_s", "rollout_s", "update_s", "update_cpu_s"}


def _hash_state(value, path: str, h) -> None:
    if isinstance(value, dict):
        for key in sorted(value, key=str):
            if key not in WALL_CLOCK:
                _hash_state(value[key], f"{path}/{key}", h)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _hash_state(item, f"{path}[{i}]", h)
    elif isinstance(value, torch.Tensor):
        h.update(path.encode() + value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    else:
        h.update(f"{path}={value!r}".encode())


def fingerprint(root: Path) -> dict[str, str]:
    root = root.resolve()
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix == ".png" or path.name == "report.md":
            continue
        if path.suffix == ".pt":
            h = hashlib.sha256()
            state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "exact_history" in state:  # self-play states before 2026-12-03
                state["kuhn_tables"] = state.pop("exact_history").get("kuhn_poker", [])  # called it kuhn_tables
            _hash_state(state, "", h)
            out[str(path.relative_to(root))] = h.hexdigest()[:16]
            continue
        data = path.read_bytes()
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
            data = json.dumps([{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in rows], sort_keys=True).encode()
        if path.suffix in (".json", ".jsonl", ".yaml", ".txt"):
            data = data.replace(str(root.parent).encode(), b"<OUT>")
        out[str(path.relative_to(root))] = hashlib.sha256(data).hexdigest()[:16]
    return out


if __name__ == "__main__":
    print(json.dumps(fingerprint(Path(sys.argv[1])), indent=1))
