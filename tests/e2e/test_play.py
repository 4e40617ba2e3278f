"""`stlm play`: a person plays a model in the terminal, driven here by scripted stdin.

A full game is replayed from the printed moves to check that every move was legal and that the
announced result is the game's; bad inputs are re-asked with a reason and change nothing; `q`
and the end of input quit cleanly.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest

from stlm_selfplay.cli import main
from stlm_selfplay.envs import make
from _model_fixtures import save_untrained_tiny

MOVE = re.compile(r"^(you|model) \((x|o)\) plays? (\d)$", re.M)
RESULT = {"win": "You win.", "draw": "Draw.", "loss": "The model wins."}
BOARD_HEADER = "Three in a row wins. Board (numbers are free cells):"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A seeded, untrained tiny STLM saved as a Hugging Face folder."""
    return save_untrained_tiny(tmp_path_factory.mktemp("play") / "model")


def play(model_dir, stdin: str, *args: str, capsys, monkeypatch) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(["play", str(model_dir), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def replay(out: str, human_side: str = "x"):
    """The game rebuilt from the printed moves (each must be legal, in turn order)."""
    game = make("tictactoe").reset(0)
    for who, side, cell in MOVE.findall(out):
        assert game.sides[game.current_player] == side
        assert (who == "you") == (side == human_side)
        assert cell in game.legal_actions(), f"illegal move {cell} printed"
        game.step(cell)
    return game


def test_full_game_as_x_then_decline_another(model_dir, capsys, monkeypatch):
    # try every cell in order, twice over: taken cells are refused and asked again
    moves = "".join(f"{c}\n" for c in "012345678" * 2)
    code, out, _ = play(model_dir, moves + "n\n", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0
    game = replay(out)
    assert game.done
    assert f"Game over: {RESULT[game.outcome[0]]}" in out
    # the board before the first move and after every move, legal moves listed at each of ours
    assert out.count(BOARD_HEADER) == 1 + len(MOVE.findall(out))
    assert "your move (0, 1, 2, 3, 4, 5, 6, 7, 8; q quits)> " in out
    # every answer to a prompt either made our move or was refused with the reason
    ours = sum(1 for who, _, _ in MOVE.findall(out) if who == "you")
    assert out.count("your move (") == ours + out.count("is not a legal move here; legal moves:")
    assert out.rstrip().endswith("bye")


def test_seat_o_model_moves_first(model_dir, capsys, monkeypatch):
    code, out, _ = play(model_dir, "".join(f"{c}\n" for c in "012345678" * 2) + "n\n", "--seat", "o",
                        capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0
    first = MOVE.search(out)
    assert first.group(1) == "model" and first.group(2) == "x"
    game = replay(out, human_side="o")
    assert game.done and f"Game over: {RESULT[game.outcome[1]]}" in out


def test_bad_inputs_are_refused_with_a_reason_then_quit(model_dir, capsys, monkeypatch):
    code, out, _ = play(model_dir, "hello\n9\n[4\n\n[ 4 ]\nq\n", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0
    assert "'hello' is not a legal move here; legal moves: 0, 1, 2, 3, 4, 5, 6, 7, 8" in out
    assert "'9' is not a legal move here" in out
    assert "'[4' has no move between brackets" in out
    assert "please type a move" in out
    assert "you (x) play 4" in out  # "[ 4 ]" is read as 4
    assert len(MOVE.findall(out)) == 2  # our 4 and the model's reply, nothing for the bad inputs
    assert out.rstrip().endswith("bye")


@pytest.mark.parametrize("stdin", ["q\n", "", "quit\n"])
def test_quit_or_end_of_input_leaves_cleanly(model_dir, capsys, monkeypatch, stdin):
    code, out, err = play(model_dir, stdin, capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0 and "bye" in out and not MOVE.findall(out)
    assert "Traceback" not in err


def test_bad_seat_and_temperature_are_one_line_errors(model_dir, capsys, monkeypatch):
    for args, message in ((["--seat", "z"], "--seat 'z' is not a seat"), (["--temperature", "-1"], "--temperature")):
        code, _, err = play(model_dir, "", *args, capsys=capsys, monkeypatch=monkeypatch)
        assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1


def test_real_terminal_process_reads_stdin(model_dir, tmp_path):
    """The installed entry point, with stdin from a pipe: one move, then quit."""
    done = subprocess.run([sys.executable, "-m", "stlm_selfplay", "play", str(model_dir)], input="4\nq\n",
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "you (x) play 4" in done.stdout and "model (o) plays" in done.stdout and "bye" in done.stdout
