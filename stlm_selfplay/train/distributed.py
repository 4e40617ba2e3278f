"""Devices and DDP: one process per GPU (or CPU worker) under `torchrun`, plain helpers.

    torchrun --nproc_per_node N -m stlm_selfplay pretrain CONFIG.yaml        (one machine)
    torchrun --nnodes M --node_rank R --master_addr HOST --master_port 29500 \\
             --nproc_per_node N -m stlm_selfplay pretrain CONFIG.yaml        (each of M machines)

`init_distributed` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) and joins the
process group (nccl on CUDA, gloo on CPU); without it the helpers below are no-ops, so one code
path serves one process and many. Only rank 0 writes files (`is_main`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from stlm_selfplay.errors import UserError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    owns_group: bool = False  # True when init_distributed created the process group (so it ends it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def select_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' -> cuda > mps > cpu; an explicit device that is absent is a `UserError`."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("run.device=cuda but no CUDA GPU is visible; use run.device=auto or cpu")
        return torch.device("cuda", local_rank)
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("run.device=mps but MPS is not available; use run.device=auto or cpu")
    return torch.device(name)


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); else a 1-process info."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    owns_group = not dist.is_initialized()
    if owns_group:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world_size, owns_group)


def shutdown_distributed(info: DistInfo) -> None:
    """End the process group if `init_distributed` created it (a caller's group is left alone)."""
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def launch(run_cfg, body, *args):
    """Run `body(device, dist_info, *args)` with the run's device, process group (under torchrun)
    and CPU thread count (`run.cpu_threads`), restoring torch's thread count and leaving the
    process group afterwards. The one entry used by `pretrain` and `selfplay`."""
    device = select_device(run_cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    info = init_distributed(device)
    threads = torch.get_num_threads()
    if run_cfg.cpu_threads:
        torch.set_num_threads(run_cfg.cpu_threads)
    try:
        return body(device, info, *args)
    finally:
        torch.set_num_threads(threads)
        shutdown_distributed(info)


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over ranks (returns a new tensor; identity on one process)."""
    out = values.clone()
    if _active():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_reduce_mean(value: float, device: torch.device) -> float:
    """Mean of a float over ranks."""
    if not _active():
        return float(value)
    return float(all_reduce_sum(torch.tensor([float(value)], dtype=torch.float64, device=device))[0]) / dist.get_world_size()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when any rank says True (e.g. a stop signal on one of them)."""
    if not _active():
        return bool(flag)
    return bool(all_reduce_sum(torch.tensor([int(flag)], device=device))[0] > 0)


def all_gather_objects(obj) -> list:
    """Every rank's `obj` (picklable, small), in rank order; `[obj]` on one process."""
    if not _active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    """Rank `src`'s `obj` on every rank."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if _active():
        dist.barrier()


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model under DDP and/or torch.compile wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model
