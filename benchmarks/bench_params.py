"""Parameter accounting of every preset vs a GPT-2-vocabulary model with the same trunk.

    python benchmarks/bench_params.py [--quick]

No timing: counts come from shapes (meta tensors), so --quick and full runs are the same.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_parser, report  # noqa: E402

from stlm_selfplay.model import flops_per_byte, load_preset, param_table  # noqa: E402
from stlm_selfplay.model.config import PRESETS  # noqa: E402


def main() -> None:
    args = base_parser(__doc__.splitlines()[0]).parse_args()
    rows = []
    for name in PRESETS:
        config = load_preset(name)
        t = param_table(config)
        rows.append({
            "preset": name, "context": config.max_seq_len, "total": t["total"], "trunk": t["trunk"],
            "embed_head": t["embedding_head"], "gpt2_embed_head_tied": t["gpt2_embedding_head_tied"],
            "saved_embed_head_tied": round(t["saved_embedding_head_tied"], 4),
            "saved_all_local_tied": round(t["saved_all_local_tied"], 4),
            "gflops_per_byte": round(flops_per_byte(config) / 1e9, 4),
        })
    ratios = {f"{r['preset']}_total_vs_gpt2_tied": r["total"] / (r["trunk"] + r["gpt2_embed_head_tied"]) for r in rows}
    report("bench_params", rows, ratios=ratios, args=args)


if __name__ == "__main__":
    main()
