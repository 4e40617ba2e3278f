"""Optimizers and learning-rate schedules.

Parameter groups (`split_parameters`):
- no decay: tensors with ndim < 2 (norms, biases, scalars) and embedding tables;
- muon (optimizer.name = muon): the 2-D weights of the trunk's linear layers (muon_scope: trunk),
  or of every linear layer with both sides wider than 1 (muon_scope: all: the local encoder and
  decoder too), updated by Muon (orthogonalised momentum: `Muon`, torch.optim.Muon's update with the
  Newton-Schulz iteration batched over same-shape matrices); everything else
  (embeddings, the tied byte head, norms, biases, 1-wide heads) stays with AdamW;
- decay: every other tensor, AdamW with decoupled weight decay.

Schedule (`lr_factor`), with w = warmup_steps, S = steps, r = min_lr_ratio, p = (s - w) / (S - w):

    warmup   s < w:  (s + 1) / w
    cosine:          r + (1 - r) * (1 + cos(pi * p)) / 2
    linear:          1 - (1 - r) * p
    wsd:             1 until s >= S - d, then 1 - (1 - r) * (s - (S - d)) / d,  d = decay_fraction * S
    constant:        1

Each param group keeps its peak learning rate in `group["peak_lr"]`; `set_lr` writes
peak_lr * lr_factor(step) into `group["lr"]`. The factor is a pure function of the step, so a
resumed run needs no scheduler state beyond the step.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch import nn
try:  # torch.optim.Muon's per-shape lr rule (private; tested with torch 2.13)
    from torch.optim._muon import _adjust_lr
except ImportError:  # another torch: `build_optimizer` falls back to torch.optim.Muon itself
    _adjust_lr = None


def split_parameters(model: nn.Module, use_muon: bool, muon_scope: str = "trunk") -> dict[str, list[tuple[str, nn.Parameter]]]:
    """{'decay': [...], 'no_decay': [...], 'muon': [...]} of (name, parameter), each trainable tensor once."""
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    trunk_linear = {id(m.weight) for name, m in model.named_modules()
                    if isinstance(m, nn.Linear)
                    and (is_trunk_module(name) or (muon_scope == "all" and min(m.weight.shape) > 1))}
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {"decay": [], "no_decay": [], "muon": []}
    for name, p in model.named_parameters():  # shared (tied) tensors appear once
        if not p.requires_grad:
            continue
        if p.ndim < 2 or id(p) in embedding_params:
            groups["no_decay"].append((name, p))
        elif use_muon and id(p) in trunk_linear and p.ndim == 2:
            groups["muon"].append((name, p))
        else:
            groups["decay"].append((name, p))
    return groups


def is_trunk_module(name: str) -> bool:
    """Modules of the global trunk (the patch-level transformer), by name."""
    return ".trunk." in f".{name}." or name.startswith("trunk.")


def newton_schulz(g: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float) -> torch.Tensor:
    """torch.optim.Muon's quintic Newton-Schulz orthogonalisation, batched over g [n, A, B] (modded-nanogpt):

        X = G / ||G||_F (bf16, transposed so that rows <= columns),  then `steps` times
        A = X X^T,   X <- a X + (b A + c A A) X,     (a, b, c) = coefficients

    Per matrix the same operations as torch's `_zeropower_via_newtonschulz` (addmm -> baddbmm)."""
    a, b, c = coefficients
    x = g.bfloat16()
    tall = g.size(-2) > g.size(-1)
    if tall:
        x = x.mT
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.mT
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.mT if tall else x


class Muon(torch.optim.Muon):
    """torch.optim.Muon (same hyperparameters, state and update per matrix) with the Newton-Schulz
    iteration run once per group of same-shape matrices (`newton_schulz`) instead of once per
    matrix: fewer, larger kernels (on one CPU core ~20% less optimizer time at 0.8M)."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, bufs = [], [], []
            self._init_group(group, params, grads, bufs)
            if not params:
                continue
            lr, momentum = float(group["lr"]), group["momentum"]
            torch._foreach_lerp_(bufs, grads, 1 - momentum)  # B <- mu B + (1 - mu) g
            updates = torch._foreach_lerp(grads, bufs, momentum) if group["nesterov"] else bufs
            by_shape: dict[tuple, list[int]] = defaultdict(list)
            for i, p in enumerate(params):
                by_shape[tuple(p.shape)].append(i)
            for shape, rows in by_shape.items():
                ortho = newton_schulz(torch.stack([updates[i] for i in rows]), group["ns_coefficients"],
                                      group["ns_steps"], group["eps"])
                scaled_lr = _adjust_lr(lr, group["adjust_lr_fn"], torch.Size(shape))
                for j, i in enumerate(rows):
                    params[i].mul_(1 - lr * group["weight_decay"])
                    params[i].add_(ortho[j], alpha=-scaled_lr)
        return loss


class OptimizerList:
    """Several optimizers stepped together (AdamW + Muon); state_dict is a dict of theirs."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict]:
        return [g for opt in self.optimizers for g in opt.param_groups]

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {str(i): opt.state_dict() for i, opt in enumerate(self.optimizers)}

    def load_state_dict(self, state: dict) -> None:
        if len(state) != len(self.optimizers):
            raise ValueError(f"optimizer state holds {len(state)} optimizers, expected {len(self.optimizers)}")
        for i, opt in enumerate(self.optimizers):
            opt.load_state_dict(state[str(i)])


def build_optimizer(model: nn.Module, cfg, device: torch.device) -> OptimizerList:
    """AdamW (fused on CUDA) over decay/no-decay groups, plus Muon for trunk (or all) matrices if asked."""
    groups = split_parameters(model, use_muon=cfg.name == "muon", muon_scope=cfg.muon_scope)
    adam_groups = [
        {"params": [p for _, p in groups["decay"]], "weight_decay": cfg.weight_decay, "peak_lr": cfg.lr},
        {"params": [p for _, p in groups["no_decay"]], "weight_decay": 0.0, "peak_lr": cfg.lr},
    ]
    adam_groups = [g for g in adam_groups if g["params"]]
    optimizers: list[torch.optim.Optimizer] = [torch.optim.AdamW(
        adam_groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=device.type == "cuda" or None)]
    if groups["muon"]:
        optimizers.append((Muon if _adjust_lr is not None else torch.optim.Muon)(
            [{"params": [p for _, p in groups["muon"]], "peak_lr": cfg.muon_lr}],
            lr=cfg.muon_lr, weight_decay=cfg.weight_decay, momentum=cfg.muon_momentum))
    return OptimizerList(optimizers)


LR_SCHEDULES = ("cosine", "linear", "wsd", "constant")  # the `kind`s lr_factor knows (module doc)


def lr_factor(step: int, cfg) -> float:
    """Multiplier of the peak learning rate at optimizer step `step` (0-based); see module doc."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.kind == "constant":
        return 1.0
    r = cfg.min_lr_ratio
    if cfg.kind == "wsd":
        decay_steps = max(1, round(cfg.decay_fraction * cfg.steps))
        decay_start = cfg.steps - decay_steps
        return 1.0 if step < decay_start else 1.0 - (1.0 - r) * min(1.0, (step - decay_start) / decay_steps)
    p = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    if cfg.kind == "cosine":
        return r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * p))
    return 1.0 - (1.0 - r) * p  # linear


def set_lr(optimizer, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["peak_lr"] * factor
