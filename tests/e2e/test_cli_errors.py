"""The command line as a user meets it: every subcommand answers `--help`, and a wrong path or
run name is one line on stderr (`error: ...`) with exit code 2, for every subcommand that takes
one. Most cases run in-process (`cli.main`); one runs the real entry point to check the exit
code and that no traceback leaks."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from stlm_selfplay.cli import COMMANDS, main


def _has_module(name: str) -> bool:
    return importlib.util.find_spec(f"stlm_selfplay.commands.{COMMANDS[name][0]}") is not None


def _require_module(name: str) -> None:
    """A command listed in `cli.COMMANDS` without its module is a failure, never a skip."""
    assert _has_module(name), f"stlm {name}: its module stlm_selfplay/commands/{COMMANDS[name][0]}.py is missing"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_module_exists_and_defines_its_hooks(command):
    _require_module(command)
    module = importlib.import_module(f"stlm_selfplay.commands.{COMMANDS[command][0]}")
    assert callable(module.add_arguments) and callable(module.run)


def test_a_listed_command_without_its_module_fails(monkeypatch, capsys):
    monkeypatch.setitem(COMMANDS, "ghost", ("no_such_module", "a command whose file was never written"))
    with pytest.raises(AssertionError, match="no_such_module.py is missing"):
        _require_module("ghost")
    with pytest.raises(ModuleNotFoundError):
        main(["ghost", "--help"])


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_subcommand_has_help(command, capsys):
    _require_module(command)
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: stlm {command}")
    assert len(out.splitlines()) > 3  # arguments are described, not just listed


def test_top_level_help_lists_every_subcommand(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


WRONG_PATHS = {
    "run": (["run", "no-such-config.yaml"], "config file 'no-such-config.yaml' not found"),
    "run (bundled name)": (["run", "no-such-bundled"], "not found"),
    "run (init_from)": (["run", "micro", "selfplay.init_from=runs/no-such-run"], "no run or checkpoint at 'runs/no-such-run'"),
    "pretrain": (["pretrain", "no-such-config.yaml"], "config file 'no-such-config.yaml' not found"),
    "selfplay": (["selfplay", "no-such-config.yaml"], "config file 'no-such-config.yaml' not found"),
    "eval": (["eval", "no-such-run", "--game", "tictactoe"], "no run or checkpoint at 'no-such-run'"),
    "eval-lm": (["eval-lm", "no-such-run", "--tasks", "blimp"], "no run or checkpoint at 'no-such-run'"),
    "play": (["play", "no-such-run"], "no run or checkpoint at 'no-such-run'"),
    "report": (["report", "no-such-run"], "no run folder at 'no-such-run'"),
    "params": (["params", "no-such-model.yaml"], "no-such-model.yaml"),
}


@pytest.mark.parametrize("case", list(WRONG_PATHS))
def test_wrong_path_or_run_name_is_one_line_exit_2(case, capsys):
    argv, message = WRONG_PATHS[case]
    _require_module(argv[0])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err


def test_folder_without_a_model_or_report_inputs_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for argv, message in ((["eval", str(tmp_path / "empty"), "--game", "tictactoe"], "holds no model"),
                          (["play", str(tmp_path / "empty")], "holds no model"),
                          (["report", str(tmp_path / "empty")], "is not a run folder")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_eval_names_the_closest_game_and_bot(tmp_path, capsys):
    assert main(["eval", "no-such-run", "--game", "tictactoo"]) == 2
    assert "did you mean 'tictactoe'" in capsys.readouterr().err
    assert main(["eval", "no-such-run", "--game", "tictactoe", "--opponent", "minmax"]) == 2
    assert "did you mean 'minimax'" in capsys.readouterr().err


def test_real_process_exit_code_and_no_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "stlm_selfplay", "eval", "no-such-run", "--game", "tictactoe"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("error: no run or checkpoint at 'no-such-run'")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
