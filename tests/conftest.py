"""Shared test setup: the test data, the one tiny model, quiet logging, and no writes outside tmp dirs.

The tests are grouped by area (`tests/model/`, `envs/`, `objectives/`, `selfplay/`, `train/`,
`data_pipeline/`, `eval/`, `e2e/`); the helpers they share live here and in `tests/_*.py`, which
they import by name (`pythonpath = ["tests"]` in pyproject.toml):

    def test_x(tiny_model):                      # the fixture: a factory
        model = tiny_model(n_layers=2).eval()    # fields of TINY overridden, seeded init
    from conftest import TEST_TEXT, make_tiny_model   # the same, in helper modules

The suite passes without the sibling `shared/` folder (a user's clone has none): tests train on
`tests/data/alice-ch1-5.txt`. Only the `shakespeare_path` fixture reads `shared/`, for the slow
full-config tests; it skips when the file is missing or `STLM_NO_SHARED=1` (what `.ci/run` sets to
prove a bare clone passes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
TEST_DATA = REPO_ROOT / "tests" / "data"  # the files shipped with the tests (data/README.md)
TEST_TEXT = TEST_DATA / "alice-ch1-5.txt"  # public domain, 60 KB

# the tests' tiny STLM (~20k parameters): the `micro` model preset (configs/model/micro.yaml, also the
# model of configs/micro.yaml): width 32, one trunk layer, 2-byte patches, one local layer each side
TINY_PRESET = "micro"
TINY = yaml.safe_load((REPO_ROOT / "configs" / "model" / f"{TINY_PRESET}.yaml").read_text())


def tiny_model_config(**overrides):
    """STLMConfig of TINY with `overrides` replacing its fields (or setting others)."""
    from stlm_selfplay.model import STLMConfig

    return STLMConfig(**{**TINY, **overrides})


def make_tiny_model(seed: int = 0, **overrides):
    """An untrained STLM of `tiny_model_config(**overrides)`, its init seeded with `seed` without
    touching the caller's global RNG (in training mode, as constructed)."""
    import torch

    from stlm_selfplay.model import STLMForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return STLMForCausalLM(tiny_model_config(**overrides))


def tiny_model_overrides(**overrides) -> list[str]:
    """The same model as config overrides for a run: the `micro` preset (with `overrides` set), e.g.
    `load_config(None, tiny_model_overrides() + [...])`."""
    return [f"model.preset={TINY_PRESET}"] + [f"model.overrides.{k}={v}" for k, v in overrides.items()]


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


@pytest.fixture(scope="session")
def tiny_model():
    """The factory `make_tiny_model(seed=0, **overrides)`: a fresh seeded tiny model per call."""
    return make_tiny_model


@pytest.fixture
def shakespeare_path() -> Path:
    path = SHARED_DATA / "tinyshakespeare.txt"
    if os.environ.get("STLM_NO_SHARED") == "1":
        pytest.skip("STLM_NO_SHARED=1: the shared data folder is treated as absent")
    if not path.is_file():
        pytest.skip(f"{path} is missing (the shared data folder beside the repo)")
    return path
