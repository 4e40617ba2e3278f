"""Run folders and checkpoints: where things are, and how a user's path becomes a model.

A run folder `runs/<name>/` holds `config.yaml`, `metrics.jsonl`, `checkpoints/step_<N>/` (each a
Hugging Face model folder: `config.json` + `model.safetensors`, plus the trainer's state) and
`report.md`. A staged run (`stlm run`) holds one such sub-run per stage, `runs/<name>/pretrain/`
and `runs/<name>/selfplay/`; its model is the last stage's latest checkpoint. Commands that take
`RUN_OR_CHECKPOINT` accept a run folder, a run name under `runs/`, a checkpoint folder, or any
Hugging Face model folder holding an STLM.
"""

from __future__ import annotations

import re
from pathlib import Path

from stlm_selfplay.errors import UserError

RUNS_DIR = Path("runs")
CHECKPOINTS = "checkpoints"
COMPLETE_MARKER = "model.safetensors"
_STEP = re.compile(r"^step_(\d+)$")


def is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / COMPLETE_MARKER).is_file()


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete `step_<N>` checkpoint folders of a run, oldest first (temp folders ignored)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP.match(p.name)) and is_model_folder(p)]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def stage_dir(run_dir: Path, stage: str) -> Path:
    """The sub-run folder of `stage` (pretrain | selfplay) in a staged run folder."""
    return Path(run_dir) / stage


def final_checkpoint(run_dir: Path) -> Path | None:
    """A run's latest checkpoint; for a staged run, that of its last stage holding one."""
    from stlm_selfplay.config import STAGES

    for folder in [Path(run_dir)] + [stage_dir(run_dir, s) for s in reversed(STAGES)]:
        ckpt = latest_checkpoint(folder)
        if ckpt is not None:
            return ckpt
    return None


def resolve_run_dir(run: str | Path) -> Path:
    """A run folder or a run name under `runs/` -> the folder; `UserError` when neither exists."""
    for cand in (Path(run), RUNS_DIR / run):
        if cand.is_dir():
            return cand
    raise UserError(f"no run folder at '{run}' (looked in ./ and {RUNS_DIR}/); pass a run folder or a run name under runs/")


def resolve_model_folder(run_or_checkpoint: str | Path) -> Path:
    """A run folder, run name, checkpoint folder or HF model folder -> the model folder to load.

    For a run, its latest complete checkpoint. Raises `UserError` naming the path otherwise.
    """
    path = Path(run_or_checkpoint)
    candidates = [path] if path.exists() else [RUNS_DIR / path]
    for cand in candidates:
        if is_model_folder(cand):
            return cand
        if cand.is_dir():
            ckpt = final_checkpoint(cand)
            if ckpt is not None:
                return ckpt
            raise UserError(
                f"'{run_or_checkpoint}' holds no model (no config.json + model.safetensors and no "
                f"complete checkpoint under {CHECKPOINTS}/); train it first or pass a checkpoint folder"
            )
    raise UserError(
        f"no run or checkpoint at '{run_or_checkpoint}' (looked in ./ and {RUNS_DIR}/); "
        "pass a run folder, a run name under runs/, or a checkpoint folder"
    )


def run_dir_of(model_folder: Path) -> Path | None:
    """The run folder a checkpoint folder belongs to, if it sits in `<run>/checkpoints/`."""
    model_folder = Path(model_folder)
    if model_folder.parent.name == CHECKPOINTS:
        return model_folder.parent.parent
    return None


def load_model(run_or_checkpoint: str | Path, device: str | None = None):
    """Load an `STLMForCausalLM` in eval mode from a run or checkpoint (safetensors only)."""
    from stlm_selfplay.model import STLMForCausalLM  # late import: the model is heavy

    folder = resolve_model_folder(run_or_checkpoint)
    try:
        model = STLMForCausalLM.from_pretrained(str(folder))
    except Exception as err:  # corrupt or foreign files: one line, not a traceback
        raise UserError(f"cannot load the model in '{folder}': {str(err).splitlines()[0]}; "
                        "the checkpoint may be corrupt, use an earlier one") from None
    if device is not None:
        model.to(device)
    return model.eval()
