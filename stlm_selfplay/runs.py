"""Run folders: every file name in one, the resolved config, resume, and how a path becomes a model.

A run folder `<run.out_dir>/<run.name>/` (`run_dir(cfg)`) holds:

    config.yaml          the resolved config (`save_config`), so the run can be repeated exactly
    command.txt          the command that started a staged run
    metrics.jsonl        one JSON row per logged step (`train/metrics.py`)
    ratings.jsonl        self-play: Bradley-Terry ratings at each evaluation
    checkpoints/step_<N>/  each a Hugging Face model folder (`config.json` + `model.safetensors`)
                         plus the trainer's state; `checkpoints/best.json` names the best by val loss
    evaluation.json      a staged run: pretrained vs final model (`before_after`)
    report.md, plots/    the report (`report`)
    eval_lm.json, .md    `stlm eval-lm` results
    result.json          `stlm compare`: a finished run's numbers (compare_progress.json while running)

A staged run (`stlm run`) holds one sub-run per stage, `<run>/pretrain/` and `<run>/selfplay/`
(`stage_dir`, `stage_config`); its model is the last stage's latest checkpoint. Commands that take
`RUN_OR_CHECKPOINT` accept a run folder, a run name under `runs/`, a checkpoint folder, or any
Hugging Face model folder holding an STLM. Every file is written atomically (`stlm_selfplay.io`).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import TYPE_CHECKING

from stlm_selfplay.errors import UserError
from stlm_selfplay.io import write_text_atomic

if TYPE_CHECKING:
    from stlm_selfplay.config import RootConfig

RUNS_DIR = Path("runs")
STAGES = ("pretrain", "selfplay")  # the sub-runs of a staged run, in the order they can run
CONFIG_FILE = "config.yaml"
COMMAND_FILE = "command.txt"
METRICS_FILE = "metrics.jsonl"
RATINGS_FILE = "ratings.jsonl"
CHECKPOINTS = "checkpoints"
BEST_FILE = "best.json"  # in checkpoints/
COMPLETE_MARKER = "model.safetensors"
EVALUATION_FILE = "evaluation.json"
REPORT_FILE = "report.md"
PLOTS_DIR = "plots"
EVAL_LM_JSON = "eval_lm.json"
EVAL_LM_MD = "eval_lm.md"
RESULT_FILE = "result.json"
PROGRESS_FILE = "compare_progress.json"
_STEP = re.compile(r"^step_(\d+)$")


def run_dir(cfg: RootConfig) -> Path:
    """The run folder of a config: `<run.out_dir>/<run.name>`."""
    return Path(cfg.run.out_dir) / cfg.run.name


def config_yaml(cfg: RootConfig) -> str:
    """The resolved config as the YAML that `config.yaml` holds (`--print-config` prints the same values
    with each option's help as a comment: `options.commented_yaml`)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: RootConfig, path: str | Path) -> None:
    """Write the resolved config as YAML to `path` (a run's `CONFIG_FILE`), atomically."""
    write_text_atomic(path, config_yaml(cfg))


def resume_checkpoint(cfg: RootConfig, folder: Path) -> Path | None:
    """The checkpoint to continue from, per `run.resume` (auto | never | <path>)."""
    if cfg.run.resume == "auto":
        return latest_checkpoint(folder)
    if cfg.run.resume == "never":
        if step_folders(folder):
            raise UserError(f"run folder '{folder}' already has checkpoints and run.resume=never; "
                            "pick another run.name, delete the folder, or use run.resume=auto")
        return None
    return resolve_model_folder(cfg.run.resume)


def is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / COMPLETE_MARKER).is_file()


def step_folders(folder: Path) -> list[Path]:
    """Every `step_<N>` folder of a run, complete or not, oldest first (temp folders ignored)."""
    root = Path(folder) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete `step_<N>` checkpoint folders of a run, oldest first (temp folders ignored)."""
    return [p for p in step_folders(folder) if is_model_folder(p)]


def latest_checkpoint(folder: Path) -> Path | None:
    """The run's newest checkpoint, None when it has none. A newest `step_<N>` folder that lacks
    `config.json` or `model.safetensors` (deleted or lost: checkpoints are written whole, by a
    rename) is refused with a `UserError` naming the file and the fix, never skipped silently:
    resuming, or evaluating, an older checkpoint than the user expects must be their choice."""
    folders = step_folders(folder)
    if not folders:
        return None
    newest = folders[-1]
    missing = [name for name in ("config.json", COMPLETE_MARKER) if not (newest / name).is_file()]
    if missing:
        earlier = [p for p in folders[:-1] if is_model_folder(p)]
        then = f"then {earlier[-1].name} is the latest" if earlier else "then the run starts afresh"
        raise UserError(f"checkpoint '{newest}' is incomplete: {' and '.join(missing)} missing; "
                        f"delete that folder ({then}) or start over under a new run.name")
    return newest


def stage_dir(folder: Path, stage: str) -> Path:
    """The sub-run folder of `stage` (pretrain | selfplay) in a staged run folder."""
    return Path(folder) / stage


def stage_config(cfg: RootConfig, stage: str) -> RootConfig:
    """The config one stage of a staged run runs with: the run folder's sub-run `stage`; self-play
    starts from the pretrain stage's final checkpoint unless `selfplay.init_from` names a model."""
    root = run_dir(cfg)
    out = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, out_dir=str(root), name=stage))
    if stage == "selfplay" and "pretrain" in cfg.stages and not cfg.selfplay.init_from:
        out = dataclasses.replace(out, selfplay=dataclasses.replace(
            cfg.selfplay, init_from=str(stage_dir(root, "pretrain"))))
    return out


def final_checkpoint(folder: Path) -> Path | None:
    """A run's latest checkpoint; for a staged run, that of its last stage holding one."""
    for candidate in [Path(folder)] + [stage_dir(folder, s) for s in reversed(STAGES)]:
        ckpt = latest_checkpoint(candidate)
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
