"""TRL interop: TRL's `GRPOTrainer` trains an STLM on a text game through a `rollout_func`.

Tested with trl 1.16 (pyproject: trl>=1.16,<2), transformers 5.24, torch 2.13 on CPU. TRL marks
`rollout_func` experimental, so this module is the place to fix when TRL changes it. It exists
so TRL's GRPO and our own loop (`stlm selfplay`) can be compared on the same game.

    dataset  one game start per row: {"prompt": "tictactoe seed=17 seat=0"}     (game_dataset)
    rollout  TRL repeats each row num_generations times (one GRPO group); every copy plays one
             game with our engine (`selfplay.rollout.play`): the trainer's current model writes
             free text in `seat`, a scripted bot plays the other seats
    sample   prompt_ids     = bytes of the model's first prompt
             completion_ids = bytes the model wrote on its first turn (+ EOS if it ended so)
             logprobs       = their per-byte sampling log-probs (temperature = args.temperature)
    reward   game_reward_func returns the extra field `payoff`: the final payoff of the model's
             seat (extras `legal`, `illegal`, `outcome`, `seat` also reach reward functions)

Why only the first turn: each model turn is sampled from its own one-line prompt (no history), so
later turns cannot join one TRL sequence without being scored under a context they were not
sampled with. The game's outcome still rewards the first move; later moves are played by the
same current model but not trained (our own loop trains every turn).

Why a `GRPOTrainer` subclass: TRL 1.16 scores completions with a "fused LM head" it patches onto
the model (`trl.trainer.utils.add_fused_lm_head`): `model.base_model(...).last_hidden_state`
projected by `get_output_embeddings()`. STLM's byte distribution comes from a local decoder over
patch windows, with no such hidden state, so the stock trainer stops with AttributeError.
`STLMGRPOTrainer` overrides that one scoring method with the model's own forward (log-softmax
over bytes + EOS at the trainer's temperature, as the sampler computes it) and takes the patch
off the model again. Rollouts use our sampler: `use_vllm` must stay off.

RNG: TRL's trainer calls `transformers.set_seed(args.seed)`, which reseeds the global Python,
NumPy and torch RNGs. The rollout draws only from its own `RolloutRandom(seed)`.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
from pathlib import Path
from typing import Callable

import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from stlm_selfplay.envs import make
from stlm_selfplay.errors import UserError, closest
from stlm_selfplay.model import ByteTokenizer
from stlm_selfplay.model.sampling import emit_logprobs
from stlm_selfplay.model.tokenizer import EOS_ID
from stlm_selfplay.selfplay.policies import BotPolicy, ModelPolicy, RolloutRandom
from stlm_selfplay.selfplay.rollout import EpisodeSpec, play

LEARNER = "learner"  # the policy name of the trained model in the rollout's seats
_START = re.compile(r"(\S+) seed=(-?\d+) seat=(\d+)")


def _seats(game: str, seat: int | str) -> list[int]:
    """The model's seat(s): one index, or 'both' (every seat in turn)."""
    n = make(game).num_players
    if seat == "both":
        return list(range(n))
    if isinstance(seat, int) and 0 <= seat < n:
        return [seat]
    raise UserError(f"seat {seat!r} is invalid for {game}; use 0..{n - 1} or 'both'")


def game_dataset(n: int, *, game: str = "tictactoe", seat: int | str = 0, seed: int = 0) -> Dataset:
    """`n` game starts (seeds seed..seed+n-1), one row each; with seat='both' the seats alternate."""
    seats = _seats(game, seat)
    return Dataset.from_list([{"prompt": f"{game} seed={seed + i} seat={seats[i % len(seats)]}"} for i in range(n)])


def _parse_start(prompt, game: str) -> tuple[int, int]:
    """'tictactoe seed=17 seat=0' -> (17, 0); anything else is a UserError."""
    match = _START.fullmatch(str(prompt).strip())
    if not match or match.group(1) != game:
        raise UserError(f"prompt {str(prompt)[:60]!r} is not a {game} game start; build the dataset with "
                        f"game_dataset(n, game={game!r})")
    return int(match.group(2)), int(match.group(3))


def make_game_rollout_func(game: str = "tictactoe", opponent: str = "random", *, style: str = "compact",
                           max_action_bytes: int = 8, options: dict | None = None, seed: int = 0) -> Callable:
    """A TRL `rollout_func(prompts, trainer) -> dict`: one game per prompt, see the module docstring.

    `options` go to the game (e.g. {"illegal": "random"}); `seed` seeds the rollout's own RNG,
    which carries over between calls (every call plays new games, the same ones for a seed)."""
    options = dict(options or {})
    n_seats = make(game, **options).num_players  # an unknown game, option or bot fails here, not mid-training
    bot = BotPolicy(game, opponent)
    gen = RolloutRandom(seed)

    def rollout_func(prompts: list, trainer) -> dict:
        args = trainer.args
        limit = min(max_action_bytes, args.max_completion_length or max_action_bytes)
        model = trainer.accelerator.unwrap_model(trainer.model)
        learner = ModelPolicy(model, name=LEARNER, mode="free", temperature=args.temperature, style=style,
                              max_action_bytes=limit)
        starts = [_parse_start(p, game) for p in prompts]
        specs = [EpisodeSpec(game, s, [LEARNER if k == seat else opponent for k in range(n_seats)], options)
                 for s, seat in starts]
        episodes = play(specs, {LEARNER: learner, opponent: bot}, gen)
        out = {k: [] for k in ("prompt_ids", "completion_ids", "logprobs", "payoff", "legal", "illegal",
                               "outcome", "seat")}
        for (s, seat), ep in zip(starts, episodes):
            if not ep.turns:
                raise UserError(f"{game} seed={s} ended before the model moved in seat {seat}; choose another seat")
            turn = ep.turns[0]
            ids = list(turn.action)
            lps = list(turn.decision.byte_logprobs)
            out["prompt_ids"].append(list(turn.prompt))
            out["completion_ids"].append(ids + [EOS_ID] * (len(lps) - len(ids)))  # sampled EOS is scored too
            out["logprobs"].append(lps)
            out["payoff"].append(ep.rewards[seat])
            out["legal"].append(turn.legal)
            out["illegal"].append(ep.illegal[seat])
            out["outcome"].append(ep.outcome[seat])
            out["seat"].append(seat)
        return out

    return rollout_func


def game_reward_func(completions=None, payoff=None, **kwargs) -> list[float]:
    """The reward TRL uses: the game's final payoff for the model's seat (extra field `payoff`)."""
    if payoff is None:
        raise UserError("game_reward_func needs the 'payoff' field; pass rollout_func=make_game_rollout_func(...)")
    return [float(p) for p in payoff]


def completion_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, n: int,
                        temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob and entropy [B, n] of the last n tokens of each (left/right padded) row, under
    softmax(logits / temperature) over bytes + EOS, as `generate` samples; zero at pads."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=n + 1).logits[:, :-1]
    logp = emit_logprobs(logits / temperature)
    mask = attention_mask[:, -n:].bool()
    targets = input_ids[:, -n:].masked_fill(~mask, 0)
    token = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1).masked_fill(~mask, 0.0)
    finite = logp.clamp_min(torch.finfo(logp.dtype).min)  # pad/bos have p = 0: no 0 * -inf
    entropy = -(logp.exp() * finite).sum(-1).masked_fill(~mask, 0.0)
    return token, entropy


class STLMGRPOTrainer(GRPOTrainer):
    """`GRPOTrainer` scoring completions with STLM's own forward (see the module docstring)."""

    def __init__(self, model, reward_funcs=None, args: GRPOConfig | None = None, **kwargs):
        if args is not None and args.use_vllm:
            raise UserError("use_vllm=True is not supported for STLM; the rollout samples with our own sampler")
        if args is not None and (args.top_p != 1.0 or args.top_k or args.min_p is not None
                                 or args.repetition_penalty != 1.0):
            raise UserError("the game rollout samples with temperature only; leave top_p, top_k, min_p and "
                            "repetition_penalty at their defaults")
        source = model.config._name_or_path
        if args is not None and args.beta != 0.0 and not (source and Path(source).is_dir()):
            # TRL builds the KL reference from the policy's path (`from_pretrained`); an STLM built in
            # memory has none: its initial weights, saved under output_dir, become that path
            # (its config.json carries an empty `auto_map`: TRL reads that field to pick the loading
            # class of an architecture outside transformers, and then falls back to the Auto class)
            reference = Path(args.output_dir) / "reference-init"
            model.config.auto_map = {}
            try:
                model.save_pretrained(reference)
            finally:
                del model.config.auto_map
            model.config._name_or_path = str(reference)
        own_forward = vars(model).get("forward")
        super().__init__(model, reward_funcs, args, **kwargs)
        if own_forward is None:  # take TRL's fused-head patch off (it cannot work for STLM)
            vars(model).pop("forward", None)
        else:
            model.forward = own_forward

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                           batch_size=None, compute_entropy=False, compute_aux_loss=False,
                                           **unused):
        size = batch_size or input_ids.size(0)
        parts = [completion_logprobs(model, input_ids[i:i + size], attention_mask[i:i + size], logits_to_keep,
                                     self.temperature) for i in range(0, input_ids.size(0), size)]
        logps = torch.cat([p[0] for p in parts])
        return logps, torch.cat([p[1] for p in parts]) if compute_entropy else None, None


_CONFIG_FIELDS = {f.name for f in dataclasses.fields(GRPOConfig)}


def grpo_config(output_dir: str, **overrides) -> GRPOConfig:
    """GRPOConfig defaults for a tiny byte model: our sampler (no vLLM), no checkpointing, no
    reporting, dropout off (the ratio starts at exactly 1), CPU when no GPU is present."""
    for key in overrides:
        if key not in _CONFIG_FIELDS:
            raise UserError(f"unknown GRPOConfig option '{key}'{closest(key, _CONFIG_FIELDS)}")
    values = dict(
        output_dir=output_dir, use_cpu=not torch.cuda.is_available(), bf16=False, report_to="none",
        save_strategy="no", logging_steps=1, activation_checkpointing=False, disable_dropout=True,
        per_device_train_batch_size=4, num_generations=2, max_completion_length=8, learning_rate=1e-3,
        max_steps=2, use_vllm=False,
    )
    values.update(overrides)
    return GRPOConfig(**values)


def train_grpo_on_game(model, *, game: str = "tictactoe", opponent: str = "random", seat: int | str = 0,
                       style: str = "compact", options: dict | None = None, seed: int = 0, n_starts: int = 64,
                       output_dir: str | None = None, **config) -> STLMGRPOTrainer:
    """Train `model` in place with TRL's GRPO against `opponent`; returns the trainer (its
    `state.log_history` holds the rewards). `config` overrides `grpo_config` (e.g. max_steps)."""
    with tempfile.TemporaryDirectory(prefix="stlm-grpo-") as tmp:
        args = grpo_config(output_dir or tmp, seed=seed, **config)
        trainer = STLMGRPOTrainer(
            model, reward_funcs=game_reward_func, args=args,
            train_dataset=game_dataset(n_starts, game=game, seat=seat, seed=seed), processing_class=ByteTokenizer(),
            rollout_func=make_game_rollout_func(game, opponent, style=style, options=options, seed=seed,
                                                max_action_bytes=args.max_completion_length),
        )
        trainer.train()
    return trainer
