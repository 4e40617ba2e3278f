"""Checkpoints: atomic writes, keep-last-K + best, faults mid-write, corruption, signals, RNG."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from _pretrain_helpers import final_weights, stlm, text_file, tiny_config, tiny_overrides, train_losses

from stlm_selfplay.errors import UserError
from stlm_selfplay.runs import list_checkpoints, load_model
from stlm_selfplay.train.checkpoint import (capture_rng_state, load_model_weights, load_trainer_state,
                                            read_best, restore_rng_state, save_checkpoint)
from stlm_selfplay.train.pretrain import pretrain


@pytest.fixture
def model(tiny_model):
    return tiny_model(seed=0)  # what tiny_config's model section builds (the same fields)


def steps(run_dir):
    return [int(p.name.split("_")[1]) for p in list_checkpoints(run_dir)]


def test_keep_last_k_plus_best_and_resave(tmp_path, model):
    run = tmp_path / "run"
    losses = {1: 3.0, 2: 1.0, 3: 2.0, 4: 2.5, 5: 2.2}
    for step, loss in losses.items():
        save_checkpoint(run, step, model, {"step": step, "t": torch.arange(3)}, keep_last=2, val_loss=loss)
    assert steps(run) == [2, 4, 5]  # last two, plus the best (step 2)
    assert read_best(run) == {"step": 2, "val_loss": 1.0}
    save_checkpoint(run, 5, model, {"step": 55}, keep_last=2)  # same step again: replaced whole
    assert load_trainer_state(run / "checkpoints/step_5")["step"] == 55
    assert [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")] == []
    # the checkpoint is a Hugging Face model folder
    reloaded = load_model(run / "checkpoints/step_5")
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), model.state_dict().values()))


def test_corrupt_files_are_one_line_user_errors(tmp_path, model):
    folder = save_checkpoint(tmp_path / "run", 1, model, {"step": 1})
    (folder / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(UserError, match="model.safetensors'.*corrupt") as info:
        load_model_weights(model, folder)
    assert "\n" not in str(info.value)
    (folder / "trainer_state.pt").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="trainer_state.pt'.*corrupt"):
        load_trainer_state(folder)


def test_trainer_state_refuses_pickled_objects(tmp_path, model):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    folder = save_checkpoint(tmp_path / "run", 1, model, {"step": 1})
    torch.save({"step": 1, "x": Evil()}, folder / "trainer_state.pt")
    with pytest.raises(UserError, match="corrupt"):
        load_trainer_state(folder)


def test_rng_capture_restore_replays_draws():
    gen = torch.Generator().manual_seed(3)
    state = capture_rng_state({"sampler": gen})
    first = (torch.rand(4), torch.rand(2, generator=gen))
    restore_rng_state(state, {"sampler": gen})
    assert torch.equal(first[0], torch.rand(4)) and torch.equal(first[1], torch.rand(2, generator=gen))


def test_crash_mid_checkpoint_resumes_from_the_previous_complete_one(tmp_path):
    """STLM_FAULT_CHECKPOINT=2 kills the process while writing step_4; the rerun resumes from step_2."""
    data = text_file(tmp_path)
    args = ["pretrain", str(cfg_file(tmp_path)), *tiny_overrides(data, "crash", steps=6, **{"run.checkpoint_every": 2})]
    crashed = stlm(*args, env={"STLM_FAULT_CHECKPOINT": "2"})
    assert crashed.returncode == 17, crashed.stderr[-2000:]
    assert steps("runs/crash") == [2]
    assert any(p.name.startswith(".tmp-step_4") for p in (tmp_path / "runs/crash/checkpoints").iterdir())
    resumed = stlm(*args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from runs/crash/checkpoints/step_2" in resumed.stdout
    assert steps("runs/crash") == [2, 4, 6]
    pretrain(tiny_config(data, "clean", steps=6, **{"run.checkpoint_every": 2}))
    a, b = final_weights(tmp_path / "runs/clean"), final_weights(tmp_path / "runs/crash")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert train_losses("runs/crash") == train_losses("runs/clean")


def test_corrupt_latest_checkpoint_is_reported_in_one_line(tmp_path):
    data = text_file(tmp_path)
    pretrain(tiny_config(data, "bad", steps=4))
    (tmp_path / "runs/bad/checkpoints/step_4/model.safetensors").write_bytes(b"{}" * 50)
    proc = stlm("pretrain", str(cfg_file(tmp_path)), *tiny_overrides(data, "bad", steps=8))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: cannot load") and proc.stderr.count("\n") == 1, proc.stderr
    assert "step_4/model.safetensors" in proc.stderr and "Traceback" not in proc.stderr


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    data = text_file(tmp_path)
    args = ["pretrain", str(cfg_file(tmp_path)), *tiny_overrides(data, "sig", steps=100000,
                                                                  **{"run.checkpoint_every": 100000})]
    proc = subprocess.Popen([sys.executable, "-m", "stlm_selfplay", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "runs/sig/metrics.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (metrics.is_file() and metrics.read_text().count("\n") >= 3):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert "stopped by SIGTERM" in err + out
    saved = steps("runs/sig")
    assert len(saved) == 1 and saved[0] >= 3
    assert load_trainer_state(list_checkpoints("runs/sig")[0])["step"] == saved[0]
    assert json.loads(metrics.read_text().splitlines()[-1])["step"] == saved[0]


def test_resume_never_refuses_to_overwrite(tmp_path):
    data = text_file(tmp_path)
    pretrain(tiny_config(data, "once", steps=2))
    with pytest.raises(UserError, match="already has checkpoints and run.resume=never"):
        pretrain(tiny_config(data, "once", steps=2, **{"run.resume": "never"}))


def cfg_file(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("{}\n")
    return path
