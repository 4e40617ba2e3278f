"""Checkpoints: atomic save, keep-last-K + best, safe load, RNG capture/restore.

    <run>/checkpoints/step_<N>/
        config.json, model.safetensors   the model (Hugging Face format: `from_pretrained` loads it)
        trainer_state.pt                 optimizer, step, data position, RNG states, ... (tensors and
                                         plain Python only: loaded with `torch.load(weights_only=True)`)
    <run>/checkpoints/best.json          {"step": N, "val_loss": x} of the best checkpoint so far

A checkpoint is written into `checkpoints/.tmp-step_<N>-<uid>/` and renamed to `step_<N>` when
complete, so a `step_<N>` folder is always whole; leftover temp folders are deleted on the next
save. Test-only fault hook: with `STLM_FAULT_CHECKPOINT=k` the process calls `os._exit(17)`
midway through writing its k-th checkpoint (after the model, before the trainer state).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path

import torch
from torch import nn

from stlm_selfplay.errors import UserError
from stlm_selfplay.io import fsync_dir, fsync_tree, write_text_atomic
from stlm_selfplay.runs import BEST_FILE as BEST, CHECKPOINTS, COMPLETE_MARKER, list_checkpoints, run_dir_of

TRAINER_STATE = "trainer_state.pt"
FAULT_ENV = "STLM_FAULT_CHECKPOINT"
_saves_in_this_process = 0


def _fault_point() -> None:
    global _saves_in_this_process
    _saves_in_this_process += 1
    target = os.environ.get(FAULT_ENV)
    if target and int(target) == _saves_in_this_process:
        os._exit(17)


def step_of(folder: Path) -> int:
    return int(Path(folder).name.split("_")[-1])


def save_checkpoint(run_dir: Path, step: int, model: nn.Module, state: dict, keep_last: int = 3,
                    val_loss: float | None = None) -> Path:
    """Write `step_<step>/` (model + `state`) atomically, update best.json, prune old ones.

    `model` is an unwrapped `PreTrainedModel`; `state` must hold only tensors and plain Python
    values. Call on one process only (rank 0). Returns the checkpoint folder.
    """
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"step_{step}"
    tmp = root / f".tmp-step_{step}-{uuid.uuid4().hex[:8]}"
    with _quiet_transformers():
        model.save_pretrained(str(tmp), safe_serialization=True)
    _fault_point()
    torch.save(state, tmp / TRAINER_STATE)
    fsync_tree(tmp)  # the new checkpoint is on disk before the rename makes it the latest ...
    old = root / f".tmp-old-{final.name}-{uuid.uuid4().hex[:8]}" if final.exists() else None
    if old is not None:  # re-saving a step (e.g. the end of a resumed run): swap, then delete old
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_dir(root)  # ... and the rename too, before anything older is deleted or best.json names it
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    if val_loss is not None:
        best = read_best(run_dir)
        if best is None or val_loss < best["val_loss"]:
            write_text_atomic(root / BEST, json.dumps({"step": step, "val_loss": float(val_loss)}))
    prune_checkpoints(run_dir, keep_last)
    return final


@contextlib.contextmanager
def _quiet_transformers():
    """No 'Writing model shards' bar per checkpoint."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def read_best(run_dir: Path) -> dict | None:
    path = Path(run_dir) / CHECKPOINTS / BEST
    return json.loads(path.read_text()) if path.is_file() else None


def prune_checkpoints(run_dir: Path, keep_last: int) -> None:
    """Delete all but the last `keep_last` complete checkpoints and the best one."""
    best = read_best(run_dir)
    checkpoints = list_checkpoints(run_dir)
    for folder in checkpoints[:-keep_last] if keep_last > 0 else checkpoints:
        if best is None or step_of(folder) != best["step"]:
            shutil.rmtree(folder, ignore_errors=True)


def load_trainer_state(folder: Path) -> dict:
    """The trainer state of a checkpoint (`weights_only=True`); a `UserError` if missing or corrupt."""
    path = Path(folder) / TRAINER_STATE
    if not path.is_file():
        if run_dir_of(folder) is not None:  # the latest checkpoint of the run being resumed
            fix = "delete that folder to resume from the checkpoint before it, or start over under a new run.name"
        else:  # run.resume=<a model folder stlm did not write>
            fix = ("run.resume takes a checkpoint written by stlm (<run>/checkpoints/step_<N>); to start "
                   "self-play from these weights use selfplay.init_from with run.resume=auto")
        raise UserError(f"'{folder}' has no {TRAINER_STATE}, so training cannot resume from it; {fix}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"cannot read '{path}': {str(err).splitlines()[0]}; the checkpoint may be corrupt, "
                        "delete it to resume from an earlier one") from None


def load_model_weights(model: nn.Module, folder: Path) -> None:
    """Load `model.safetensors` into `model` in place; a one-line `UserError` when corrupt.

    Tensors missing from the file are accepted only when tied to a tensor that is present.
    """
    from safetensors.torch import load_file

    path = Path(folder) / COMPLETE_MARKER
    try:
        tensors = load_file(str(path))
    except Exception as err:
        raise UserError(f"cannot load '{path}': {str(err).splitlines()[0]}; the checkpoint is corrupt, "
                        "delete it to resume from an earlier one") from None
    try:
        result = model.load_state_dict(tensors, strict=False)
    except RuntimeError as err:
        raise UserError(f"'{path}' does not match the model: {str(err).splitlines()[-1].strip()}; "
                        "check model.preset / model.overrides") from None
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {params[k].data_ptr() for k in tensors if k in params}
    untied = [k for k in result.missing_keys if k not in params or params[k].data_ptr() not in loaded]
    if untied or result.unexpected_keys:
        raise UserError(f"'{path}' does not match the model (missing {untied[:3]}, unexpected "
                        f"{result.unexpected_keys[:3]}); check model.preset / model.overrides")


def capture_rng_state(generators: dict[str, torch.Generator] | None = None) -> dict:
    """torch's global CPU/CUDA states (dropout) and the given generators' states (all tensors)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    for name, gen in (generators or {}).items():
        state[f"gen/{name}"] = gen.get_state()
    return state


def restore_rng_state(state: dict, generators: dict[str, torch.Generator] | None = None) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, gen in (generators or {}).items():
        gen.set_state(state[f"gen/{name}"])

