"""Shared by the pretraining tests: a seconds-sized config and readers for a run's outputs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from conftest import tiny_model_overrides
from safetensors.torch import load_file

from stlm_selfplay.config import load_config
from stlm_selfplay.runs import latest_checkpoint
from stlm_selfplay.train.metrics import read_metrics

REPO = Path(__file__).resolve().parents[1]

# conftest's tiny STLM (~20k parameters: 2-byte patches, one local layer each side, one trunk layer)
TINY_MODEL = tiny_model_overrides()


def text_file(folder: Path, size: int = 40_000) -> Path:
    """A small local text with structure a tiny model can learn quickly."""
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "it"]
    out, i = [], 0
    while sum(map(len, out)) < size:
        out.append(f"{words[i % 11]} {words[(i * 7) % 11]} {words[(i * 3 + 1) % 11]}.\n")
        i += 1
    path = Path(folder) / "corpus.txt"
    path.write_text("".join(out))
    return path


def tiny_overrides(data: Path, name: str, steps: int = 8, **extra) -> list[str]:
    values = {"run.name": name, "run.device": "cpu", "run.cpu_threads": 1, "run.checkpoint_every": 4, "run.keep_last": 5,
              "data.path": str(data), "data.cache_dir": str(Path(data).parent / "cache"), "data.seq_len": 32,
              "data.batch_size": 4, "data.val_fraction": 0.1, "data.val_max_sequences": 16,
              "schedule.steps": steps, "schedule.warmup_steps": 2, "logging.log_every": 1,
              "logging.eval_every": 4, "logging.wandb": "disabled", "logging.progress": False,
              "logging.sample_bytes": 8, "optimizer.lr": 1e-2}
    values.update(extra)
    return TINY_MODEL + [f"{k}={v}" for k, v in values.items()]


def tiny_config(data: Path, name: str, steps: int = 8, **extra):
    return load_config(None, tiny_overrides(data, name, steps, **extra))


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(latest_checkpoint(run_dir) / "model.safetensors"))


def train_losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(Path(run_dir) / "metrics.jsonl", "train")]


def stlm(*args: str, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run `python -m stlm_selfplay ARGS` in the current folder with 1 thread per process."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "stlm_selfplay", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)
