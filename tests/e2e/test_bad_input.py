"""Bad input, as a user gives it: each case runs the real `stlm` in a subprocess and must print
exactly one line, `error: ...` naming the file or key and the fix, exit with code 2, show no
traceback and leave no run folder behind. The table in docs/errors.md lists the same cases.
A fuzz test then feeds 1,000 random byte strings each as config overrides, data files and
`stlm play` input lines (in-process, through `cli.main`): exit 0 or 2, never an exception."""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from stlm_selfplay.cli import main
from stlm_selfplay.envs import make
from _model_fixtures import save_untrained_tiny

REPO = Path(__file__).resolve().parents[2]
PRETRAIN = str(REPO / "configs" / "pretrain" / "shakespeare-tiny.yaml")
TINY = ["model.preset=tiny", "model.overrides.d_model=32", "model.overrides.n_layers=1", "model.overrides.d_ff=64",
        "model.overrides.d_local=16", "model.overrides.max_seq_len=64", "data.seq_len=32", "data.batch_size=2",
        "schedule.steps=2", "logging.wandb=disabled", "run.device=cpu", "run.cpu_threads=1"]
LONG = "x" * 5000


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A seeded, untrained tiny STLM saved as a Hugging Face folder."""
    return save_untrained_tiny(tmp_path_factory.mktemp("bad-input") / "model")


def stlm(*args: str, stdin: bytes | None = None, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "stlm_selfplay", *args], input=stdin, capture_output=True,
                          timeout=300, cwd=cwd, env=env)


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder a file cannot be created in: a read-only folder, or /sys for root (root ignores modes)."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    if not Path("/sys/kernel").is_dir():
        pytest.skip("running as root without /sys: no folder is unwritable")
    return Path("/sys/kernel")


def _case(name: str, tmp: Path, model: Path) -> tuple[list[str], bytes | None]:
    (tmp / "list.yaml").write_text("- run\n- model\n")
    (tmp / "binary.txt").write_bytes(bytes(random.Random(0).randrange(128, 256) for _ in range(3000)))
    (tmp / "bad.jsonl").write_text('{"text": "fine"}\n{"text": not json}\n')
    return {
        "config top-level list": (["pretrain", "list.yaml"], None),
        "binary data, pretrain": (["pretrain", PRETRAIN, "data.path=binary.txt", *TINY], None),
        "binary data, run": (["run", "micro", "data.source=text", "data.path=binary.txt"], None),
        "malformed jsonl": (["pretrain", PRETRAIN, "data.path=bad.jsonl", *TINY], None),
        "5,000-character preset": (["pretrain", PRETRAIN, f"model.preset={LONG}"], None),
        "5,000-character preset, params": (["params", LONG], None),
        "5,000-character run name": (["run", "micro", f"run.name={LONG}"], None),
        "game weight nan": (["data", "games", "--game", "tictactoe=nan", "--out", "g.txt"], None),
        "unwritable --out": (["data", "games", "--game", "tictactoe", "--out", str(unwritable_folder(tmp) / "g.txt")],
                             None),
        "non-UTF-8 play input": (["play", str(model), "--game", "tictactoe"], b"\xff\xfe[4]\n"),
        "eval --temperature nan": (["eval", str(model), "--game", "tictactoe", "--temperature", "nan"], None),
        "play --temperature nan": (["play", str(model), "--temperature", "nan"], b"q\n"),
        "mix weight nan": (["run", "micro", "data.games.tictactoe=nan"], None),
        "self-play mix weight inf": (["run", "micro", "selfplay.stages=[{games: {tictactoe: 1}, opponents: {self: inf}}]"],
                                     None),
        "list index as a key": (["run", "micro", "selfplay.stages.0.opponents.self=1"], None),
        "value outside the choices": (["run", "micro", "run.device=gpu"], None),
        "self-play value outside the choices": (
            ["run", "micro", "selfplay.stages=[{games: {tictactoe: 1}, opponents: {self: 1}, mode: fre}]"], None),
    }[name]


EXPECTED = {  # the start of the one line each case prints (docs/errors.md has the same table)
    "config top-level list": "error: config file 'list.yaml' must be a mapping of sections (run:, model:, data:, ...), not a list",
    "binary data, pretrain": "error: data file 'binary.txt' is not UTF-8 text (byte 0x",
    "binary data, run": "error: data file 'binary.txt' is not UTF-8 text (byte 0x",
    "malformed jsonl": "error: cannot parse data file 'bad.jsonl': JSON parse error",
    "5,000-character preset": "error: unknown model preset 'xxxxxxxx",
    "5,000-character preset, params": "error: unknown model preset 'xxxxxxxx",
    "5,000-character run name": "error: name too long for the file system: 'runs/xxxx",
    "game weight nan": "error: weight in 'tictactoe=nan' must be a finite number >= 0",
    "unwritable --out": "error: permission denied: ",
    "non-UTF-8 play input": "error: standard input is not UTF-8 text (byte 0xff at offset 0)",
    "eval --temperature nan": "error: --temperature nan is not a finite number",
    "play --temperature nan": "error: --temperature nan is not a finite number",
    "mix weight nan": "error: config key 'data.games.tictactoe' is nan; it must be a finite number",
    "self-play mix weight inf": "error: config key 'selfplay.stages.0.opponents.self' is inf; it must be a finite number",
    "list index as a key": "error: invalid config in overrides: Cannot merge incompatible container types",
    "value outside the choices": "error: config key 'run.device' must be one of auto, cpu, cuda, mps, got 'gpu' "
                                 "(did you mean 'cpu'?)",
    "self-play value outside the choices": "error: config key 'selfplay.stages[0].mode' must be one of constrained, "
                                           "free, got 'fre' (did you mean 'free'?)",
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(name, tmp_path, model_dir):
    args, stdin = _case(name, tmp_path, model_dir)
    proc = stlm(*args, stdin=stdin, cwd=tmp_path)
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2, err[-3000:]
    assert "Traceback" not in err and err.count("\n") == 1, err[-3000:]
    assert err.startswith(EXPECTED[name]), err
    assert len(err) < 400, err  # a 5,000-character name is shortened
    assert not (tmp_path / "runs").exists() and not (tmp_path / "g.txt").exists()


def test_preview_of_non_string_actions_under_retry():
    """envs/base.py `_preview` (the retry feedback) takes any object a caller passes."""
    for action, shown in ((-1, "-1"), (1.5, "1.5"), (None, "None"), (b"\xff" * 20, "?" * 8 + "...")):
        game = make("tictactoe", illegal="retry:2", seed=0)
        result = game.step(action)
        assert result.rule == "retry" and game.feedback == shown and game.turn == 0


# ---------------------------------------------------------------------------------------------
# Fuzz: random byte strings as overrides, data files and play input (in-process, fast).

def _random_bytes(rng: random.Random) -> bytes:
    pieces = [rng.randbytes(rng.choice([1, 3, 8, 30])), b"=", b".", b"data.", b"model.preset=", b"run.seed=",
              b"nan", b"inf", b"\xff", b"[", b"]", b"{", b"}", b"'", b"\"", b"\n", b"\x00", b"=" * 3]
    return b"".join(rng.choice(pieces) for _ in range(rng.randrange(1, 6)))


def _exit_code(argv, capsys) -> int:
    try:
        code = main(argv)
    except SystemExit as done:  # argparse refusing an argument exits 2 itself
        code = done.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if code == 2 and err:
        assert err.startswith(("error: ", "usage: ")), err
    return code


def test_fuzz_overrides_exit_0_or_2(capsys):
    rng = random.Random(0)
    codes = [_exit_code(["pretrain", PRETRAIN, "--print-config",
                         _random_bytes(rng).decode("utf-8", "surrogateescape")], capsys) for _ in range(1000)]
    assert set(codes) <= {0, 2} and codes.count(2) > 100, sorted(set(codes))


def test_fuzz_data_files_exit_0_or_2(tmp_path, capsys):
    """1,000 random byte files read by the text source (a .txt, .jsonl or .json each), through
    `cli.main`'s error handling: a document list or a one-line error, never an exception."""
    from stlm_selfplay.config import load_config
    from stlm_selfplay.data.sources import get_source
    from stlm_selfplay.errors import as_user_error

    rng = random.Random(1)
    codes = []
    for i in range(1000):
        suffix = (".txt", ".jsonl", ".json")[i % 3]
        data = _random_bytes(rng) if i % 2 else b'{"text": "' + _random_bytes(rng) + b'"}\n'
        path = tmp_path / f"f{i}{suffix}"
        path.write_bytes(data)
        cfg = load_config(None, ["data.source=text", f"data.path={path}"]).data
        try:
            list(get_source("text").documents(cfg))
            codes.append(0)
        except Exception as err:  # noqa: BLE001 - what cli.main would do with it
            assert as_user_error(err) is not None, (data, repr(err))
            codes.append(2)
    assert codes.count(2) > 100 and codes.count(0) > 100


def test_fuzz_play_input_lines_exit_0_or_2(model_dir, capsys, monkeypatch):
    rng = random.Random(2)
    codes = []
    for _ in range(1000):
        line = _random_bytes(rng).replace(b"\n", b" ")
        stdin = io.TextIOWrapper(io.BytesIO(line + b"\nq\n"), encoding="utf-8", errors="strict")
        monkeypatch.setattr(sys, "stdin", stdin)
        codes.append(_exit_code(["play", str(model_dir), "--game", "tictactoe"], capsys))
        capsys.readouterr()
    assert set(codes) <= {0, 2} and codes.count(2) > 100 and codes.count(0) > 100, sorted(set(codes))


def test_cut_off_last_metrics_line_is_skipped_and_truncation_removes_it(tmp_path, capsys):
    from stlm_selfplay.train.metrics import read_metrics, truncate_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "kind": "train", "loss": 2.0}\n{"step": 2, "kind": "train", "loss": 1.5}\n{"step": 3, "ki')
    assert [r["step"] for r in read_metrics(path)] == [1, 2]
    assert "cut-off last line" in capsys.readouterr().err
    truncate_metrics(path, 1)
    assert path.read_text() == '{"step": 1, "kind": "train", "loss": 2.0}\n'
