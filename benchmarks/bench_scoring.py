"""Constrained action scoring: one cached prompt pass per position vs one full row per action.

The exact tic-tac-toe evaluator (and every constrained self-play turn) needs log p(action text |
prompt) for each legal action of each position. Two ways, on the same model and positions:

- rows (baseline): `score` over every (prompt, action) pair, one full forward pass per pair
  (the prompt re-encoded once per legal move), batches of `--rows-batch` pairs;
- choices: `score_choices`, each prompt read once into the KV-cached decoder and its actions
  stepped from the cache (`stlm_selfplay/model/choices.py`), `--batch` prompts a pass.

Reported: seconds of each over the positions (best of `--repeats`), their ratio (goal >= 5x),
and the largest absolute difference of the summed action log-probs (must be <= 1e-5).

The training forward (forward + backward of `search_policy` on constrained self-play batches of
`--train-turns` positions, the model in training mode), two ways on the same batches:
- train rows (baseline): every (prompt, action) row through the whole model;
- train shared prefix: `prefix_groups`, each turn's prompt patches through the local encoder
  and the trunk once (`stlm_selfplay/model/shared_prefix.py`; same logits and gradients);
- train shared prefix + action windows: also `logits_needed`, the local decoder only on the
  windows of the action bytes (what self-play's RL forward runs; same gradients).

    taskset -c 1 python benchmarks/bench_scoring.py [--quick] [--positions N] [--patch-size P]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_parser, report  # noqa: E402

from stlm_selfplay.envs.evaluation import tictactoe_positions  # noqa: E402
from stlm_selfplay.envs.formats import format_action  # noqa: E402
from stlm_selfplay.model import STLMForCausalLM, load_preset, score  # noqa: E402
from stlm_selfplay.model.choices import score_choices  # noqa: E402
from stlm_selfplay.objectives import build_objective  # noqa: E402
from stlm_selfplay.selfplay.batch import action_logit_positions, turns_to_batch  # noqa: E402
from stlm_selfplay.selfplay.policies import Decision, ModelPolicy  # noqa: E402
from stlm_selfplay.selfplay.rollout import Turn  # noqa: E402

# bench_selfplay's game model (~0.6M parameters, 2-byte patches)
MODEL = dict(d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, d_ff=344, d_local=64, local_heads=2, patch_size=2,
             max_seq_len=128)
QUICK_MODEL = dict(MODEL, d_model=32, n_layers=1, d_ff=64, d_local=32)


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.process_time()
        out = fn()
        best = min(best, time.process_time() - start)
    return best, out


def training_batches(prompts, actions, turns_per_batch: int) -> list:
    """Constrained self-play batches (uniform search targets) of `turns_per_batch` positions each."""
    turns = [Turn("tictactoe", 0, 0, "learner", Decision(acts[0], prompt, candidates=acts, chosen=0,
                                                         search_probs=[1.0 / len(acts)] * len(acts)))
             for prompt, acts in zip(prompts, actions)]
    return [turns_to_batch(turns[k:k + turns_per_batch], torch.zeros(len(turns[k:k + turns_per_batch])))
            for k in range(0, len(turns), turns_per_batch)]


def train_passes(model, batches, shared: bool, windows: bool = False) -> None:
    """Forward + backward of `search_policy` on every batch (gradients discarded)."""
    objective = build_objective({"name": "search_policy"})[0]
    model.train()
    for batch in batches:
        extra = {"prefix_groups": batch.extras["groups"]} if shared else {}
        if windows:
            extra["logits_needed"] = action_logit_positions(batch)
        objective(model(batch.input_ids, attention_mask=batch.attention_mask, **extra), batch).loss.backward()
        model.zero_grad(set_to_none=True)
    model.eval()


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=4520, help="tic-tac-toe positions scored (all: 4520)")
    parser.add_argument("--patch-size", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256, help="prompts per score_choices pass")
    parser.add_argument("--rows-batch", type=int, default=512, help="(prompt, action) rows per score pass")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--train-positions", type=int, default=768, help="positions in the training-forward comparison")
    parser.add_argument("--train-turns", type=int, default=48, help="positions (turns) per training batch")
    args = parser.parse_args()
    if args.quick:
        args.positions, args.repeats, args.train_positions = 64, 1, 64
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = STLMForCausalLM(load_preset("tiny", **dict(QUICK_MODEL if args.quick else MODEL,
                                                        patch_size=args.patch_size))).eval()
    games = [p.game for p in tictactoe_positions()][:args.positions]
    prompts = ModelPolicy(model).prompts(games, [g.current_player for g in games])
    actions = [[format_action(a).encode() for a in g.legal_actions()] for g in games]
    pairs = ([p for p, acts in zip(prompts, actions) for _ in acts], [a for acts in actions for a in acts])
    rows_s, by_rows = best_of(lambda: score(model, *pairs, batch_size=args.rows_batch), args.repeats)
    choices_s, by_choices = best_of(lambda: score_choices(model, prompts, actions, batch_size=args.batch), args.repeats)
    diff = max(abs(float(a.sum()) - float(b.sum())) for a, b in zip(by_rows, [t for row in by_choices for t in row]))
    rows = [{"method": "rows (score)", "positions": len(games), "actions": len(pairs[0]), "cpu_s": rows_s,
             "positions_per_s": len(games) / rows_s},
            {"method": "choices (score_choices)", "positions": len(games), "actions": len(pairs[0]), "cpu_s": choices_s,
             "positions_per_s": len(games) / choices_s}]
    speedup = rows_s / choices_s
    batches = training_batches(prompts[:args.train_positions], actions[:args.train_positions], args.train_turns)
    n_train = min(args.train_positions, len(games))
    train = {}
    for name, shared, windows in (("train rows", False, False), ("train shared prefix", True, False),
                                  ("train shared prefix + action windows", True, True)):
        train[name], _ = best_of(lambda: train_passes(model, batches, shared, windows), args.repeats)
        rows.append({"method": name, "positions": n_train, "actions": sum(b.input_ids.shape[0] for b in batches),
                     "cpu_s": train[name], "positions_per_s": n_train / train[name]})
    train_speedup = train["train rows"] / train["train shared prefix"]
    windows_speedup = train["train rows"] / train["train shared prefix + action windows"]
    report("bench_scoring", rows, args=args,
           ratios={"choices_over_rows": speedup, "train_shared_over_rows": train_speedup,
                   "train_windows_over_rows": windows_speedup},
           goals={"choices_over_rows (>= 5x)": (speedup, 5.0), "-max_abs_diff (<= 1e-5)": (-diff, -1e-5)},
           extra={"params": model.num_parameters(), "patch_size": args.patch_size, "max_abs_diff": diff})


if __name__ == "__main__":
    main()
