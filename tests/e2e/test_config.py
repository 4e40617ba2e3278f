"""The root config: YAML + dotlist merge, and one-line errors naming the closest valid key."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from stlm_selfplay.config import RootConfig, load_config
from stlm_selfplay.errors import UserError
from stlm_selfplay.runs import save_config


def test_yaml_then_overrides_win(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optimizer:\n  lr: 0.01\nschedule:\n  steps: 7\nobjectives:\n  - {name: ce, weight: 2.0}\n")
    cfg = load_config(path, ["optimizer.lr=0.5", "data.batch_size=3"])
    assert isinstance(cfg, RootConfig)
    assert cfg.optimizer.lr == 0.5  # override beats YAML
    assert cfg.schedule.steps == 7  # YAML beats default
    assert cfg.data.batch_size == 3
    assert cfg.objectives == [{"name": "ce", "weight": 2.0}]
    assert cfg.run.out_dir == "runs" and cfg.stages == ["pretrain"]


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["run.seed=5", "model.overrides.n_layers=2", "data.games={tictactoe: 1.0}"])
    save_config(cfg, tmp_path / "out" / "config.yaml")
    again = load_config(tmp_path / "out" / "config.yaml")
    assert again == cfg
    assert list((tmp_path / "out").iterdir()) == [tmp_path / "out" / "config.yaml"]  # no temp left


@pytest.mark.parametrize("overrides, expected", [
    (["optimizer.lrr=1"], "unknown config key 'optimizer.lrr' in overrides (did you mean 'optimizer.lr'?)"),
    (["optimzer.lr=1"], "(did you mean 'optimizer'?)"),
    (["schedule.step=3"], "(did you mean 'schedule.steps'?)"),
    (["optimizer.lr=abc"], "bad value for config key 'optimizer.lr'"),
    (["data.batch_size=2.5"], "bad value for config key 'data.batch_size'"),
    (["run.device=cuad"], "(did you mean 'cuda'?)"),
    (["schedule.kind=cosin"], "(did you mean 'cosine'?)"),
    (["data.seq_len=0"], "'data.seq_len' must be > 0"),
    (["data.val_fraction=1.5"], "'data.val_fraction' must be in [0, 1)"),
    (["stages=[pretrian]"], "(did you mean 'pretrain'?)"),
    (["objectives=[{name: cee}]"], "(did you mean 'ce'?)"),
    (["noequals"], "must look like key=value"),
    (["run.resume=/no/such/checkpoint"], "no checkpoint at '/no/such/checkpoint'"),
])
def test_bad_values_are_one_line_user_errors(overrides, expected):
    with pytest.raises(UserError) as info:
        load_config(None, overrides)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_yaml_typo_names_the_file(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("logging:\n  eval_evrey: 3\n")
    with pytest.raises(UserError, match=r"'logging.eval_evrey' in .*typo.yaml \(did you mean 'logging.eval_every'\?\)"):
        load_config(path)


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="config file .*nope.yaml' not found"):
        load_config(tmp_path / "nope.yaml")


def test_every_option_is_documented_where_declared():
    """Each field of each config dataclass of config.py is an `option` with a help text (the schema
    documents itself; tests/e2e/test_options.py checks every schema)."""
    import dataclasses

    import stlm_selfplay.config as config
    from stlm_selfplay.options import option_help

    classes = [c for c in vars(config).values() if dataclasses.is_dataclass(c) and c.__module__ == config.__name__]
    fields = [(c.__name__, f.name, option_help(f)) for c in classes for f in dataclasses.fields(c)]
    assert len(fields) > 40
    undocumented = [(c, name) for c, name, text in fields if not text]
    assert not undocumented, undocumented
    assert OmegaConf.structured(RootConfig)  # the schema builds
