"""GPU training throughput and MFU for stlm-10m/50m/100m (bf16 + torch.compile), and sampler bytes/s.

For each preset: `--steps` timed optimizer steps (after compile and warm-up) of next-byte CE on
random bytes at the preset's context, bf16 autocast, AdamW. Then

    MFU = bytes/s * flops_per_byte(config) / peak dense bf16 FLOP/s of the GPU

with `flops_per_byte` the model package's estimate (forward + backward) and the peak looked up
by device name in PEAKS. Finally the KV-cached sampler (`stlm_selfplay.model.generate`) writes
`--new-bytes` bytes for 256 prompts at once with stlm-10m: sampler bytes/s. One command, about
4 minutes on an H100 (compile dominates); prints the JSON line and a table. Goal: MFU >= 35% for
stlm-100m.

    python benchmarks/bench_gpu.py [--presets stlm-10m,stlm-50m,stlm-100m] [--steps N] [--batch B]
    python benchmarks/bench_gpu.py --dry-run     # CPU, tiny config, fp32, no compile: the plumbing (CI)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_parser, report  # noqa: E402

from stlm_selfplay.config import OptimizerConfig  # noqa: E402
from stlm_selfplay.model import STLMConfig, STLMForCausalLM, flops_per_byte, generate, load_preset  # noqa: E402
from stlm_selfplay.objectives import Batch, build_objectives  # noqa: E402
from stlm_selfplay.train.optim import build_optimizer  # noqa: E402

# dense bf16 peak FLOP/s (no sparsity) by a substring of torch.cuda.get_device_name()
PEAKS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
DRY_RUN_PEAK = 1e12  # a nominal 1 TFLOP/s so --dry-run exercises the MFU arithmetic
TINY = dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=128, d_local=32, local_heads=2, max_seq_len=128)


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return DRY_RUN_PEAK
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAKS.items() if key in name), None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_throughput(name: str, config: STLMConfig, device: torch.device, batch: int, steps: int, compile_: bool) -> dict:
    """Bytes/s and MFU of `steps` timed training steps (after two warm-up steps that also compile)."""
    torch.manual_seed(0)
    model = STLMForCausalLM(config).to(device)
    optimizer = build_optimizer(model, OptimizerConfig(lr=1e-4), device)
    objective = build_objectives([{"name": "ce"}]).to(device)
    step_model = torch.compile(model) if compile_ else model
    ids = torch.randint(0, 256, (batch, config.max_seq_len), device=device, generator=None)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step() -> None:
        with autocast:
            loss = objective(step_model(ids), Batch(ids)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    started = time.perf_counter()
    for _ in range(2):
        step()
    sync(device)
    warmup_s = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = time.perf_counter() - started
    bytes_per_s = steps * batch * (config.max_seq_len - 1) / seconds
    fpb = flops_per_byte(config)
    peak = peak_flops(device)
    return {"preset": name, "params": model.num_parameters(), "batch": batch, "seq_len": config.max_seq_len,
            "steps": steps, "compile_warmup_s": warmup_s, "bytes_per_s": bytes_per_s, "flops_per_byte": fpb,
            "tflops": bytes_per_s * fpb / 1e12, "mfu": bytes_per_s * fpb / peak if peak else None}


def sampler_throughput(config: STLMConfig, device: torch.device, prompts: int, new_bytes: int) -> dict:
    """Bytes/s of the KV-cached sampler writing `new_bytes` for `prompts` prompts at once."""
    torch.manual_seed(0)
    model = STLMForCausalLM(config).to(device).eval()
    if device.type == "cuda":
        model = model.to(torch.bfloat16)
    texts = [f"prompt {i}: ".encode() for i in range(prompts)]
    generator = torch.Generator(device="cpu").manual_seed(0)
    generate(model, texts[:4], 4, generator=generator)  # warm-up
    sync(device)
    started = time.perf_counter()
    out = generate(model, texts, new_bytes, generator=generator)
    sync(device)
    seconds = time.perf_counter() - started
    written = sum(len(o.text) for o in out)
    return {"preset": "sampler", "batch": prompts, "new_bytes": new_bytes, "bytes_per_s": written / seconds, "seconds": seconds}


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny config, no compile (CI)")
    parser.add_argument("--presets", default="stlm-10m,stlm-50m,stlm-100m", help="model presets, comma-separated")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per preset")
    parser.add_argument("--batch", type=int, default=32, help="sequences per step (each the preset's context)")
    parser.add_argument("--new-bytes", type=int, default=256, help="bytes written per prompt by the sampler")
    args = parser.parse_args()
    dry = args.dry_run or args.quick or not torch.cuda.is_available()
    device = torch.device("cpu" if dry else "cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    if dry:
        torch.set_num_threads(1)
        configs = {"tiny-dry-run": STLMConfig(**TINY)}
        args.steps, args.batch, args.new_bytes = 3, 4, 16
    else:
        configs = {name: load_preset(name) for name in args.presets.split(",")}
    rows = [train_throughput(name, cfg, device, args.batch, args.steps, compile_=not dry) for name, cfg in configs.items()]
    sampler_config = next(iter(configs.values())) if dry else load_preset("stlm-10m")
    rows.append(sampler_throughput(sampler_config, device, 8 if dry else 256, args.new_bytes))
    last = rows[-2]
    goals = {} if dry or last["mfu"] is None else {f"mfu {last['preset']}": (last["mfu"], 0.35)}
    report("gpu", rows, args=args, goals=goals,
           extra={"command": " ".join(sys.argv), "dry_run": dry, "device": str(device),
                  "peak_flops": peak_flops(device), "dtype": "float32" if dry else "bfloat16 autocast",
                  "compile": not dry})


if __name__ == "__main__":
    main()
