"""The pretraining loop: `pretrain(cfg)` trains, evaluates, logs and checkpoints one run.

Per optimizer step s (all ranks in lockstep):

    lr = peak_lr * lr_factor(s)
    for each of grad_accum micro-batches:    loss = ObjectiveSet(model(ids), batch) / grad_accum;  backward
    clip the gradient norm;  optimizer step
    every log_every: a train row in metrics.jsonl;   every eval_every: val loss/bpb + a sample
    every checkpoint_every (and at the end, and on SIGINT/SIGTERM): a checkpoint

Everything that can be wrong with the user's input (config, model fields, data) is checked before
the run folder is written. A run resumes exactly: same parameters and same logged losses as an
uninterrupted run (the data order and learning rate are pure functions of the step).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from stlm_selfplay.config import RootConfig, build_model_config
from stlm_selfplay.data.cache import prepare_data
from stlm_selfplay.data.loader import BatchStream, PackedSequences, check_one_batch_fits, val_sequences
from stlm_selfplay.errors import UserError
from stlm_selfplay.objectives import Batch, build_objectives
from stlm_selfplay.runs import CONFIG_FILE, resume_checkpoint, run_dir as run_dir_of_config, save_config
from stlm_selfplay.train import distributed as D
from stlm_selfplay.train.checkpoint import (capture_rng_state, load_model_weights, load_trainer_state,
                                            read_best, restore_rng_state, save_checkpoint)
from stlm_selfplay.train.evaluate import metrics_from_sums, nll_sums, sample_text
from stlm_selfplay.train.metrics import MetricsLogger, progress_bar, summary_table
from stlm_selfplay.train.optim import build_optimizer, lr_factor, set_lr
from stlm_selfplay.train.signals import install_stop_handlers


def autocast_for(device: torch.device, dtype: str):
    """bf16 autocast on CUDA (dtype auto|bfloat16); full fp32 elsewhere or with dtype float32."""
    use_bf16 = dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda")
    if not use_bf16:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def prepare_data_on_rank0(data_cfg, dist: D.DistInfo) -> Path:
    """Rank 0 builds (or finds) the data cache; the others wait and use it. Errors reach every rank."""
    result: tuple[str | None, str | None] = (None, None)
    if dist.is_main:
        try:
            result = (str(prepare_data(data_cfg)), None)
        except UserError as err:
            result = (None, str(err))
    folder, error = D.broadcast_object(result)
    if error is not None:
        raise UserError(error)
    return Path(folder)


def pretrain(cfg: RootConfig, max_steps: int | None = None) -> dict:
    """Run (or resume) pretraining per `cfg`; returns the summary. Launch under torchrun for DDP.

    `max_steps` stops this call after that many optimizer steps (with a checkpoint), leaving the
    schedule untouched: the next call resumes where it stopped.
    """
    return D.launch(cfg.run, lambda device, dist: _pretrain(cfg, device, dist, max_steps))


def _pretrain(cfg: RootConfig, device: torch.device, dist: D.DistInfo, max_steps: int | None) -> dict:
    from stlm_selfplay.model import STLMForCausalLM

    # -- check everything before writing anything
    model_config = build_model_config(cfg.model)
    if cfg.data.seq_len > model_config.max_seq_len:
        raise UserError(f"data.seq_len={cfg.data.seq_len} exceeds the model's max_seq_len={model_config.max_seq_len}; "
                        "lower data.seq_len or set model.overrides.max_seq_len")
    objectives = build_objectives(cfg.objectives).to(device)
    run_dir = run_dir_of_config(cfg)
    resume_from = resume_checkpoint(cfg, run_dir)
    data_folder = prepare_data_on_rank0(cfg.data, dist)
    train_data = PackedSequences(data_folder, "train", cfg.data.seq_len, cfg.data.shift_epochs)
    val_ids = val_sequences(data_folder, cfg.data.seq_len, cfg.data.val_max_sequences)
    accum, seq_len = cfg.optimizer.grad_accum, cfg.data.seq_len
    global_batch = cfg.data.batch_size * dist.world_size

    # -- model, optimizer, state
    torch.manual_seed(cfg.run.seed)  # the trainer owns this process's global RNG: model init
    model = STLMForCausalLM(model_config).to(device)
    optimizer = build_optimizer(model, cfg.optimizer, device)
    start_step, bytes_seen, best_val = 0, 0, None
    torch.manual_seed(cfg.run.seed + 7919 * (dist.rank + 1))  # dropout: different per rank
    if resume_from is not None:
        load_model_weights(model, resume_from)
        state = load_trainer_state(resume_from)
        if state["global_batch"] != global_batch:
            raise UserError(f"checkpoint '{resume_from}' was trained with a global batch of {state['global_batch']} "
                            f"sequences, this run has {global_batch}; keep data.batch_size x processes the same")
        optimizer.load_state_dict(state["optimizer"])
        start_step, bytes_seen, best_val = state["step"], state["bytes_seen"], state["best_val_loss"]
        if len(state["rng"]) == dist.world_size:
            restore_rng_state(state["rng"][dist.rank])
    end_step = cfg.schedule.steps if max_steps is None else min(cfg.schedule.steps, start_step + max_steps)

    check_one_batch_fits(train_data, global_batch)  # the last check before the run folder is written

    # -- run folder (rank 0)
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / CONFIG_FILE)
    config_dict = OmegaConf.to_container(OmegaConf.structured(cfg))
    logger = MetricsLogger(run_dir, cfg.logging, config_dict, active=dist.is_main,
                           resume_step=start_step if resume_from is not None else None)
    if dist.is_main:
        where = f"resuming from {resume_from}" if resume_from is not None else "starting fresh"
        print(f"run {run_dir}: {model.num_parameters():,} parameters, {len(train_data):,} train sequences of "
              f"{seq_len} ids, {len(val_ids)} val sequences, {dist.world_size} process(es) on {device}; {where}")

    train_model: torch.nn.Module = model
    if dist.enabled:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.run.compile:
        train_model = torch.compile(train_model)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    autocast = autocast_for(device, cfg.run.dtype)
    stream = BatchStream(train_data, cfg.data.batch_size, cfg.run.seed, start=start_step * accum, rank=dist.rank,
                         world_size=dist.world_size, prefetch=cfg.data.prefetch, pin_memory=device.type == "cuda")
    stop = install_stop_handlers()
    bar = progress_bar(cfg.schedule.steps, start_step, dist.is_main and cfg.logging.progress)
    bytes_per_step = global_batch * accum * (seq_len - 1)
    last = {"train": {}, "val": {}}
    wait_time = step_time = 0.0
    step = start_step

    def evaluate(step: int) -> dict:
        sums = D.all_reduce_sum(nll_sums(model, val_ids[dist.rank::dist.world_size], cfg.logging.val_batch_size,
                                         device, autocast))
        metrics = metrics_from_sums(sums)
        if dist.is_main and cfg.logging.sample_bytes:
            metrics["sample"] = sample_text(model, cfg.logging.sample_prompt, cfg.logging.sample_bytes,
                                            cfg.logging.sample_temperature, cfg.run.seed + step)
        logger.log(step, "val", metrics)
        if dist.is_main:
            bar.write(f"step {step}: val loss {metrics['loss']:.4f}, val bpb {metrics['bpb']:.4f}")
        return metrics

    def checkpoint(step: int, val_loss: float | None) -> None:
        rng = D.all_gather_objects(capture_rng_state())
        if dist.is_main:
            state = {"step": step, "micro_step": step * accum, "global_batch": global_batch, "world_size": dist.world_size,
                     "optimizer": optimizer.state_dict(), "rng": rng, "bytes_seen": bytes_seen,
                     "best_val_loss": best_val, "lr_factor": lr_factor(max(step - 1, 0), cfg.schedule)}
            save_checkpoint(run_dir, step, model, state, cfg.run.keep_last, val_loss)
        D.barrier()

    if dist.is_main and step >= end_step:
        print(f"nothing to do: the run is at step {step} of {cfg.schedule.steps}")
    try:
        while step < end_step:
            started = time.perf_counter()
            set_lr(optimizer, lr_factor(step, cfg.schedule))
            step_metrics: dict[str, float] = {}
            for micro in range(accum):
                waited = time.perf_counter()
                ids = next(stream).to(device, non_blocking=True)
                wait_time += time.perf_counter() - waited
                batch = Batch(ids, step=step, total_steps=cfg.schedule.steps)
                sync = train_model.no_sync() if dist.enabled and micro < accum - 1 else contextlib.nullcontext()
                with sync:
                    with autocast():
                        output = train_model(ids, train_progress=(step, cfg.schedule.steps), **objectives.model_kwargs(batch))
                        result = objectives(output, batch)
                    (result.loss / accum).backward()
                for k, v in result.metrics.items():
                    step_metrics[k] = step_metrics.get(k, 0.0) + v / accum
            if cfg.optimizer.grad_clip > 0:
                step_metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optimizer.grad_clip))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bytes_seen += bytes_per_step
            step_time += time.perf_counter() - started
            bar.update(1)

            if step % cfg.logging.log_every == 0 or step == end_step:
                metrics = {k: D.all_reduce_mean(v, device) for k, v in step_metrics.items()}
                metrics.update(lr=optimizer.param_groups[0]["lr"], bytes_per_s=bytes_per_step * (step - start_step) / step_time,
                               data_wait=wait_time / step_time, bytes_seen=bytes_seen)
                logger.log(step, "train", metrics)
                last["train"] = metrics
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", bpb=f"{metrics.get('ce/bpb', float('nan')):.3f}",
                                bytes_s=f"{metrics['bytes_per_s']:.3g}")
            stopping = D.any_rank(stop.requested, device)
            finished = step == end_step or stopping
            val_loss = None
            if len(val_ids) and (step % cfg.logging.eval_every == 0 or finished):
                last["val"] = evaluate(step)
                val_loss = last["val"]["loss"]
                best_val = val_loss if best_val is None else min(best_val, val_loss)
            if step % cfg.run.checkpoint_every == 0 or finished:
                checkpoint(step, val_loss)
            if stopping:
                if dist.is_main:
                    bar.write(f"stopped by {stop.signal_name or 'a signal'} at step {step}; checkpoint saved, "
                              "run the same command again to resume")
                break
    finally:
        stream.close()
        stop.restore()
        bar.close()
        logger.close()

    summary = {
        "run": str(run_dir), "step": step, "of_steps": cfg.schedule.steps,
        "train_loss": last["train"].get("loss", float("nan")),
        "val_loss": last["val"].get("loss", float("nan")), "val_bpb": last["val"].get("bpb", float("nan")),
        "best_val_loss": best_val if best_val is not None else float("nan"),
        "bytes_seen": bytes_seen, "bytes_per_s": bytes_per_step * (step - start_step) / step_time if step_time else 0.0,
        "data_wait_fraction": wait_time / step_time if step_time else 0.0, "stopped_by_signal": stop.requested,
        "best_checkpoint": (read_best(run_dir) or {}).get("step", ""),
    }
    if dist.is_main:
        print(summary_table(summary))
    return summary

