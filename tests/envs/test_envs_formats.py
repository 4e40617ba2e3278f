"""Prompt/action text, transcripts, determinism, and `stlm data games`."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from stlm_selfplay.cli import main
from stlm_selfplay.envs import format_action, format_prompt, list_games, make, make_player, parse_action, play_game
from stlm_selfplay.envs.formats import COMPACT_LIMIT, format_outcome
from stlm_selfplay.envs.transcripts import generate_transcripts

EVERY_GAME = ["connect_four", "kuhn_poker", "nim", "simple_negotiation", "tictactoe"]


def test_registry_lists_every_game_and_alias():
    from stlm_selfplay import envs

    assert list_games() == EVERY_GAME == envs.list()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[4]", "4"), ("I play [ 4 ] now", "4"), ("[Bet]", "bet"), ("[BET] [check]", "bet"),
        ("4", None), ("", None), ("[4", None), ("]4[", None), ("x]y[1:2]z", "1:2"), ("[[4]]", "[4"),
        (b"\xff\xfe[4]", "4"), (b"[\xff]", "\ufffd"), (None, None), (12, None),
    ],
)
def test_parse_action_takes_the_first_bracketed_token(text, expected):
    assert parse_action(text) == expected


def test_format_action_round_trips_through_parse():
    for action in ("4", "check", "1:3", "2a:1b", "accept"):
        assert format_action(action) == f"[{action}]" and parse_action(format_action(action)) == action


def test_compact_prompts_fit_64_bytes_and_list_moves_when_they_fit():
    rng = random.Random(0)
    for name in EVERY_GAME:
        game = make(name)
        for episode in range(30):
            game.reset(episode)
            while not game.done:
                prompt = format_prompt(game, game.current_player)
                assert len(prompt.encode()) <= COMPACT_LIMIT, prompt
                assert prompt.startswith(game.tag + " ") and prompt.endswith(">")
                legal = game.legal_actions()
                listed = ("" if all(len(a) == 1 for a in legal) else ",").join(legal)
                if name in ("tictactoe", "connect_four", "kuhn_poker"):
                    assert f" ?{listed}>" in prompt
                game.step(rng.choice(legal))
    assert format_prompt(make("tictactoe")) == "ttt x ...|...|... ?012345678>"
    assert format_prompt(make("kuhn_poker", seed=0), 0) in {f"kuhn a {c} - ?check,bet>" for c in "JQK"}


def test_verbose_prompt_names_the_moves_and_ends_where_the_model_writes():
    game = make("tictactoe")
    game.step("4")
    prompt = format_prompt(game, 1, style="verbose")
    assert prompt.startswith("Tic-tac-toe. You are O.") and prompt.endswith("\nYour move: ")
    assert "[0], [1], [2], [3], [5]" in prompt and "[4]" not in prompt.split("Legal moves:")[1]
    game = make("kuhn_poker", seed=0)
    game.step("bet"), game.step("fold")
    assert format_outcome(game, "verbose") == "Game over. player 1 wins (+1), player 2 loses (-1)."
    assert format_outcome(game) == "kuhn end a+1 b-1"


def _replayed_transcript(game_cls_name, history, deal, style, options=None):
    """The transcript rebuilt from the game's history: prompt + [action] + newline per turn."""
    game = make(game_cls_name, **(options or {}))
    game.reset(0, deal=deal)
    text = ""
    for action in history:
        text += format_prompt(game, game.current_player, style) + format_action(action) + "\n"
        game.step(action)
    return text + format_outcome(game, style) + "\n"


@pytest.mark.parametrize("style", ["compact", "verbose"])
def test_transcript_is_the_concatenation_of_what_rollouts_show(style):
    for name in EVERY_GAME:
        game = make(name, seed=5)
        bots = [make_player(name, "random"), make_player(name, "random")]
        episode = play_game(game, bots, [random.Random(1), random.Random(2)], style=style)
        assert episode.transcript(style) == _replayed_transcript(name, game.history, game.deal, style)


def test_transcripts_are_deterministic_mixed_and_rotate_seats():
    mix = {"tictactoe": 3, "nim": 1, "kuhn_poker": 1}
    docs = list(generate_transcripts(mix, ["random", "optimal"], 200, seed=7))
    assert docs == list(generate_transcripts(mix, ["random", "optimal"], 200, seed=7))
    assert docs != list(generate_transcripts(mix, ["random", "optimal"], 200, seed=8))
    tags = [doc.split(" ", 1)[0] for doc in docs]
    assert 0.45 < tags.count("ttt") / 200 < 0.75 and tags.count("nim") > 15 and tags.count("kuhn") > 15
    for doc in docs:
        assert doc.endswith("\n") and doc.splitlines()[-1].split(" ")[1] == "end"
    # optimal sits first in odd episodes: as x, minimax never loses to random
    ttt_odd = [d for i, d in enumerate(docs) if i % 2 == 1 and d.startswith("ttt")]
    assert ttt_odd and all(not d.rstrip().endswith("x-1 o+1") for d in ttt_odd)
    assert list(generate_transcripts(["nim"], {"nim": ["optimal", "optimal"]}, 3, seed=0))


def test_interleaved_games_match_games_run_alone():
    names = ["kuhn_poker", "simple_negotiation", "tictactoe", "connect_four", "nim"]
    texts = ["[bet]", b"\xff junk", "[1a:1b]", "[4]", "[0:1]", "", "[call]", "[2]"]  # some illegal: random rule

    def run(order_interleaved: bool):
        games = [make(n, illegal="random", seed=10 + i, **({"rounds": 3} if n == "kuhn_poker" else {})) for i, n in enumerate(names)]
        cursors = [0] * len(games)
        live = list(range(len(games)))
        while live:
            batch = live if order_interleaved else live[:1]
            for gi in batch:
                games[gi].step(texts[cursors[gi] % len(texts)])
                cursors[gi] += 1
            live = [gi for gi in live if not games[gi].done]
        return [(g.history, g.rewards, g.illegal_counts, g.deal) for g in games]

    assert run(True) == run(False)


def test_global_random_state_is_untouched():
    random.seed(1234)
    np.random.seed(99)
    before, before_np = random.getstate(), np.random.get_state()[1].copy()
    docs = list(generate_transcripts(EVERY_GAME, ["random", "random"], 50, seed=0))
    game = make("kuhn_poker", illegal="random", seed=None)
    while not game.done:
        game.step("junk")
    assert docs and random.getstate() == before and (np.random.get_state()[1] == before_np).all()


def test_cli_data_games_writes_txt_and_jsonl(tmp_path, capsys):
    out = tmp_path / "ttt.txt"
    args = ["data", "games", "--game", "tictactoe", "--players", "random,random", "--episodes", "20", "--format", "compact", "--seed", "3"]
    assert main(args + ["--out", str(out)]) == 0
    expected = list(generate_transcripts(["tictactoe"], ["random", "random"], 20, seed=3))
    assert out.read_text() == "\n".join(expected)
    assert main(args + ["--out", str(tmp_path / "ttt.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "ttt.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == expected
    assert "wrote 20 games" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--game", "chess", "--out", "x.txt"], "unknown game 'chess'"),
        (["--game", "tictactoe", "--out", "x.csv"], "must end in .txt or .jsonl"),
        (["--game", "connect_four", "--players", "random,optimal", "--out", "x.txt"], "unknown connect_four player 'optimal'"),
        (["--game", "tictactoe=abc", "--out", "x.txt"], "not a number"),
    ],
)
def test_cli_data_games_rejects_bad_input_without_writing(tmp_path, capsys, extra, message):
    assert main(["data", "games"] + extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
