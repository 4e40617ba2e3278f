"""The only place text for a model is made: prompts, actions, outcome lines, and action parsing.

How a turn reads (both styles): the prompt ends where the model starts writing, and the model
writes the action in brackets, e.g. `[4]`; the turn ends with a newline. A transcript is the
concatenation, in order, of every turn as a rollout shows it, then the outcome line:

    format_prompt(game, player) + format_action(action) + "\\n"    (one line per turn, compact)
    ...
    format_outcome(game) + "\\n"

Compact style (byte models), one line per turn, <= 64 bytes where the game allows:

    <tag> <side> <board>[ ?<legal moves>][ !<rejected text>]>

e.g. `ttt x xo.|...|... ?2345678>` then `[4]`. The legal moves are joined without separator when
all are one character, else with ","; they are left out when the line would exceed 64 bytes
(the board implies them). `!` echoes the player's rejected text under the retry rule.

Verbose style (larger models): a few sentences (game, side, position, legal moves), ending in
`Your move: `.

Transcript style (append-only prompts, perfect-information games only): the game so far as the
compact transcript writes it (each earlier mover's compact prompt, action and newline), then the
current compact line. Each prompt begins with the previous one, so a model that keeps its earlier
prompts' KV caches (`model/prompt_cache.py`) reads only the new bytes, and the text is exactly a
prefix of the compact pretraining transcripts (`transcripts.py`). A rejected attempt under the retry
rule is echoed in its mover's current line only (the history holds the moves played).

Parsing: `parse_action(text)` returns the first bracketed token, stripped and lower-cased, or
None; it accepts str or bytes (invalid UTF-8 included) and never raises.
"""

from __future__ import annotations

from typing import Any

from stlm_selfplay.errors import UserError

COMPACT_LIMIT = 64  # bytes per compact prompt line, where the game allows
STYLES = ("compact", "verbose")  # transcript (and pretraining data) styles
PROMPT_STYLES = STYLES + ("transcript",)  # what a model policy may be prompted with


def format_action(action: str) -> str:
    """The text a model writes for `action`: `"4"` -> `"[4]"`."""
    return f"[{action}]"


def parse_action(text: Any) -> str | None:
    """The first bracketed token of `text` (str or bytes), stripped and lower-cased; None if none.

    `"I play [ 4 ] now"` -> `"4"`; `"[Bet]"` -> `"bet"`; `"4"` -> None; `b"\\xff[4]"` -> `"4"`.
    """
    try:
        if isinstance(text, (bytes, bytearray, memoryview)):
            raw = bytes(text)
            start = raw.find(b"[")
            end = raw.find(b"]", start + 1) if start >= 0 else -1
            if end < 0:
                return None
            return raw[start + 1 : end].decode("utf-8", "replace").strip().lower()
        text = text if isinstance(text, str) else str(text)
        start = text.find("[")
        end = text.find("]", start + 1) if start >= 0 else -1
        if end < 0:
            return None
        return text[start + 1 : end].strip().lower()
    except Exception:  # noqa: BLE001 - parsing must never raise (e.g. a str() that fails)
        return None


def join_moves(actions: list[str]) -> str:
    """Legal moves for a compact prompt: "0145" when all are one character, else "check,bet"."""
    joined = "".join(actions)
    return joined if len(joined) == len(actions) else ",".join(actions)


def format_prompt(game, player: int | None = None, style: str = "compact") -> str:
    """The prompt `player` (default: the one to move) sees; the model continues it with `[action]`."""
    if player is None:
        player = game.current_player
    if style == "transcript":
        if not allows_transcript(game):
            raise UserError(f"prompt style 'transcript' shows every earlier prompt, and {game.title or game.name} "
                            "has private information or its own text; use style compact")
        return game_so_far(game) + format_prompt(game, player, "compact")
    if game.raw_prompt is not None:  # adapted games (TextArena) bring their own text
        return game.raw_prompt(player)
    if style == "compact":
        head = f"{game.tag} {game.sides[player]} {game.board_text(player)}"
        tail = ">" if game.feedback is None or player != game.current_player else f" !{game.feedback}>"
        legal = game.legal_actions(player)
        if legal:
            text = f"{head} ?{join_moves(legal)}{tail}"
            if len(text) <= COMPACT_LIMIT and (text.isascii() or len(text.encode()) <= COMPACT_LIMIT):
                return text
        return head + tail
    if style == "verbose":
        legal = game.legal_actions(player)
        lines = [f"{game.title}. You are {game.side_names[player]}.", game.describe(player)]
        if legal:
            lines.append("Legal moves: " + ", ".join(format_action(a) for a in legal) + ".")
        if game.feedback is not None and player == game.current_player:
            lines.append(f"Your last move {game.feedback!r} was illegal; choose a legal move.")
        return "\n".join(lines) + "\nYour move: "
    raise ValueError(f"unknown prompt style {style!r}; valid: {', '.join(PROMPT_STYLES)}")


def allows_transcript(game) -> bool:
    """Whether `game` may be prompted with its transcript: no private information, no text of its own."""
    return game.perfect_information and game.raw_prompt is None


def style_for(game, style: str) -> str:
    """`style`, or compact where `style` is transcript and the game does not allow it: what a model
    policy prompts `game` with."""
    return "compact" if style == "transcript" and not allows_transcript(game) else style


def game_so_far(game) -> str:
    """The moves played so far as compact transcript lines (the mover's compact prompt, the action,
    a newline), replayed from the game's start."""
    replay, lines = game.at_start(), []
    for action in game.history:
        lines.append(format_turn(format_prompt(replay, replay.current_player, "compact"), format_action(action)))
        replay.step(action)
    return "".join(lines)


def format_outcome(game, style: str = "compact") -> str:
    """The line that closes a transcript: compact `ttt end x+1 o-1`; verbose `Game over. ...`."""
    if style == "compact":
        return f"{game.tag} end " + " ".join(f"{s}{r:+g}" for s, r in zip(game.sides, game.rewards))
    verbs = {"win": "wins", "draw": "draws", "loss": "loses"}
    parts = [f"{n} {verbs[o]} ({r:+g})" for n, o, r in zip(game.side_names, game.outcome or (), game.rewards)]
    return f"Game over. {', '.join(parts)}."


def format_turn(prompt: str, action_text: str) -> str:
    """One transcript turn: exactly the prompt the model saw and the text it wrote, then a newline."""
    return f"{prompt}{action_text}\n"
