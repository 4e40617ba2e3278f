"""The pretraining loop: learning, exact resume, DDP equivalence, and val bpb = evaluate_bpb."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from _pretrain_helpers import final_weights, text_file, tiny_config, tiny_overrides, train_losses

from stlm_selfplay.config import build_model_config
from stlm_selfplay.data.cache import prepare_data
from stlm_selfplay.data.loader import val_sequences
from stlm_selfplay.errors import UserError
from stlm_selfplay.model import STLMForCausalLM
from stlm_selfplay.runs import list_checkpoints, load_model
from stlm_selfplay.train.evaluate import evaluate_bpb
from stlm_selfplay.train.metrics import read_metrics
from stlm_selfplay.train.pretrain import pretrain


def test_val_bpb_falls_and_matches_evaluate_bpb(tmp_path):
    data = text_file(tmp_path)
    cfg = tiny_config(data, "learn", steps=60, **{"logging.eval_every": 20, "run.checkpoint_every": 60})
    val_ids = val_sequences(prepare_data(cfg.data), cfg.data.seq_len, cfg.data.val_max_sequences)
    torch.manual_seed(cfg.run.seed)
    initial = evaluate_bpb(STLMForCausalLM(build_model_config(cfg.model)), val_ids, batch_size=8)
    summary = pretrain(cfg)
    evals = read_metrics(tmp_path / "runs" / "learn" / "metrics.jsonl", "val")
    assert [e["step"] for e in evals] == [20, 40, 60]
    assert evals[-1]["bpb"] <= 0.75 * initial["bpb"], (initial, evals)
    assert evals[-1]["bpb"] < evals[0]["bpb"]
    assert isinstance(evals[-1]["sample"], str)
    # the logged val bpb is exactly what evaluate_bpb gives for the saved checkpoint
    again = evaluate_bpb(load_model("runs/learn"), val_ids, batch_size=5)
    assert abs(again["bpb"] - evals[-1]["bpb"]) < 1e-5 and abs(again["loss"] - summary["val_loss"]) < 1e-5
    assert (tmp_path / "runs" / "learn" / "config.yaml").is_file()


def test_resume_is_exact(tmp_path):
    """N steps, stop, resume N more == 2N straight: same parameters, same logged losses."""
    data = text_file(tmp_path)
    extra = {"optimizer.name": "muon", "optimizer.grad_accum": 2, "model.overrides.dropout": 0.1}
    pretrain(tiny_config(data, "straight", steps=8, **extra))
    pretrain(tiny_config(data, "split", steps=8, **extra), max_steps=3)
    assert [p.name for p in list_checkpoints("runs/split")] == ["step_3"]
    pretrain(tiny_config(data, "split", steps=8, **extra))
    straight, split = final_weights(tmp_path / "runs/straight"), final_weights(tmp_path / "runs/split")
    assert straight.keys() == split.keys()
    assert all(torch.equal(straight[k], split[k]) for k in straight)
    assert train_losses("runs/split") == train_losses("runs/straight")
    assert len(train_losses("runs/straight")) == 8


def test_two_gloo_ranks_equal_one_process_with_double_batch(tmp_path):
    data = text_file(tmp_path)
    prepare_data(tiny_config(data, "x").data)  # build the cache once, outside the timed runs
    pretrain(tiny_config(data, "single", steps=5, **{"data.batch_size": 8, "data.prefetch": 0}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cfg_path = tmp_path / "empty.yaml"
    cfg_path.write_text("{}\n")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "stlm_selfplay", "pretrain", str(cfg_path), *tiny_overrides(data, "ddp", steps=5, **{"data.batch_size": 4})]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single, ddp = train_losses("runs/single"), train_losses("runs/ddp")
    assert [s for s, _ in single] == [s for s, _ in ddp] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([l for _, l in ddp], [l for _, l in single], rtol=0, atol=1e-5)
    a, b = final_weights(tmp_path / "runs/single"), final_weights(tmp_path / "runs/ddp")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_sequences_longer_than_the_model_context_are_a_user_error(tmp_path):
    data = text_file(tmp_path)
    with pytest.raises(UserError, match="data.seq_len=128 exceeds the model's max_seq_len=64"):
        pretrain(tiny_config(data, "long", **{"data.seq_len": 128}))
    assert not (tmp_path / "runs").exists()
