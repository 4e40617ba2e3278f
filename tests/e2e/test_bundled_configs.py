"""The bundled configs ship with the package: found by name from any folder, installed as package
data (every file under configs/ is matched by pyproject's package-data globs), and looked up in
the installed package first. `.ci/run` checks the real thing: a wheel in a fresh venv runs
`stlm run micro` from an empty folder."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

import pytest

from stlm_selfplay import bundled
from stlm_selfplay.config import load_config
from stlm_selfplay.errors import UserError
from stlm_selfplay.model.config import PRESET_DIR, PRESETS, load_preset
from stlm_selfplay.stages import find_config

REPO = Path(__file__).resolve().parents[2]


def test_every_config_file_is_package_data():
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert tool["package-dir"]["stlm_selfplay.configs"] == "configs"
    assert "stlm_selfplay.configs" in tool["packages"]
    globs = tool["package-data"]["stlm_selfplay.configs"]
    files = [p.relative_to(REPO / "configs").as_posix() for p in (REPO / "configs").rglob("*") if p.is_file()]
    assert files and all(p.endswith(".yaml") for p in files), files
    missed = [f for f in files if not any(fnmatch.fnmatch(f, g) and f.count("/") == g.count("/") for g in globs)]
    assert not missed, f"not shipped in a wheel: {missed}"


@pytest.mark.parametrize("name, expected", [
    (None, "quickstart.yaml"), ("micro", "micro.yaml"), ("micro.yaml", "micro.yaml"),
    ("configs/micro.yaml", "micro.yaml"), ("pretrain/shakespeare-tiny", "pretrain/shakespeare-tiny.yaml"),
    ("configs/selfplay/kuhn.yaml", "selfplay/kuhn.yaml"),
])
def test_bundled_names_resolve_from_an_empty_folder(tmp_path, name, expected):
    assert not any(tmp_path.iterdir())  # the test runs in an empty folder (conftest chdir)
    found = bundled.config_file(name or "quickstart")
    assert found == REPO / "configs" / expected
    if name is None or "/" not in name or name.startswith("configs/micro"):
        assert find_config(name) == found


def test_a_local_file_wins_over_a_bundled_one(tmp_path):
    (tmp_path / "micro.yaml").write_text("run: {name: mine}\n")
    assert find_config("micro.yaml") == Path("micro.yaml")
    assert load_config("micro.yaml").run.name == "mine"
    assert load_config("configs/pretrain/shakespeare-tiny.yaml").run.name == "shakespeare-tiny"  # bundled


@pytest.mark.parametrize("name", ["no-such-config", "x" * 5000, "/abs/micro.yaml", "../configs/micro.yaml"])
def test_unknown_or_unusable_names_are_not_found(name):
    assert bundled.config_file(name) is None
    with pytest.raises(UserError, match="not found"):
        find_config(name)


def test_installed_package_data_is_looked_up_first(tmp_path, monkeypatch):
    """A wheel puts the configs at stlm_selfplay/configs/: that copy is used, not a checkout's."""
    package = tmp_path / "site-packages" / "stlm_selfplay"
    (package / "configs" / "model").mkdir(parents=True)
    (package / "configs" / "micro.yaml").write_text("run: {name: from-wheel}\n")
    (package / "configs" / "model" / "tiny.yaml").write_text("d_model: 48\n")
    monkeypatch.setattr(bundled, "_PACKAGE", package)
    assert bundled.configs_dir() == package / "configs"
    assert load_config(str(find_config("micro"))).run.name == "from-wheel"
    assert bundled.bundled_names("model") == ["tiny"]


def test_model_presets_are_the_bundled_model_configs():
    assert PRESET_DIR == bundled.configs_dir() / "model"
    assert PRESETS.list() == bundled.bundled_names("model") and "tiny" in PRESETS
    assert load_preset("tiny") == load_preset(str(PRESET_DIR / "tiny.yaml"))
    with pytest.raises(UserError, match="unknown model preset"):
        load_preset("x" * 5000)
