"""Self-play rollout speed: the batched rollout engine vs a naive one-game-at-a-time loop.

The same model (pretrained briefly on random-play tic-tac-toe transcripts, so it writes legal
moves) plays the same self-play games (the model in both seats, free-text moves sampled at
temperature 1, seeds 0..N-1; an illegal move is replaced by a random legal one, so every game
runs to its natural end whatever the model writes):

- engine: `stlm_selfplay.selfplay.rollout.play` with all N games at once (one batched,
  KV-cached sampler call per tick);
- naive (baseline): one game at a time, one Hugging Face `model.generate` call per move
  (`do_sample`, stopping at `]`, newline or EOS; HF re-reads the whole prompt each byte).

Reported: games/s of each and their ratio (goal >= 20x), and for the engine the fraction of its
wall time spent outside the policy's model calls (`generate` / `score_choices`: prompt building, game
stepping, bookkeeping; goal < 15%), plus the fraction outside the model's module forwards
(trunk, encoder, decoder: also counts the sampler's own Python).

Append-only prompts: the engine again with `transcript` prompts (the game so far, then the current
line; envs/formats.py), once with the policy's prompt cache carrying each game's trunk caches from
move to move (model/prompt_cache.py) and once with a cache that keeps nothing (every move reads its
whole prompt). The same weights at a 512-byte context (RoPE: no weight depends on it), the same
games; reported: both rows, their games/s ratio and whether every move was the same.

    python benchmarks/bench_rollout.py [--quick] [--games N] [--naive-games M] [--threads T]
"""

from __future__ import annotations

import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_parser, report  # noqa: E402
from bench_selfplay import pretrained_model  # noqa: E402

from stlm_selfplay.envs import make  # noqa: E402
from stlm_selfplay.envs.formats import format_prompt  # noqa: E402
from stlm_selfplay.model import STLMConfig, STLMForCausalLM  # noqa: E402
from stlm_selfplay.model.prompt_cache import PromptCache  # noqa: E402
from stlm_selfplay.model.tokenizer import EOS_ID, encode_bytes  # noqa: E402
from stlm_selfplay.selfplay import policies  # noqa: E402
from stlm_selfplay.selfplay.policies import ModelPolicy, RolloutRandom  # noqa: E402
from stlm_selfplay.selfplay.rollout import EpisodeSpec, play  # noqa: E402

GAME = "tictactoe"
OPTIONS = {"illegal": "random"}  # an illegal move becomes a random legal one: every game runs to its natural end
MAX_ACTION_BYTES = 8


@contextmanager
def timed_calls(owner, names: list[str], totals: dict):
    """Replace owner.<name> by a wrapper adding its wall time to totals[name] (restored after)."""
    originals = {n: getattr(owner, n) for n in names}

    def wrap(name, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[name] = totals.get(name, 0.0) + time.perf_counter() - start
        return timed

    for n, fn in originals.items():
        setattr(owner, n, wrap(n, fn))
    try:
        yield totals
    finally:
        for n, fn in originals.items():
            setattr(owner, n, fn)


@contextmanager
def forward_time(modules: list[torch.nn.Module], totals: dict):
    """Sum the wall time of each module's forward calls into totals['module_forward']."""
    starts: list[float] = []
    handles = [h for m in modules for h in (
        m.register_forward_pre_hook(lambda *_: starts.append(time.perf_counter())),
        m.register_forward_hook(lambda *_: totals.__setitem__(
            "module_forward", totals.get("module_forward", 0.0) + time.perf_counter() - starts.pop())))]
    try:
        yield totals
    finally:
        for h in handles:
            h.remove()


def engine(model, games: int, seed: int, style: str = "compact", cache: PromptCache | None = None,
           label: str = "") -> dict:
    specs = [EpisodeSpec(GAME, seed + i, ["learner", "learner"], dict(OPTIONS)) for i in range(games)]
    policy = ModelPolicy(model, mode="free", temperature=1.0, max_action_bytes=MAX_ACTION_BYTES, style=style,
                         prompt_cache=cache)
    totals: dict = {}
    parts = [m for m in (model.trunk, model.encoder, model.decoder) if any(True for _ in m.parameters())]
    with timed_calls(policies, ["generate", "score_choices"], totals), forward_time(parts, totals):
        start = time.perf_counter()
        episodes = play(specs, {"learner": policy}, RolloutRandom(seed))
        wall = time.perf_counter() - start
    model_calls = totals.get("generate", 0.0) + totals.get("score_choices", 0.0)
    return {"loop": f"engine ({games} games at once){label}", "games": games, "moves": sum(e.length for e in episodes),
            "illegal": sum(sum(e.illegal) for e in episodes), "wall_s": wall, "games_per_s": games / wall,
            "outside_model_calls_pct": 100 * (wall - model_calls) / wall,
            "outside_module_forwards_pct": 100 * (wall - totals.get("module_forward", 0.0)) / wall,
            "moves_digest": hash(tuple(t.action for e in episodes for t in e.turns))}


def with_context(model, max_seq_len: int):
    """The same weights in a model whose context holds `max_seq_len` bytes (RoPE: no weight depends on it)."""
    config = STLMConfig(**{**model.config.to_dict(), "max_seq_len": max_seq_len})
    longer = STLMForCausalLM(config).eval()
    longer.load_state_dict(model.state_dict())
    return longer


def transcript_rows(model, games: int, seed: int) -> tuple[dict, dict]:
    """(carried, uncarried): the engine on transcript prompts with and without the prompt cache."""
    longer = with_context(model, 512)
    engine(longer, min(games, 8), seed + 10_000, "transcript", PromptCache())  # warm-up
    carried_cache = PromptCache()
    carried = engine(longer, games, seed, "transcript", carried_cache, ", transcript prompts, cache carried")
    carried.update(cache_hits=carried_cache.hits, cache_misses=carried_cache.misses,
                   patches_reused=carried_cache.reused)
    uncarried = engine(longer, games, seed, "transcript", PromptCache(max_entries=0), ", transcript prompts, no cache")
    return carried, uncarried


def naive(model, games: int, seed: int) -> dict:
    stops = [ord("]"), ord("\n"), EOS_ID]
    torch.manual_seed(seed)  # HF sampling draws from the global generator
    moves = illegal = 0
    start = time.perf_counter()
    for i in range(games):
        game = make(GAME, **OPTIONS)
        game.reset(seed=seed + i)
        while not game.done:
            prompt = format_prompt(game, game.current_player, style="compact").encode()
            ids = torch.tensor([encode_bytes(prompt)])  # the ids the engine's sampler builds
            with torch.no_grad():
                out = model.generate(ids, max_new_tokens=MAX_ACTION_BYTES, do_sample=True, temperature=1.0, top_k=0,
                                     eos_token_id=stops, pad_token_id=EOS_ID)
            text = bytes(t for t in out[0, ids.shape[1]:].tolist() if t < 256)
            illegal += not game.step(text).legal
            moves += 1
    wall = time.perf_counter() - start
    return {"loop": "naive (1 game, HF generate per move)", "games": games, "moves": moves, "illegal": illegal,
            "wall_s": wall, "games_per_s": games / wall}


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=256, help="games played by the engine, all at once")
    parser.add_argument("--naive-games", type=int, default=16, help="games played by the naive loop")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.games, args.naive_games = 32, 2
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as work:
        model = pretrained_model(Path(work), GAME, steps=5 if args.quick else 200, quick=args.quick)
    model.eval()
    engine(model, min(args.games, 8), args.seed + 10_000)  # warm-up (allocator, first-call costs)
    fast = engine(model, args.games, args.seed)
    slow = naive(model, args.naive_games, args.seed)
    carried, uncarried = transcript_rows(model, args.games, args.seed)
    same = carried.pop("moves_digest") == uncarried.pop("moves_digest")
    fast.pop("moves_digest")
    report("rollout", [slow, fast, carried, uncarried], args=args,
           ratios={"engine_over_naive_games_per_s": fast["games_per_s"] / slow["games_per_s"],
                   "transcript_carried_over_uncarried_games_per_s": carried["games_per_s"] / uncarried["games_per_s"]},
           goals={"engine_over_naive_games_per_s": (fast["games_per_s"] / slow["games_per_s"], 20.0),
                  "inside_model_calls (1 - outside)": (1 - fast["outside_model_calls_pct"] / 100, 0.85)},
           extra={"command": " ".join(sys.argv), "seed": args.seed, "threads": args.threads,
                  "params": model.num_parameters(), "transcript_same_moves": same})


if __name__ == "__main__":
    main()
