"""A fast, quiet CLI: `stlm --help` and every `stlm CMD --help` load neither torch nor the other
heavy libraries; the public model names still load on first use and the HF Auto classes still
resolve `stlm`; third-party progress bars are off unless `stlm --verbose`. Each check runs a fresh
Python in a subprocess (a test process has torch loaded already)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from _model_fixtures import save_untrained_tiny

from stlm_selfplay.cli import COMMANDS, QUIET_ENV

HEAVY = ("torch", "transformers", "wandb", "datasets", "numpy", "pyarrow", "trl", "lm_eval", "safetensors")


def python(code: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_parser_and_every_help_load_no_heavy_library():
    code = f"""
import contextlib, io, json, sys
import stlm_selfplay.cli as cli
loaded = {{}}
for argv in [[], ["--help"], *[[name, "--help"] for name in cli.COMMANDS]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            code = cli.main(argv)
        except SystemExit as done:
            code = done.code
    assert code == 0, (argv, code)
    assert out.getvalue().startswith("usage: stlm"), (argv, out.getvalue()[:80])
    loaded[" ".join(argv)] = sorted(m for m in {HEAVY!r} if m in sys.modules)
for name in cli.COMMANDS:
    cli.build_parser(only=name)
loaded["every parser"] = sorted(m for m in {HEAVY!r} if m in sys.modules)
print(json.dumps(loaded))
"""
    done = python(code)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert set(loaded) == {"", "--help", "every parser", *(f"{n} --help" for n in COMMANDS)}
    assert all(mods == [] for mods in loaded.values()), loaded


def test_help_through_the_real_entry_point_loads_no_torch():
    code = """
import runpy, sys
sys.argv = ["stlm", "run", "--help"]
try:
    runpy.run_module("stlm_selfplay", run_name="__main__")
except SystemExit as done:
    assert done.code == 0, done.code
print("torch" in sys.modules, "transformers" in sys.modules)
"""
    done = python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: stlm run")
    assert done.stdout.splitlines()[-1] == "False False"


def test_public_names_load_lazily_and_auto_classes_resolve_stlm():
    code = """
import sys
import stlm_selfplay
assert "torch" not in sys.modules and "transformers" not in sys.modules
from stlm_selfplay import STLMConfig, STLMForCausalLM, ByteTokenizer
from stlm_selfplay import envs  # a submodule, not a lazy name
from transformers import AutoConfig, AutoModelForCausalLM
config = AutoConfig.for_model("stlm", d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, d_ff=64, d_local=16,
                              local_heads=2, patch_size=2, max_seq_len=64)
assert type(config) is STLMConfig
model = AutoModelForCausalLM.from_config(config)
assert type(model) is STLMForCausalLM
assert stlm_selfplay.STLMForCausalLM is STLMForCausalLM and "STLMForCausalLM" in dir(stlm_selfplay)
try:
    stlm_selfplay.no_such_name
except AttributeError as err:
    assert "no_such_name" in str(err)
else:
    raise AssertionError("no AttributeError")
print("ok", envs.__name__)
"""
    done = python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", "stlm_selfplay.envs"]


def test_a_saved_model_loads_through_auto_classes_after_importing_the_package(tmp_path):
    """Both orders a script may use: transformers first (then `import stlm_selfplay` registers at
    once), or the package's model module (registration on import)."""
    folder = save_untrained_tiny(tmp_path / "m")
    first = "from transformers import AutoModelForCausalLM\nimport stlm_selfplay\n"
    second = "import stlm_selfplay.model\nfrom transformers import AutoModelForCausalLM\n"
    for head in (first, second):
        done = python(head + "import sys\nm = AutoModelForCausalLM.from_pretrained(sys.argv[1])\n"
                      "print(type(m).__name__, m.config.d_model)", str(folder))
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["STLMForCausalLM", "32"]


def test_loading_a_model_shows_no_third_party_bars_unless_verbose(tmp_path):
    """`stlm eval` loads a checkpoint: transformers' "Loading weights" bar appears only with --verbose."""
    folder = save_untrained_tiny(tmp_path / "m")
    argv = ["eval", str(folder), "--game", "tictactoe", "--episodes", "1"]
    runs = {}
    env = {k: v for k, v in os.environ.items() if k not in QUIET_ENV}  # an in-process cli.main set them
    for flags in ([], ["--verbose"]):
        done = subprocess.run([sys.executable, "-m", "stlm_selfplay", *flags, *argv], capture_output=True,
                              text=True, timeout=300, cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"model: {folder}")
        runs[bool(flags)] = done.stderr
    assert runs[False] == "", runs[False]
    assert "Loading weights" in runs[True]


def test_wandb_offline_writes_its_files_and_prints_nothing(tmp_path):
    """`logging.wandb=offline` (the default): wandb's files under the run folder, not a word of
    wandb on the console (no banner, no run summary)."""
    from _pretrain_helpers import text_file, tiny_overrides

    (tmp_path / "empty.yaml").write_text("{}\n")
    args = tiny_overrides(text_file(tmp_path), "wb", steps=2, **{"logging.wandb": "offline", "logging.progress": True})
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE" and k not in QUIET_ENV}
    done = subprocess.run([sys.executable, "-m", "stlm_selfplay", "pretrain", "empty.yaml", *args], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path, env={**env, "WANDB_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "wandb" not in (done.stdout + done.stderr).lower(), done.stdout + done.stderr
    assert done.stdout.startswith("run runs/wb: ")
    runs = list((tmp_path / "runs" / "wb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))
