"""How good are PUCT search targets on tic-tac-toe, before any network learns from them?

Search-distilled self-play (`selfplay.search`) trains the policy towards the root visit
distribution, so the distilled network can be no better than its targets. This probe measures
the targets alone: for a fixed random sample of the 4,520 positions (`tictactoe_positions`),
one batched `search` per setting with a uniform prior and values from random play-outs
(`random_evaluator`, the evaluator of a model without a value head, minus the model), no root
noise, and reports per number of simulations:

    mass    = mean_pos sum_{a optimal} N(root,a) / sum_b N(root,b)       (what `search_policy` distils)
    greedy  = mean_pos [argmax_a N(root,a) is optimal]                    (ties split evenly)
    cpu_ms  = search time per position

against the uniform prior's own rate (0 simulations). Goal: a setting whose visit mass is >= 0.85
(the issue's floor for the distilled network) at a cost a self-play update can pay.

    python benchmarks/bench_search_targets.py [--quick] [--positions N] [--simulations 16,64,256] [--playouts 1,4]
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_parser, report  # noqa: E402

from stlm_selfplay.envs.evaluation import rate_from_probabilities, tictactoe_positions  # noqa: E402
from stlm_selfplay.selfplay.policies import RolloutRandom  # noqa: E402
from stlm_selfplay.selfplay.search import SearchConfig, random_evaluator, search, visit_distribution  # noqa: E402


def target_quality(positions, simulations: int, playouts: int, c_puct: float, seed: int) -> dict:
    cfg = SearchConfig(simulations=simulations, c_puct=c_puct, dirichlet_epsilon=0.0, playouts=playouts)
    start = time.process_time()
    roots = search([p.game for p in positions], random_evaluator(playouts), cfg, RolloutRandom(seed))
    cpu = time.process_time() - start
    tables = [dict(zip(node.actions, visit_distribution(node))) for node in roots]
    rate = rate_from_probabilities(tables, positions)
    return {"simulations": simulations, "playouts": playouts, "c_puct": c_puct, "mass": rate["rate"],
            "greedy": rate["greedy"], "cpu_ms_per_position": 1000 * cpu / len(positions)}


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=600, help="positions sampled from the 4,520 (fixed by --seed)")
    parser.add_argument("--simulations", default="8,16,32,64,128,256", help="comma-separated simulation counts")
    parser.add_argument("--playouts", default="1,4", help="comma-separated random play-outs per leaf")
    parser.add_argument("--c-puct", type=float, default=1.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.positions, args.simulations, args.playouts = 40, "4,16", "1"
    everything = tictactoe_positions()
    positions = random.Random(args.seed).sample(everything, min(args.positions, len(everything)))
    uniform = rate_from_probabilities([{a: 1.0 for a in p.legal} for p in positions], positions)
    rows = [{"simulations": 0, "playouts": 0, "c_puct": args.c_puct, "mass": uniform["rate"],
             "greedy": uniform["greedy"], "cpu_ms_per_position": 0.0}]
    for playouts in (int(x) for x in args.playouts.split(",")):
        for sims in (int(x) for x in args.simulations.split(",")):
            rows.append(target_quality(positions, sims, playouts, args.c_puct, args.seed))
    best = max(rows, key=lambda r: r["mass"])
    report("search_targets", rows, args=args,
           ratios={"best_mass_over_uniform": best["mass"] / uniform["rate"]},
           goals={"best visit mass": (best["mass"], 0.85)},
           extra={"command": " ".join(sys.argv), "seed": args.seed, "positions": len(positions),
                  "best": {k: best[k] for k in ("simulations", "playouts")}})


if __name__ == "__main__":
    main()
