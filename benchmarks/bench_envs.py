"""Game speed: native games/s (random vs random) per game, and tic-tac-toe against TextArena.

Baseline, in the same run: TextArena's TicTacToe-v0 (its default wrappers, the text an LLM sees),
driven by a minimal loop that makes a fresh env per game (its observation wrapper keeps earlier
games' text across resets), reads the listed moves from the observation and plays one at random. Native tic-tac-toe is measured twice: bare (`play_game` stepping scripted players) and
with a compact prompt made for the mover every turn (what a rollout does). Goal: both >= 5x
TextArena. Every contender runs once per round, 5 interleaved rounds after a warm-up; the best
round counts (so background load on a shared machine hits all of them alike).

    python benchmarks/bench_envs.py [--quick]
"""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_parser, report, time_it  # noqa: E402

from stlm_selfplay.envs import list_games, make, make_player, play_game  # noqa: E402

GOAL = 5.0


def native_games(name: str, games: int, style: str | None) -> callable:
    game = make(name)
    bots = [make_player(name, "random"), make_player(name, "random")]
    rngs = [random.Random(0), random.Random(1)]  # like the baseline: one generator per seat

    def run():
        for i in range(games):
            game.reset(i)
            play_game(game, bots, rngs, style=style)

    return run


def textarena_games(games: int) -> callable:
    import textarena as ta

    moves = re.compile(r"'\[(\d)\]'")
    rng = random.Random(0)

    def run():
        for i in range(games):
            env = ta.make("TicTacToe-v0")  # fresh: its observation wrapper keeps text across resets
            env.reset(num_players=2, seed=i)
            done = False
            while not done:
                _, observation = env.get_observation()
                listed = moves.findall(observation.rpartition("Available Moves:")[2])
                done, _ = env.step(f"[{rng.choice(listed)}]")

    return run


def adapter_games(games: int) -> callable:
    return lambda: [play_game(make("textarena:TicTacToe-v0", seed=i), [make_player("tictactoe", "random")] * 2,
                              [random.Random(i), random.Random(i + 1)]) for i in range(games)]


def main() -> None:
    args = base_parser(__doc__.splitlines()[0]).parse_args()
    n_native, n_ta = (100, 20) if args.quick else (3000, 300)
    rounds = 1 if args.quick else 5
    contenders = {("tictactoe", "native, bare"): (native_games("tictactoe", n_native, None), n_native),
                  ("tictactoe", "native, compact prompt each turn"): (native_games("tictactoe", n_native, "compact"), n_native)}
    try:
        contenders[("tictactoe", "TextArena TicTacToe-v0 (baseline)")] = (textarena_games(n_ta), n_ta)
        contenders[("tictactoe", "TextArena via our adapter")] = (adapter_games(n_ta), n_ta)
        have_textarena = True
    except ImportError:
        have_textarena = False
    for name in list_games():
        if name != "tictactoe":
            contenders[(name, "native, bare")] = (native_games(name, n_native, None), n_native)
    # interleaved rounds, best of each: background load hits every contender alike
    best = {key: float("inf") for key in contenders}
    if not args.quick:
        for fn, _ in contenders.values():
            fn()  # warm-up
    for _ in range(rounds):
        for key, (fn, _) in contenders.items():
            best[key] = min(best[key], time_it(fn, repeats=1, warmup=0))
    rows = [{"game": g, "mode": m, "games": contenders[(g, m)][1], "seconds": best[(g, m)],
             "games_per_s": contenders[(g, m)][1] / best[(g, m)]} for g, m in sorted(contenders)]
    rate = {(r["game"], r["mode"]): r["games_per_s"] for r in rows}
    ratios, goals = {}, {}
    if have_textarena:
        textarena = rate[("tictactoe", "TextArena TicTacToe-v0 (baseline)")]
        ratios = {"native_over_textarena": rate[("tictactoe", "native, bare")] / textarena,
                  "native_with_prompts_over_textarena": rate[("tictactoe", "native, compact prompt each turn")] / textarena}
        goals = {key: (value, GOAL) for key, value in ratios.items()}
    report("bench_envs", rows, ratios=ratios, goals=goals, args=args,
           extra={} if have_textarena else {"note": "textarena not installed: no baseline"})


if __name__ == "__main__":
    main()
