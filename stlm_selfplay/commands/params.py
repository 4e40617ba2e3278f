"""`stlm params MODEL_CONFIG`: parameter table of a model config vs a GPT-2-vocabulary baseline.

MODEL_CONFIG is a preset name (micro, tiny, stlm-10m, stlm-50m, stlm-100m) or a model YAML path.
The baseline has the same trunk with a 50,257-token embedding and head (tied and untied).
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_config", metavar="MODEL_CONFIG",
                        help="preset name (micro, tiny, stlm-10m, stlm-50m, stlm-100m) or model YAML path")
    parser.add_argument("--json", action="store_true", help="print the numbers as one JSON object")


def format_table(name: str, table: dict, flops: float) -> str:
    """The human-readable table printed by `stlm params`."""
    rows = [
        ("byte embedding + local encoder", table["embedding_encoder"]),
        ("global trunk", table["trunk"]),
        ("local decoder + head", table["decoder_head"]),
        *([("value head", table["value_head"])] if table["value_head"] else []),
        ("total", table["total"]),
        ("", None),
        ("same trunk, GPT-2 vocabulary (tied)", table["gpt2_total_tied"]),
        ("same trunk, GPT-2 vocabulary (untied)", table["gpt2_total_untied"]),
        ("", None),
        ("embedding + head: ours", table["embedding_head"]),
        ("embedding + head: GPT-2 tied", table["gpt2_embedding_head_tied"]),
        ("embedding + head: GPT-2 untied", table["gpt2_embedding_head_untied"]),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [f"model {name}", f"{'part'.ljust(width)}  {'parameters':>12}"]
    for label, value in rows:
        lines.append("" if value is None else f"{label.ljust(width)}  {value:>12,}")
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    lines += [
        "",
        f"embedding+head parameters saved vs GPT-2: {pct(table['saved_embedding_head_tied'])} (tied), "
        f"{pct(table['saved_embedding_head_untied'])} (untied)",
        f"counting encoder and decoder too: {pct(table['saved_all_local_tied'])} (tied), "
        f"{pct(table['saved_all_local_untied'])} (untied)",
        f"training FLOPs per byte: {flops:,.0f}",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from stlm_selfplay.model import flops_per_byte, load_preset, param_table

    config = load_preset(args.model_config)
    table = param_table(config)
    flops = flops_per_byte(config)
    if args.json:
        print(json.dumps({"model": args.model_config, **table, "flops_per_byte": flops}))
    else:
        print(format_table(args.model_config, table, flops))
    return 0
