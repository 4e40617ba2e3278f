"""Early exits of a trained model: val bits-per-byte at every trunk exit, and greedy sampler speed
of the full model, of an early exit, and of self-speculative decoding drafted by that exit.

`stlm compare` reports these for early-exit variants (an `early_exit` objective).
"""

from __future__ import annotations

from pathlib import Path


def exit_numbers(cfg, folder: Path, new_bytes: int = 128, n_prompts: int = 4) -> dict:
    """Per-exit val bpb and early-exit / self-speculative sampler speed of a finished run."""
    import time

    from stlm_selfplay.data.cache import cache_folder
    from stlm_selfplay.data.loader import val_sequences
    from stlm_selfplay.model import generate, speculative_generate
    from stlm_selfplay.model.tokenizer import PAD_ID
    from stlm_selfplay.runs import load_model
    from stlm_selfplay.train.evaluate import evaluate_bpb

    model = load_model(folder)
    val_ids = val_sequences(cache_folder(cfg.data), cfg.data.seq_len, cfg.data.val_max_sequences)
    n_layers = model.config.n_layers
    bpb = {layer: evaluate_bpb(model, val_ids, cfg.logging.val_batch_size, exit_layer=layer)["bpb"]
           for layer in range(n_layers)}
    exit_layer = (n_layers - 1) // 2
    new_bytes = min(new_bytes, model.config.max_seq_len // 2)
    prompts = [bytes(int(t) for t in row[: model.config.max_seq_len // 4] if t < PAD_ID) for row in val_ids[:n_prompts]]

    def bytes_per_s(run) -> float:
        started, total = time.perf_counter(), 0
        for prompt in prompts:
            total += len(run(prompt).text)
        return total / (time.perf_counter() - started)

    stats = []

    def speculative(prompt: bytes):
        completions, run_stats = speculative_generate(model, [prompt], new_bytes, exit_layer=exit_layer)
        stats.append(run_stats)
        return completions[0]

    sampler = {
        "full_bytes_per_s": bytes_per_s(lambda p: generate(model, [p], new_bytes, greedy=True)[0]),
        "exit_bytes_per_s": bytes_per_s(lambda p: generate(model, [p], new_bytes, greedy=True, exit_layer=exit_layer)[0]),
        "speculative_bytes_per_s": bytes_per_s(speculative),
    }
    drafted, accepted = sum(s.drafted for s in stats), sum(s.accepted for s in stats)
    sampler["acceptance_rate"] = accepted / drafted if drafted else 0.0
    return {"val_bpb": {str(k): v for k, v in bpb.items()}, "exit_layer": exit_layer, **sampler}
