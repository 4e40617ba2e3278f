"""Who moves: a model (free text or constrained choice) or a scripted bot, batched.

Every policy answers `act(games, players, gen) -> list[Decision]` for a list of games waiting on
it, so the rollout engine can serve all of a policy's games with one model call per tick.

Constrained choice (one batched `score_choices` call: each waiting game's prompt read once, every
legal action scored from its KV cache; equal to `score` on each (prompt, action) pair):

    s(a)     = sum over the bytes of format_action(a) of log p(byte | prompt, earlier bytes)
    pi(a)    = softmax_a( s(a) / tau )                  over the game's legal actions
    logprob  = log pi(chosen)                           (what the RL loss uses)

Free text: the model writes bytes after the prompt until `]`, a newline or `max_action_bytes`;
`logprob` is the sum of the per-byte log-probs under the temperature-scaled distribution.

With `style="transcript"` (append-only prompts: the game so far, then the current line; games
with private information keep compact prompts, `formats.style_for`) the policy keeps a `PromptCache`: each prompt continues the trunk caches of the game's previous
prompt, so a move reads only the bytes added since (`model/prompt_cache.py`). A policy object
serves one model with fixed weights (self-play builds new policies for every rollout).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import torch

from stlm_selfplay.envs import make_player
from stlm_selfplay.envs.formats import PROMPT_STYLES, format_action, format_prompt, style_for
from stlm_selfplay.errors import UserError
from stlm_selfplay.model import generate
from stlm_selfplay.model.choices import score_choices
from stlm_selfplay.model.prompt_cache import PromptCache


@dataclass
class Decision:
    """What a policy chose for one game, and how likely it was under that policy."""

    text: bytes  # what is sent to the game (e.g. b"[4]")
    prompt: bytes = b""  # what the model saw (empty for bots)
    logprob: float = 0.0  # log-probability of `text` under the acting policy (0 for bots)
    candidates: list[bytes] | None = None  # constrained: every legal action, formatted
    chosen: int | None = None  # constrained: index of `text` in `candidates`
    probs: list[float] | None = None  # constrained: the policy's distribution over candidates
    byte_logprobs: list[float] = field(default_factory=list)  # free: per written byte
    legal: list[bytes] | None = None  # free: every legal action, formatted (the legal_mass objective's rows)
    search_probs: list[float] | None = None  # search (selfplay/search.py): the root visit distribution
    #                                          over candidates, the `search_policy` objective's target
    action_values: list[float] | None = None  # mmd values: exact: Q(h, b) of each candidate for the mover
    #                                          (selfplay/action_values.py)
    images: list["Decision"] | None = None  # search with `symmetries`: the same decision in each image
    #                                        of the position under the game's symmetries (extra targets)


class Policy(Protocol):
    name: str
    is_model: bool

    def act(self, games: Sequence, players: Sequence[int], gen: "RolloutRandom") -> list[Decision]: ...


@dataclass
class RolloutRandom:
    """The rollout's own randomness: a torch generator for model sampling, a Random for bots."""

    seed: int

    def __post_init__(self):
        self.torch = torch.Generator().manual_seed(self.seed)
        self.py = random.Random(self.seed)

    def state_dict(self) -> dict:
        return {"torch": self.torch.get_state(), "py": self.py.getstate()}

    def load_state_dict(self, state: dict) -> None:
        self.torch.set_state(state["torch"])
        self.py.setstate(state["py"])


def constrained_distribution(action_logprob_sums: torch.Tensor, temperature: float) -> torch.Tensor:
    """pi = softmax(s / tau) over one game's legal actions (tau <= 0 means greedy: one-hot argmax)."""
    if temperature <= 0:
        probs = torch.zeros_like(action_logprob_sums)
        probs[int(torch.argmax(action_logprob_sums))] = 1.0
        return probs
    return torch.softmax(action_logprob_sums / temperature, dim=-1)


@dataclass
class ModelPolicy:
    """An STLM acting through the games' text formats."""

    model: torch.nn.Module
    name: str = "learner"
    mode: str = "constrained"  # constrained | free
    temperature: float = 1.0  # <= 0: greedy
    style: str = "compact"  # prompt style (envs.formats.PROMPT_STYLES)
    max_action_bytes: int = 8  # free mode: bytes written at most
    is_model: bool = True
    prompt_cache: PromptCache | None = field(default=None, repr=False)  # transcript style: made here

    def __post_init__(self):
        if self.style not in PROMPT_STYLES:
            raise UserError(f"unknown prompt style '{self.style}'; use one of {', '.join(PROMPT_STYLES)}")
        if self.style == "transcript" and self.prompt_cache is None:
            self.prompt_cache = PromptCache()

    def prompts(self, games: Sequence, players: Sequence[int]) -> list[bytes]:
        return [format_prompt(g, p, style=style_for(g, self.style)).encode() for g, p in zip(games, players)]

    def act(self, games, players, gen: RolloutRandom) -> list[Decision]:
        prompts = self.prompts(games, players)
        decisions = (self._free(games, players, prompts, gen) if self.mode == "free"
                     else self._constrained(games, players, prompts, gen))
        for decision, prompt in zip(decisions, prompts):
            decision.prompt = prompt
        return decisions

    def _constrained(self, games, players, prompts, gen) -> list[Decision]:
        candidates = [[format_action(a).encode() for a in g.legal_actions(p)] for g, p in zip(games, players)]
        scores = score_choices(self.model, prompts, candidates, prompt_cache=self.prompt_cache)
        sums = torch.tensor([float(lp.sum()) for row in scores for lp in row], dtype=torch.float64)
        decisions, start = [], 0
        for cands in candidates:
            s = sums[start:start + len(cands)]
            start += len(cands)
            probs = constrained_distribution(s, self.temperature)
            idx = int(torch.multinomial(probs.float(), 1, generator=gen.torch)) if self.temperature > 0 else int(torch.argmax(probs))
            decisions.append(Decision(
                text=cands[idx], logprob=float(torch.log(probs[idx])), candidates=cands, chosen=idx,
                probs=probs.tolist(),
            ))
        return decisions

    def _free(self, games, players, prompts, gen) -> list[Decision]:
        outs = generate(
            self.model, prompts, max_new_bytes=self.max_action_bytes, stop=[b"]", b"\n"],
            temperature=max(self.temperature, 0.0) if self.temperature > 0 else 1.0,
            greedy=self.temperature <= 0, generator=gen.torch, prompt_cache=self.prompt_cache,
        )
        return [Decision(text=o.text, logprob=float(sum(o.logprobs)), byte_logprobs=list(o.logprobs),
                         legal=[format_action(a).encode() for a in g.legal_actions(p)])
                for o, g, p in zip(outs, games, players)]


@dataclass
class BotPolicy:
    """A scripted opponent from the game's registry, acting through the same text interface."""

    game: str
    bot: str
    options: dict = field(default_factory=dict)
    is_model: bool = False

    def __post_init__(self):
        self.name = self.bot
        self.player = make_player(self.game, self.bot, **self.options)

    def act(self, games, players, gen: RolloutRandom) -> list[Decision]:
        return [Decision(text=format_action(self.player.act(g, gen.py)).encode()) for g in games]
