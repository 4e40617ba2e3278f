"""Why free-text self-play collapses: the action format's health along a tic-tac-toe free-mode run.

bench_selfplay's `ttt-free` run (same pretrained model, same generic recipe; `--set` adds
overrides) is cut into chunks of `--every` updates. After each chunk the learner is probed on a
fixed set of positions (`--positions` seeded random-play positions, both sides to move):

    sampled at temperature 1 (`--samples` per position, a seeded generator), each move is
      legal | occupied (a cell 0-8 that is taken) | other (a bracketed token that is no cell)
      | no_parse (no `[...]`), and the most frequent illegal byte strings are listed;
    H_byte   = mean over the sampled action bytes of the per-byte entropy -sum_v p_v log p_v
    H_open   = the entropy of the first action byte (the `[`)
    lp_open  = mean log p("[" | prompt)
    p_legal  = mean sum_{d legal} p(d | prompt "[")       (mass on the legal cells after "[")
    p_digit  = mean sum_{d in 0..8} p(d | prompt "[")
    lp_close = mean log p("]" | prompt "[" d), d = the most likely legal cell
    greedy_legal = share of positions whose greedy move is legal

and the loop's own metrics.jsonl (training illegal rate, win rate vs random in training) are
printed beside them. A diagnostic, not a benchmark with a goal:

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/probe_free.py --updates 400 --every 20 --work /tmp/probe
"""

from __future__ import annotations

import contextlib
import io
import random
import sys
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_parser, report  # noqa: E402
from bench_selfplay import MODEL, QUICK_MODEL, REPO, generic_recipe, pretrain_on_games  # noqa: E402

from stlm_selfplay.config import load_config  # noqa: E402
from stlm_selfplay.envs import make  # noqa: E402
from stlm_selfplay.envs.formats import format_prompt, parse_action  # noqa: E402
from stlm_selfplay.model import generate, score  # noqa: E402
from stlm_selfplay.model.tokenizer import PAD_ID  # noqa: E402
from stlm_selfplay.runs import latest_checkpoint, load_model  # noqa: E402
from stlm_selfplay.selfplay.loop import selfplay  # noqa: E402
from stlm_selfplay.train.metrics import read_metrics  # noqa: E402

CELLS = [str(i) for i in range(9)]


def probe_positions(n: int, seed: int) -> list[tuple[bytes, list[str]]]:
    """(prompt, legal cells) of `n` positions reached by seeded random play (not finished games)."""
    rng, out = random.Random(seed), []
    while len(out) < n:
        game = make("tictactoe")
        game.reset(seed=rng.randrange(2 ** 31))
        for _ in range(rng.randrange(8)):
            trial = game.clone()
            trial.step(rng.choice(game.legal_actions()))
            if trial.done:
                break
            game = trial
        out.append((format_prompt(game).encode(), game.legal_actions()))
    return out


def classify(text: bytes, legal: list[str]) -> str:
    token = parse_action(text)
    if token is None:
        return "no_parse"
    if token in legal:
        return "legal"
    return "occupied" if token in CELLS else "other"


@torch.no_grad()
def entropies(model, prompts: list[bytes], texts: list[bytes]) -> tuple[float, float]:
    """(mean per-byte entropy over all sampled action bytes, mean entropy of the first action byte)."""
    rows = [p + t for p, t in zip(prompts, texts)]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(list(r))
        attn[i, :len(r)] = 1
    logp = torch.log_softmax(model(ids, attention_mask=attn).logits.float(), -1)
    h = -(logp.exp() * logp).sum(-1)  # [B, T]: entropy of the byte after position t
    per_byte, first = [], []
    for i, (p, t) in enumerate(zip(prompts, texts)):
        span = h[i, len(p) - 1:len(p) - 1 + max(len(t), 1)]
        per_byte += span.tolist()
        first.append(float(span[0]))
    return sum(per_byte) / len(per_byte), sum(first) / len(first)


@torch.no_grad()
def probe(model, positions, samples: int, seed: int) -> dict:
    prompts = [p for p, _ in positions for _ in range(samples)]
    legal = [lg for _, lg in positions for _ in range(samples)]
    outs = generate(model, prompts, max_new_bytes=8, stop=[b"]", b"\n"], temperature=1.0,
                    generator=torch.Generator().manual_seed(seed))
    kinds = Counter(classify(o.text, lg) for o, lg in zip(outs, legal))
    bad = Counter(o.text for o, lg in zip(outs, legal) if classify(o.text, lg) != "legal")
    h_byte, h_open = entropies(model, prompts, [o.text for o in outs])
    greedy = generate(model, [p for p, _ in positions], max_new_bytes=8, stop=[b"]", b"\n"], greedy=True)
    # "[d]" for every cell d: log p("["), log p(d | "["), log p("]" | "[d")
    lp = score(model, [p for p, _ in positions for _ in CELLS], [f"[{d}]".encode() for _ in positions for d in CELLS])
    lp_open, p_legal, p_digit, lp_close = [], [], [], []
    for k, (_, lg) in enumerate(positions):
        rows = lp[k * 9:(k + 1) * 9]
        lp_open.append(float(rows[0][0]))
        digit = torch.stack([r[1] for r in rows]).exp()
        p_digit.append(float(digit.sum()))
        p_legal.append(float(sum(digit[int(d)] for d in lg)))
        best = max(lg, key=lambda d: float(digit[int(d)]))
        lp_close.append(float(rows[int(best)][2]))
    n, m = len(outs), len(positions)
    return {"legal": kinds["legal"] / n, "occupied": kinds["occupied"] / n, "other": kinds["other"] / n,
            "no_parse": kinds["no_parse"] / n, "H_byte": h_byte, "H_open": h_open,
            "lp_open": sum(lp_open) / m, "p_legal": sum(p_legal) / m, "p_digit": sum(p_digit) / m,
            "lp_close": sum(lp_close) / m,
            "greedy_legal": sum(classify(g.text, lg) == "legal" for g, (_, lg) in zip(greedy, positions)) / m,
            "illegal_top": "; ".join(f"{t!r}x{c}" for t, c in bad.most_common(4))}


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=400, help="self-play updates in all")
    parser.add_argument("--every", type=int, default=20, help="updates between probes")
    parser.add_argument("--positions", type=int, default=200, help="probe positions")
    parser.add_argument("--samples", type=int, default=4, help="sampled moves per probe position")
    parser.add_argument("--pretrain-steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="probe-free", help="run folder name under --work")
    parser.add_argument("--work", required=True, metavar="DIR", help="pretraining cache and the run")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="self-play override")
    args = parser.parse_args()
    if args.quick:
        args.updates, args.every, args.positions, args.samples, args.pretrain_steps = 2, 1, 8, 2, 5
    torch.set_num_threads(1)
    work = Path(args.work)
    init = pretrain_on_games(work, "tictactoe", args.pretrain_steps, QUICK_MODEL if args.quick else MODEL, args.seed,
                             200 if args.quick else 5000)
    overrides = generic_recipe("tictactoe", "free") + [
        f"run.out_dir={work}", f"run.name={args.name}", f"run.seed={args.seed}", "run.device=cpu", "run.cpu_threads=1",
        f"run.checkpoint_every={args.every}", "run.keep_last=1", "logging.wandb=disabled", "logging.progress=false",
        "optimizer.weight_decay=0.0", f"selfplay.init_from={init}", f"selfplay.games_per_update={8 if args.quick else 64}",
        f"selfplay.updates={args.updates}", f"selfplay.eval.every={args.every}", "selfplay.eval.bots=[random]",
        "selfplay.eval.episodes=50", "selfplay.eval.ratings=false", "selfplay.eval.optimal_rate=false", *args.set]
    cfg = load_config(None, overrides)
    positions = probe_positions(args.positions, args.seed + 1000)
    rows = [{"update": 0, **probe(load_model(init), positions, args.samples, args.seed)}]
    print(rows[-1], flush=True)
    done = 0
    while done < args.updates:
        with contextlib.redirect_stdout(io.StringIO()):
            done = selfplay(cfg, max_updates=args.every)["update"]
        train = [r for r in read_metrics(work / args.name / "metrics.jsonl", "train") if done - args.every < r["step"] <= done]
        evals = {r["step"]: r for r in read_metrics(work / args.name / "metrics.jsonl", "eval")}
        row = {"update": done, "train_illegal": sum(r["illegal_rate"] for r in train) / len(train),
               "train_win_random": sum(r.get("win/random", 0.0) for r in train) / len(train),
               "eval_win_random": evals.get(done, {}).get("tictactoe/random/win_rate", float("nan")),
               "eval_illegal": evals.get(done, {}).get("tictactoe/random/illegal_rate", float("nan")),
               **probe(load_model(latest_checkpoint(work / args.name)), positions, args.samples, args.seed)}
        rows.append(row)
        print(row, flush=True)
    report("probe_free", rows, args=args, extra={"command": " ".join(sys.argv)})


if __name__ == "__main__":
    main()
