"""Shared test setup: the test text, quiet logging, and no writes outside tmp dirs.

The suite passes without the sibling `shared/` folder (a user's clone has none): tests train on
`tests/data/alice-ch1-5.txt`. Only the `shakespeare_path` fixture reads `shared/`, for the slow
full-config tests; it skips when the file is missing or `STLM_NO_SHARED=1` (what `.ci/run` sets to
prove a bare clone passes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
TEST_TEXT = REPO_ROOT / "tests" / "data" / "alice-ch1-5.txt"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """Run every test in its own folder, with wandb off and no network lookups."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    yield


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def text_path() -> Path:
    """60 KB of real public-domain text shipped with the tests."""
    return TEST_TEXT


@pytest.fixture
def shakespeare_path() -> Path:
    path = SHARED_DATA / "tinyshakespeare.txt"
    if os.environ.get("STLM_NO_SHARED") == "1":
        pytest.skip("STLM_NO_SHARED=1: the shared data folder is treated as absent")
    if not path.is_file():
        pytest.skip(f"{path} is missing (the shared data folder beside the repo)")
    return path
