"""Config options carry their help and choices as field metadata (stlm_selfplay/options.py), and
that one declaration drives validation and `--print-config`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import List

import pytest
import yaml

from stlm_selfplay.config import RootConfig, load_config
from stlm_selfplay.errors import UserError
from stlm_selfplay.objectives.registry import REGISTRY as OBJECTIVES
from stlm_selfplay.options import check_choices, commented_yaml, option, option_choices, option_help, schema_options
from stlm_selfplay.runs import config_yaml


@dataclass
class _Inner:
    mode: str = option("a", "the mode", choices=("a", "b"))


@dataclass
class _Outer:
    items: List[int] = option([1, 2], "a list default, copied per instance")
    inner: _Inner = option(help="a section", factory=_Inner)
    inners: List[_Inner] = option(help="sections", factory=lambda: [_Inner()])
    maybe: str = option("", "empty or one of x, y", choices=("", "x", "y"))


def test_option_declares_help_choices_and_fresh_mutable_defaults():
    one, two = _Outer(), _Outer()
    one.items.append(3)
    assert two.items == [1, 2] and two.inner is not one.inner
    by_name = {f.name: f for f in dataclasses.fields(_Outer)}
    assert option_help(by_name["items"]) == "a list default, copied per instance"
    assert option_choices(dataclasses.fields(_Inner)[0]) == ("a", "b") and option_choices(by_name["items"]) is None
    assert [key for key, _ in schema_options(_Outer)] == ["items", "inner", "inner.mode", "inners", "inners[].mode",
                                                         "maybe"]
    with pytest.raises(ValueError, match="help"):
        option(1)


@pytest.mark.parametrize("change, message", [
    (lambda c: setattr(c.inner, "mode", "c"), "config key 'inner.mode' must be one of a, b, got 'c'"),
    (lambda c: setattr(c.inners[0], "mode", "bb"), "config key 'inners[0].mode' must be one of a, b, got 'bb' "
                                                   "(did you mean 'b'?)"),
    (lambda c: setattr(c, "maybe", "z"), "config key 'maybe' must be one of x, y or empty, got 'z'"),
])
def test_a_value_outside_the_choices_is_a_one_line_error_naming_them(change, message):
    cfg = _Outer()
    check_choices(cfg)
    change(cfg)
    with pytest.raises(UserError) as err:
        check_choices(cfg)
    assert str(err.value) == message


def _root_choice_keys():
    """(dotted key, choices) of every root-config option with choices outside `selfplay`."""
    return [(key, option_choices(f)) for key, f in schema_options(RootConfig)
            if option_choices(f) is not None and not key.startswith("selfplay.")]


def test_every_root_choice_option_refuses_other_values_in_one_line():
    keys = _root_choice_keys()
    assert {"run.device", "run.dtype", "data.split", "data.game_style", "optimizer.name", "schedule.kind",
            "logging.wandb"} <= {k for k, _ in keys}
    for key, choices in keys:
        with pytest.raises(UserError) as err:
            load_config(None, [f"{key}=bogus_choice"])
        text = str(err.value)
        assert "\n" not in text and f"'{key}'" in text and "bogus_choice" in text
        assert all(str(c) in text for c in choices if c), text


def _objective_choice_options():
    return [(name, f) for name, cls in OBJECTIVES.items() for f in dataclasses.fields(cls.Options)
            if option_choices(f) is not None]


def test_every_objective_choice_option_refuses_other_values_in_one_line():
    from stlm_selfplay.objectives import build_objective

    found = _objective_choice_options()
    assert {(n, f.name) for n, f in found} >= {("distill", "loss"), ("early_exit", "scale"), ("mtp", "anneal"),
                                               ("ppo", "loss_type")}
    for name, f in found:
        spec = {"name": name, f.name: "bogus_choice", **({"teacher": "x"} if name == "distill" else {})}
        with pytest.raises(UserError) as err:
            build_objective(spec)
        text = str(err.value)
        assert text.startswith(f"objective '{name}': {f.name} must be one of ") and "\n" not in text
        assert all(str(c) in text for c in option_choices(f)), text


@pytest.mark.parametrize("path, overrides", [
    ("configs/micro.yaml", []),
    ("configs/quickstart.yaml", ["run.name='x y: z # not a comment'", "run.resume=never"]),
    (None, ["selfplay.stages=[{games: {tictactoe: 1.0}, opponents: {self: 1.0}, mode: free}]"]),
])
def test_print_config_comments_each_option_and_loads_back_to_the_same_config(repo_root, path, overrides):
    cfg = load_config(repo_root / path if path else None, overrides)
    text = commented_yaml(cfg)
    assert yaml.safe_load(text) == yaml.safe_load(config_yaml(cfg))
    assert "# peak AdamW learning rate (the schedule scales it)\n  lr: " in text
    assert "# where to run: auto (cuda > mps > cpu), cpu, cuda or mps\n  device: " in text


def test_print_config_prints_the_comments(tmp_path, capsys):
    from stlm_selfplay.cli import main

    assert main(["pretrain", "--print-config", str(tmp_path / "none.yaml")]) == 2
    capsys.readouterr()
    (tmp_path / "c.yaml").write_text("run: {name: x}\n")
    assert main(["pretrain", "--print-config", str(tmp_path / "c.yaml"), "optimizer.lr=0.5"]) == 0
    out = capsys.readouterr().out
    assert "  # peak AdamW learning rate (the schedule scales it)\n  lr: 0.5\n" in out
    assert yaml.safe_load(out)["run"]["name"] == "x"


def _schemas():
    """(name, schema class) of every config schema: the root config (with every nested section),
    each registered objective's options, each advantage estimator's options, the model's fields
    and the compare file's keys."""
    from stlm_selfplay.compare.spec import CompareFile
    from stlm_selfplay.model.config import STLMConfig
    from stlm_selfplay.selfplay.advantages import ESTIMATORS

    return [("root", RootConfig), ("model", STLMConfig), ("compare", CompareFile)] + \
        [(f"objective {n}", c.Options) for n, c in OBJECTIVES.items()] + \
        [(f"advantage estimator {n}", c) for n, c in ESTIMATORS.items()]


def test_every_option_of_every_schema_has_a_help_text():
    from stlm_selfplay.model.config import CONFIG_FIELDS

    undocumented, count = [], 0
    for name, cls in _schemas():
        for key, f in schema_options(cls):
            if (name == "model" and key not in CONFIG_FIELDS) or not f.init:
                continue  # transformers' own PreTrainedConfig fields; state that is not an option (init=False)
            count += 1
            if not option_help(f):
                undocumented.append(f"{name}: {key}")
    assert count > 200 and not undocumented, undocumented


def _set(cfg, key: str, value) -> None:
    """Set a dotted key (`a.b[].c`: the first item of list `b`) on a config object."""
    *path, last = key.split(".")
    for part in path:
        cfg = getattr(cfg, part.removesuffix("[]"))
        if part.endswith("[]"):
            cfg = cfg[0]
    setattr(cfg, last, value)


def test_every_selfplay_choice_option_refuses_other_values_in_one_line():
    from stlm_selfplay.selfplay.config import check_selfplay

    keys = [(key, option_choices(f)) for key, f in schema_options(RootConfig)
            if option_choices(f) is not None and key.startswith("selfplay.")]
    assert {"selfplay.stages[].mode", "selfplay.pool.sampling", "selfplay.lr_schedule", "selfplay.eval.mode",
            "selfplay.search.prior"} <= {k for k, _ in keys}
    for key, choices in keys:
        cfg = load_config(None)
        _set(cfg, key, "bogus_choice")
        with pytest.raises(UserError) as err:
            check_selfplay(cfg.selfplay)
        text = str(err.value)
        assert text.startswith(f"config key '{key.replace('[]', '[0]')}' must be one of ") and "\n" not in text
        assert all(str(c) in text for c in choices if c), text


def test_every_model_choice_option_refuses_other_values_in_one_line():
    from stlm_selfplay.config import build_model_config
    from stlm_selfplay.model.config import STLMConfig

    found = [f for f in dataclasses.fields(STLMConfig) if option_choices(f) is not None]
    assert {f.name for f in found} == {"patching", "pooling", "mlp", "mod_routing", "decoder_attention",
                                        "encoder_attention"}
    for f in found:
        cfg = load_config(None, [f"model.overrides.{f.name}=bogus_choice"])
        with pytest.raises(UserError) as err:
            build_model_config(cfg.model)
        text = str(err.value)
        assert f"STLMConfig.{f.name}='bogus_choice' is invalid; allowed: " in text and "\n" not in text
        assert all(c in text for c in option_choices(f)), text
