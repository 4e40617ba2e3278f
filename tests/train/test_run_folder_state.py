"""Lost or inconsistent run-folder state is named, never skipped or left behind:

- a newest checkpoint missing `model.safetensors` or `config.json` is refused (exit 2, one line
  naming the file and the fix), and the fix it names works;
- a missing `trainer_state.pt` suggests a fix that works (deleting the folder), not
  `run.resume=never` (which refuses a folder holding checkpoints);
- the new checkpoint's files and folders are fsync'ed before older checkpoints are pruned;
- `stlm run` that fails before any stage made progress (a batch larger than the data, a missing
  data path) leaves no config.yaml / command.txt behind, and an existing run's files unchanged.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from _pretrain_helpers import final_weights, stlm, text_file, tiny_config, tiny_overrides, train_losses
from _model_fixtures import save_untrained_tiny

from stlm_selfplay.errors import UserError
from stlm_selfplay.runs import latest_checkpoint, list_checkpoints, resolve_model_folder, resume_checkpoint
from stlm_selfplay.train.checkpoint import TRAINER_STATE, load_trainer_state, save_checkpoint
from stlm_selfplay.train.pretrain import pretrain


def fake_checkpoint(run: Path, step: int, files=("config.json", "model.safetensors", TRAINER_STATE)) -> Path:
    folder = run / "checkpoints" / f"step_{step}"
    folder.mkdir(parents=True)
    for name in files:
        (folder / name).write_text("{}")
    return folder


@pytest.mark.parametrize("missing", ["model.safetensors", "config.json"])
def test_incomplete_newest_checkpoint_is_refused_naming_the_file_and_fix(tmp_path, missing):
    run = tmp_path / "r"
    older = fake_checkpoint(run, 2)
    newest = fake_checkpoint(run, 10, files=[n for n in ("config.json", "model.safetensors") if n != missing])
    message = (f"checkpoint '{newest}' is incomplete: {missing} missing; delete that folder "
               "(then step_2 is the latest) or start over under a new run.name")
    for look in (lambda: latest_checkpoint(run), lambda: resolve_model_folder(run)):
        with pytest.raises(UserError) as err:
            look()
        assert str(err.value) == message
    assert list_checkpoints(run) == [older]  # the complete ones, for pruning
    shutil.rmtree(newest)  # the fix it names
    assert latest_checkpoint(run) == older


def test_incomplete_only_checkpoint_says_the_run_starts_afresh(tmp_path):
    run = tmp_path / "r"
    only = fake_checkpoint(run, 4, files=["config.json"])
    with pytest.raises(UserError) as err:
        latest_checkpoint(run)
    assert str(err.value) == (f"checkpoint '{only}' is incomplete: model.safetensors missing; delete that folder "
                              "(then the run starts afresh) or start over under a new run.name")


def test_an_incomplete_older_checkpoint_does_not_block_the_newest(tmp_path):
    run = tmp_path / "r"
    fake_checkpoint(run, 2, files=["config.json"])  # e.g. left by a kill while pruning
    newest = fake_checkpoint(run, 4)
    assert latest_checkpoint(run) == newest and list_checkpoints(run) == [newest]


def test_resume_never_counts_incomplete_checkpoints_too(tmp_path):
    from stlm_selfplay.config import load_config

    fake_checkpoint(tmp_path / "runs" / "r", 2, files=["config.json"])
    cfg = load_config(None, ["run.name=r", "run.resume=never"])
    with pytest.raises(UserError, match="already has checkpoints and run.resume=never"):
        resume_checkpoint(cfg, tmp_path / "runs" / "r")


def test_missing_trainer_state_of_a_foreign_folder_names_init_from(tmp_path):
    folder = save_untrained_tiny(tmp_path / "hf-model")
    with pytest.raises(UserError) as err:
        load_trainer_state(folder)
    assert str(err.value) == (
        f"'{folder}' has no {TRAINER_STATE}, so training cannot resume from it; run.resume takes a checkpoint "
        "written by stlm (<run>/checkpoints/step_<N>); to start self-play from these weights use "
        "selfplay.init_from with run.resume=auto")


def test_lost_checkpoint_files_refused_then_the_named_fix_resumes_exactly(tmp_path):
    """A real run with checkpoints at 2, 4, 6: step_6 loses model.safetensors (refused, exit 2);
    deleting it as told, step_4 has lost trainer_state.pt (refused, exit 2, the same fix); deleting
    that too, the run resumes from step_2 and ends with the weights of an uninterrupted run."""
    data = text_file(tmp_path)
    (tmp_path / "empty.yaml").write_text("{}\n")
    args = ["pretrain", "empty.yaml", *tiny_overrides(data, "lost", steps=6, **{"run.checkpoint_every": 2})]
    assert stlm(*args).returncode == 0
    ckpts = Path("runs/lost/checkpoints")
    (ckpts / "step_6" / "model.safetensors").unlink()
    refused = stlm(*args)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr[-2000:]
    assert refused.stderr == (f"error: checkpoint '{ckpts / 'step_6'}' is incomplete: model.safetensors missing; "
                              "delete that folder (then step_4 is the latest) or start over under a new run.name\n")
    shutil.rmtree(ckpts / "step_6")
    (ckpts / "step_4" / TRAINER_STATE).unlink()
    refused = stlm(*args)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert refused.stderr == (f"error: '{ckpts / 'step_4'}' has no {TRAINER_STATE}, so training cannot resume from "
                              "it; delete that folder to resume from the checkpoint before it, or start over under "
                              "a new run.name\n")
    assert "run.resume=never" not in refused.stderr
    shutil.rmtree(ckpts / "step_4")
    resumed = stlm(*args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming from {ckpts / 'step_2'}" in resumed.stdout
    assert [p.name for p in list_checkpoints("runs/lost")] == ["step_2", "step_4", "step_6"]
    pretrain(tiny_config(data, "clean", steps=6, **{"run.checkpoint_every": 2}))
    a, b = final_weights(Path("runs/clean")), final_weights(Path("runs/lost"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert train_losses("runs/lost")[-2:] == train_losses("runs/clean")[-2:]


def test_new_checkpoint_is_fsynced_before_older_ones_are_pruned(tmp_path, monkeypatch):
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc/self/fd to name an fsync'ed descriptor")
    from stlm_selfplay.train import checkpoint as ckpt_module

    source = save_untrained_tiny(tmp_path / "m")
    from stlm_selfplay.model import STLMForCausalLM

    model = STLMForCausalLM.from_pretrained(str(source))
    run = tmp_path / "run"
    save_checkpoint(run, 1, model, {"step": 1}, keep_last=1)
    events: list[tuple[str, str]] = []
    real_fsync, real_replace, real_rmtree = os.fsync, os.replace, shutil.rmtree
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", f"{a} -> {b}")), real_replace(a, b))[1])
    monkeypatch.setattr(ckpt_module.shutil, "rmtree",
                        lambda p, **kw: (events.append(("rmtree", str(p))), real_rmtree(p, **kw))[1])
    save_checkpoint(run, 2, model, {"step": 2}, keep_last=1)
    root = str((run / "checkpoints").resolve())
    pruned = events.index(("rmtree", str(run / "checkpoints" / "step_1")))
    renamed = next(i for i, (kind, what) in enumerate(events) if kind == "replace" and what.endswith("step_2"))
    tmp = events[renamed][1].split(" -> ")[0]
    synced_before_rename = {what for kind, what in events[:renamed] if kind == "fsync"}
    assert {str(Path(tmp).resolve() / n) for n in ("config.json", "model.safetensors", TRAINER_STATE)} <= synced_before_rename
    assert str(Path(tmp).resolve()) in synced_before_rename  # the folder's entries too
    assert ("fsync", root) in events[renamed:pruned]  # the rename itself, before the old one goes
    assert not (run / "checkpoints" / "step_1").exists() and list_checkpoints(run) == [run / "checkpoints" / "step_2"]
    events.clear()  # re-saving step_2 (the end of a resumed run) swaps: the new one is on disk before the old goes
    save_checkpoint(run, 2, model, {"step": 3}, keep_last=1)
    gone = next(i for i, (kind, what) in enumerate(events) if kind == "rmtree" and ".tmp-old-step_2-" in what)
    swapped = next(i for i, (kind, what) in enumerate(events) if kind == "replace" and what.endswith("step_2"))
    assert swapped < events.index(("fsync", root), swapped) < gone
    assert load_trainer_state(run / "checkpoints" / "step_2") == {"step": 3}


MICRO_FAST = ["stages=[pretrain]", "schedule.steps=2", "logging.progress=false", "evaluation.episodes=2"]


@pytest.mark.parametrize("bad", [["data.batch_size=100000"], ["data.source=text", "data.path=no-such-file.txt"]],
                         ids=["batch larger than the data", "missing data path"])
def test_stlm_run_that_never_started_leaves_nothing(tmp_path, bad):
    proc = stlm("run", "micro", "run.name=a", *MICRO_FAST, *bad)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr
    assert not (tmp_path / "runs").exists()


def test_failed_command_is_never_kept_and_a_started_run_stays_as_it_was(tmp_path):
    """A failing first command leaves no command.txt, so the command that starts the run is the one
    recorded; a later failing call (no progress) leaves config.yaml and command.txt as they were."""
    failed = stlm("run", "micro", "run.name=a", *MICRO_FAST, "data.batch_size=100000")
    assert failed.returncode == 2 and not Path("runs").exists()
    good = stlm("run", "micro", "run.name=a", *MICRO_FAST)
    assert good.returncode == 0, good.stderr[-2000:]
    run = Path("runs/a")
    command = "stlm run micro run.name=a 'stages=[pretrain]' schedule.steps=2 logging.progress=false evaluation.episodes=2\n"
    assert (run / "command.txt").read_text() == command
    before = {p: p.read_bytes() for p in (run / "config.yaml", run / "command.txt", run / "pretrain" / "config.yaml")}
    again = stlm("run", "micro", "run.name=a", *MICRO_FAST[1:], "schedule.steps=4", "data.batch_size=100000",
                 "stages=[pretrain]")
    assert again.returncode == 2 and "global batch of 8 sequences, this run has 100000" in again.stderr, again.stderr
    assert {p: p.read_bytes() for p in before} == before
    assert [p.name for p in list_checkpoints(run / "pretrain")] == ["step_2"]
