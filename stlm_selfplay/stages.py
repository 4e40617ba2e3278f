"""Staged runs (`stlm run`): the config's `stages` in order, then the before/after evaluation and
the report, all under one run folder:

    runs/<name>/config.yaml          the resolved config (with every stage's section)
    runs/<name>/command.txt          the command that started the run
    runs/<name>/pretrain/            the pretrain stage: a pretrain run folder of its own
    runs/<name>/selfplay/            the self-play stage; `selfplay.init_from` defaults to the
                                     pretrain stage's final checkpoint
    runs/<name>/evaluation.json      pretrained vs final model (`before_after`)
    runs/<name>/report.md, plots/    the report (`report`)

Each stage runs with the root config's sections, its `run.out_dir` set to the run folder and
its `run.name` to the stage. A stage whose last checkpoint is its final step is skipped, so a
second `stlm run` resumes whichever stage was running (from that stage's last checkpoint: the
stages resume exactly). A stage stopped by SIGINT/SIGTERM saves a checkpoint and ends the run.
A call that fails before any stage made progress leaves the run folder as it found it (a new
run: no folder, so `command.txt` always holds the command that started the run).
"""

from __future__ import annotations

import json

import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch

from stlm_selfplay.bundled import bundled_names, config_file
from stlm_selfplay.config import RootConfig
from stlm_selfplay.errors import UserError
from stlm_selfplay.io import write_text_atomic
from stlm_selfplay.runs import (COMMAND_FILE, CONFIG_FILE, METRICS_FILE, latest_checkpoint,
                                run_dir as run_dir_of_config, save_config, stage_config, stage_dir, step_folders)

INTERRUPTED = 130  # exit code of a run stopped by a signal (resumable)
DEFAULT_CONFIG = "quickstart"


def find_config(name: str | None) -> Path:
    """A config path, or a bundled config by name (`micro`, `configs/micro.yaml` from any folder;
    None: the quickstart), found by `bundled.config_file`, so `stlm run` works from any folder
    and after a regular (non-editable) install."""
    path = config_file(name or DEFAULT_CONFIG)
    if path is None:
        known = bundled_names()
        raise UserError(f"config file '{name or DEFAULT_CONFIG}' not found; pass a YAML file"
                        + (f" or a bundled config name ({', '.join(known)})" if known else ""))
    return path


def stage_steps(cfg: RootConfig, stage: str) -> int:
    """The step (pretrain) or update (self-play) a stage ends at."""
    return cfg.schedule.steps if stage == "pretrain" else cfg.selfplay.updates


def stage_progress(cfg: RootConfig, stage: str) -> int:
    """The step of the stage's latest checkpoint (0 when none)."""
    from stlm_selfplay.train.checkpoint import step_of

    ckpt = latest_checkpoint(stage_dir(run_dir_of_config(cfg), stage))
    return 0 if ckpt is None else step_of(ckpt)


def check_staged(cfg: RootConfig) -> None:
    """What `stlm run` needs beyond each stage's own checks."""
    if not cfg.stages:
        raise UserError("config key 'stages' is empty; e.g. stages: [pretrain, selfplay]")
    if len(set(cfg.stages)) != len(cfg.stages):
        raise UserError(f"config key 'stages' repeats a stage: {cfg.stages}")
    if "selfplay" in cfg.stages:
        from stlm_selfplay.config import build_model_config
        from stlm_selfplay.runs import resolve_model_folder
        from stlm_selfplay.selfplay.config import check_selfplay

        value_head = None  # whether the model self-play will improve has a value head (gae, value need one)
        if cfg.selfplay.init_from:
            folder = resolve_model_folder(cfg.selfplay.init_from)  # a wrong path fails now, not after pretraining
            value_head = bool(json.loads((folder / "config.json").read_text()).get("value_head", False))
        elif "pretrain" in cfg.stages:
            value_head = bool(build_model_config(cfg.model).value_head)
        check_selfplay(cfg.selfplay, value_head=value_head)  # before pretraining, not after it
    from stlm_selfplay.before_after import check_bots, check_targets, evaluation_games

    games = evaluation_games(cfg)
    check_bots(games, cfg.evaluation.bots)
    check_targets(games, cfg.evaluation.bots, dict(cfg.evaluation.at_most), dict(cfg.evaluation.at_least))


def run_stages(cfg: RootConfig, command: str | None = None) -> int:
    """Run (or resume) every stage, then the before/after evaluation and the report; returns
    0, or INTERRUPTED when a stage was stopped by a signal (its checkpoint saved)."""
    from stlm_selfplay.before_after import evaluate_run
    from stlm_selfplay.report import write_report

    check_staged(cfg)
    root = run_dir_of_config(cfg)
    main_process = int(os.environ.get("RANK", "0")) == 0  # under torchrun, rank 0 writes the run folder
    say = print if main_process else (lambda *args, **kwargs: None)
    threads = torch.get_num_threads()
    if cfg.run.cpu_threads:
        torch.set_num_threads(cfg.run.cpu_threads)
    started = time.perf_counter()
    before = _snapshot(cfg, root) if main_process else None
    try:
        try:
            if main_process:
                root.mkdir(parents=True, exist_ok=True)
                save_config(cfg, root / CONFIG_FILE)
                if command is not None and not (root / COMMAND_FILE).is_file():  # the command that started it
                    write_text_atomic(root / COMMAND_FILE, command + "\n")
            code = _run_stages(cfg, say)
        except Exception:
            if before is not None:
                _undo_if_nothing_ran(cfg, root, before)
            raise
        if code == 0 and main_process:
            evaluate_run(cfg)
            path = write_report(root)
            print(f"report: {path}  ({time.perf_counter() - started:.0f} s in this call)")
        return code
    finally:
        torch.set_num_threads(threads)


def _progress(cfg: RootConfig, root: Path) -> list:
    """What training has left in the run folder: each stage's step folders and metrics size."""
    out = []
    for stage in cfg.stages:
        folder = stage_dir(root, stage)
        metrics = folder / METRICS_FILE
        out.append(([p.name for p in step_folders(folder)], metrics.stat().st_size if metrics.is_file() else 0))
    return out


def _snapshot(cfg: RootConfig, root: Path) -> dict | None:
    """The run folder's state before this call: the files `stlm run` (re)writes, the folders it
    would create, and the training progress. None when the path cannot even be read (a name the
    file system refuses): then nothing can be written there either."""
    try:
        files = [root / CONFIG_FILE, root / COMMAND_FILE, *(stage_dir(root, s) / CONFIG_FILE for s in cfg.stages)]
        return {"files": {p: p.read_bytes() if p.is_file() else None for p in files},
                "new_dirs": [p for p in (root, *root.parents) if not p.exists()],  # deepest first
                "new_stages": [stage_dir(root, s) for s in cfg.stages if not stage_dir(root, s).exists()],
                "progress": _progress(cfg, root)}
    except OSError:
        return None


def _undo_if_nothing_ran(cfg: RootConfig, root: Path, before: dict) -> None:
    """A call that failed before any stage made progress (bad data, a batch larger than the data,
    an incomplete checkpoint, ...) leaves the run folder as it found it: config.yaml, command.txt
    and the stages' config.yaml as before (absent for a new run, so the next command's command.txt
    is the one that starts it), and the folders this call created removed. After progress (a
    checkpoint or a metrics row) the run has started and everything stays."""
    try:
        if _progress(cfg, root) != before["progress"]:
            return
        for path, data in before["files"].items():
            if data is None:
                path.unlink(missing_ok=True)
            elif not path.is_file() or path.read_bytes() != data:
                write_text_atomic(path, data.decode("utf-8"))  # written by us as UTF-8 text
        for folder in before["new_stages"]:
            shutil.rmtree(folder, ignore_errors=True)
        for folder in before["new_dirs"]:
            try:
                folder.rmdir()
            except OSError:  # not empty (something else lives there): leave it
                pass
    except OSError:  # the folder cannot be read or written: there is nothing to undo
        pass


def _run_stages(cfg: RootConfig, say) -> int:
    """The stages in order (each skipped when done); INTERRUPTED when one was stopped by a signal."""
    for i, stage in enumerate(cfg.stages):
        scfg = stage_config(cfg, stage)
        done, total = stage_progress(cfg, stage), stage_steps(cfg, stage)
        if done >= total:
            say(f"stage {i + 1}/{len(cfg.stages)} {stage}: done ({done}/{total})")
            continue
        say(f"stage {i + 1}/{len(cfg.stages)} {stage}: " + (f"resuming at {done}/{total}" if done else "starting"))
        summary = _run_stage(scfg, stage)
        if summary.get("stopped_by_signal"):
            say(f"stopped during stage {stage}; run the same command again to resume", file=sys.stderr)
            return INTERRUPTED
    return 0


def _run_stage(cfg: RootConfig, stage: str) -> dict:
    if stage == "pretrain":
        from stlm_selfplay.train.pretrain import pretrain

        return pretrain(cfg)
    from stlm_selfplay.selfplay.loop import selfplay

    return selfplay(cfg)


def command_line(argv: list[str]) -> str:
    """`stlm <args>` as the user could type it again."""
    return "stlm " + " ".join(shlex.quote(a) for a in argv)
