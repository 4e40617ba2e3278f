"""GPU training bytes/s and MFU of plain byte GPT, pooled STLM and BPE baseline at stlm-10m/50m/100m; sampler bytes/s.

On CUDA: bf16 autocast, torch.compile, fused AdamW.

Variants (`--variants`, default all three: bench_lm's (b), (c), (d)), for each preset in `--presets`:

- plain:  the preset's plain twin (`model.config.plain_twin`: its trunk at one byte per position,
          no local encoder or decoder, d_local = d_model), at the preset's context in bytes;
- pooled: the preset itself;
- bpe:    the BPE baseline (`model/bpe_baseline.py`): the plain twin's trunk over BPE token ids
          with a tied embedding; vocabulary `--bpe-vocab` (default GPT-2's 50,257: only its size
          matters here), context = preset context / BYTES_PER_TOKEN tokens.

Each variant trains `--steps` timed AdamW steps (after two warm-up steps that also compile) of
next-id cross-entropy on random ids (the speed does not depend on them), `--batch` rows of its
context; so every variant reads batch x preset context bytes per step (bpe: at BYTES_PER_TOKEN). Then

    bytes/s = steps * batch * (context - 1) / seconds               (ids predicted; bpe: x BYTES_PER_TOKEN)
    MFU     = bytes/s * flops_per_byte / peak dense bf16 FLOP/s of the GPU

with flops_per_byte the model package's count (forward + backward): `flops_per_byte(config)` for
plain and pooled, `bpe_flops_per_token(config, V) / BYTES_PER_TOKEN` for bpe; the peak is looked
up by device name in PEAKS. The BPE bytes/s is an ASSUMPTION, tokens/s x BYTES_PER_TOKEN = 4
UTF-8 bytes per token (GPT-2's BPE on English text; fewer on code); its MFU (tokens/s x FLOPs per
token / peak) does not depend on it. The JSON states both (`bpe`). Finally the KV-cached sampler
(`stlm_selfplay.model.generate`) writes `--new-bytes` bytes for 256 prompts at once with
stlm-10m: sampler bytes/s. Each row goes to stderr as it finishes (a run cut short keeps what it
measured); then the JSON line and a table. Goal: MFU >= 35% for the pooled stlm-100m.

Time: not yet measured on a GPU. Compile dominates, once per (preset, variant): nine compiles for
the default grid. Where a device command is capped at 10 minutes, run one preset per command
(`--presets stlm-100m`).

    python benchmarks/bench_gpu.py [--presets stlm-10m,stlm-50m,stlm-100m] [--variants plain,pooled,bpe]
                                   [--steps N] [--batch B] [--bpe-vocab V]
    python benchmarks/bench_gpu.py --dry-run     # CPU, tiny config, fp32, no compile: the plumbing (CI)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_parser, report  # noqa: E402

from stlm_selfplay.config import OptimizerConfig  # noqa: E402
from stlm_selfplay.model import STLMConfig, STLMForCausalLM, flops_per_byte, generate, load_preset  # noqa: E402
from stlm_selfplay.model.bpe_baseline import BPEBaselineLM  # noqa: E402
from stlm_selfplay.model.config import plain_twin, preset_fields  # noqa: E402
from stlm_selfplay.model.flops import GPT2_VOCAB, bpe_flops_per_token  # noqa: E402
from stlm_selfplay.objectives import Batch, build_objectives  # noqa: E402
from stlm_selfplay.train.optim import build_optimizer  # noqa: E402

# dense bf16 peak FLOP/s (no sparsity) by a substring of torch.cuda.get_device_name()
PEAKS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
DRY_RUN_PEAK = 1e12  # a nominal 1 TFLOP/s so --dry-run exercises the MFU arithmetic
TINY = dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=128, d_local=32, local_heads=2, max_seq_len=128)
VARIANTS = ("plain", "pooled", "bpe")
BYTES_PER_TOKEN = 4.0  # ASSUMED UTF-8 bytes per BPE token (GPT-2's BPE on English text): bpe bytes/s, context
DRY_RUN_BPE_VOCAB = 512  # --dry-run's BPE vocabulary (the tiny model's embedding stays tiny)


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return DRY_RUN_PEAK
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAKS.items() if key in name), None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def variant_config(variant: str, fields: dict) -> STLMConfig:
    """pooled: the preset's `fields` as they are; plain: their plain twin; bpe: the plain twin's
    trunk at a context of max_seq_len / BYTES_PER_TOKEN tokens."""
    if variant == "pooled":
        return STLMConfig(**fields)
    twin = plain_twin(fields)
    if variant == "bpe":
        twin["max_seq_len"] = round(fields["max_seq_len"] / BYTES_PER_TOKEN)
    return STLMConfig(**twin)


def train_throughput(name: str, variant: str, config: STLMConfig, device: torch.device, batch: int, steps: int,
                     compile_: bool, vocab: int) -> dict:
    """Bytes/s and MFU of `steps` timed training steps (after two warm-up steps that also compile)."""
    torch.manual_seed(0)
    if compile_:
        torch.compiler.reset()  # a fresh compile cache per variant: no recompile limit reached across models
    if variant == "bpe":
        model = BPEBaselineLM(config, vocab).to(device)
        forward_loss = torch.compile(model.loss) if compile_ else model.loss  # forward + next-token CE
        ids = torch.randint(0, vocab, (batch, config.max_seq_len), device=device)
        bytes_per_id, fpb = BYTES_PER_TOKEN, bpe_flops_per_token(config, vocab) / BYTES_PER_TOKEN
    else:
        model = STLMForCausalLM(config).to(device)
        objective = build_objectives([{"name": "ce"}]).to(device)
        step_model = torch.compile(model) if compile_ else model

        def forward_loss(ids: torch.Tensor) -> torch.Tensor:
            return objective(step_model(ids), Batch(ids)).loss

        ids = torch.randint(0, 256, (batch, config.max_seq_len), device=device)
        bytes_per_id, fpb = 1.0, flops_per_byte(config)
    optimizer = build_optimizer(model, OptimizerConfig(lr=1e-4), device)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step() -> None:
        with autocast:
            loss = forward_loss(ids)
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
    ids_per_s = steps * batch * (config.max_seq_len - 1) / seconds
    bytes_per_s = ids_per_s * bytes_per_id
    peak = peak_flops(device)
    row = {"preset": name, "variant": variant, "params": sum(p.numel() for p in model.parameters()), "batch": batch,
           "seq_len": config.max_seq_len, "steps": steps, "compile_warmup_s": warmup_s, "bytes_per_s": bytes_per_s,
           "flops_per_byte": fpb, "tflops": bytes_per_s * fpb / 1e12, "mfu": bytes_per_s * fpb / peak if peak else None}
    if variant == "bpe":  # seq_len is in tokens; bytes_per_s and flops_per_byte rest on BYTES_PER_TOKEN
        row.update(tokens_per_s=ids_per_s, flops_per_token=fpb * BYTES_PER_TOKEN, vocab=vocab)
    return row


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
    parser.add_argument("--variants", default=",".join(VARIANTS), help="plain, pooled, bpe (comma-separated)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per preset and variant")
    parser.add_argument("--batch", type=int, default=32, help="rows per step (each the variant's context)")
    parser.add_argument("--bpe-vocab", type=int, default=GPT2_VOCAB, help="the BPE baseline's vocabulary size")
    parser.add_argument("--new-bytes", type=int, default=256, help="bytes written per prompt by the sampler")
    args = parser.parse_args()
    variants = args.variants.split(",")
    if unknown := [v for v in variants if v not in VARIANTS]:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; valid: {', '.join(VARIANTS)}")
    dry = args.dry_run or args.quick or not torch.cuda.is_available()
    device = torch.device("cpu" if dry else "cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    if dry:
        torch.set_num_threads(1)
        presets = {"tiny-dry-run": TINY}
        args.steps, args.batch, args.new_bytes, args.bpe_vocab = 3, 4, 16, DRY_RUN_BPE_VOCAB
    else:
        presets = {name: preset_fields(name) for name in args.presets.split(",")}
    rows = []
    for name, fields in presets.items():
        for variant in variants:
            rows.append(train_throughput(name, variant, variant_config(variant, fields), device, args.batch,
                                         args.steps, not dry, args.bpe_vocab))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    sampler_config = STLMConfig(**TINY) if dry else load_preset("stlm-10m")
    rows.append(sampler_throughput(sampler_config, device, 8 if dry else 256, args.new_bytes))
    ratios = {}
    for name in presets:  # the pooled model's training speed over each baseline's, same preset and run
        by = {row["variant"]: row for row in rows if row["preset"] == name}
        for other in ("plain", "bpe"):
            if "pooled" in by and other in by:
                ratio = by["pooled"]["bytes_per_s"] / by[other]["bytes_per_s"]
                ratios[f"{name} pooled_over_{other}_bytes_per_s"] = ratio
    pooled = [row for row in rows if row.get("variant") == "pooled" and row["mfu"] is not None]
    goals = {} if dry or not pooled else {f"mfu {pooled[-1]['preset']} pooled": (pooled[-1]["mfu"], 0.35)}
    report("gpu", rows, args=args, ratios=ratios, goals=goals,
           extra={"command": " ".join(sys.argv), "dry_run": dry, "device": str(device),
                  "peak_flops": peak_flops(device), "dtype": "float32" if dry else "bfloat16 autocast",
                  "compile": not dry, "variants": variants,
                  "bpe": {"vocab": args.bpe_vocab, "bytes_per_token_assumed": BYTES_PER_TOKEN,
                          "note": "random token ids; bytes/s = tokens/s x bytes_per_token_assumed (an assumption: "
                                  "GPT-2 BPE on English text); its MFU does not depend on it"}})


if __name__ == "__main__":
    main()
