"""The README's "Extending" recipes, each done for real with a toy plugin in a temporary module:
a game with an exact metric, an objective, a data source, a model option. Each test checks that the new part is
reachable by its config name through the same code paths the built-in ones use, and that what
it computes equals a hand computation."""

from __future__ import annotations

import importlib.util
import sys
from types import SimpleNamespace

import pytest
import torch


@pytest.fixture
def plugin(tmp_path):
    """Import a module written to a temporary file; undo its registrations afterwards."""
    from stlm_selfplay.data.sources import SOURCES
    from stlm_selfplay.envs import GAMES, PLAYERS
    from stlm_selfplay.objectives import REGISTRY
    from stlm_selfplay.selfplay.evaluate import EXACT_METRICS

    registries = [GAMES, EXACT_METRICS, REGISTRY, SOURCES, *PLAYERS.values()]
    before = [dict(r) for r in registries]
    player_games = set(PLAYERS)

    def load(name: str, source: str):
        path = tmp_path / f"{name}.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    yield load
    for registry, old in zip(registries, before):
        for key in [k for k in registry if k not in old]:
            del registry[key]
    for game in set(PLAYERS) - player_games:
        del PLAYERS[game]


TOY_GAME = '''
from stlm_selfplay.envs.nim import Nim
from stlm_selfplay.envs.registry import register_game
from stlm_selfplay.selfplay.evaluate import constrained_probs, exact_metric


@register_game("toy_nim")
class ToyNim(Nim):
    """Nim with one pile of 3: taking all 3 wins at once."""

    def __init__(self, **options):
        super().__init__(piles=(3,), **options)


@exact_metric("toy_nim", names=("win_now", "legal_mass"), headline=("win_now",), enabled_by="optimal_rate")
def toy_metrics(model, history):
    game = ToyNim().reset(0)
    probs = constrained_probs(model, [game])[0]
    return {"toy_nim/win_now": probs[max(probs, key=lambda a: a.count("3"))],
            "toy_nim/legal_mass": sum(probs.values())}
'''


def test_a_new_game_with_an_exact_metric_is_one_file(plugin, tiny_model):
    from stlm_selfplay.envs import list_players, make
    from stlm_selfplay.selfplay.config import EvalConfig
    from stlm_selfplay.selfplay.evaluate import constrained_probs, evaluate, metric_names

    module = plugin("toy_game", TOY_GAME)
    game = make("toy_nim", seed=0)
    assert game.legal_actions() and "random" in list_players("toy_nim")
    spec = EvalConfig(bots=["random"], episodes=2, ratings=False)
    assert metric_names(["toy_nim"], spec) == ["toy_nim/win_now", "toy_nim/random/win_rate"]
    model = tiny_model(seed=0).eval()
    metrics = evaluate(model, ["toy_nim"], spec, seed=0).metrics
    probs = constrained_probs(model, [module.ToyNim().reset(0)])[0]
    win_now = next(p for a, p in probs.items() if "3" in a)
    assert metrics["toy_nim/win_now"] == pytest.approx(win_now)
    assert metrics["toy_nim/legal_mass"] == pytest.approx(1.0)
    assert sum(metrics[f"toy_nim/random/{k}_rate"] for k in ("win", "draw", "loss")) == pytest.approx(1.0)
    off = evaluate(model, ["toy_nim"], EvalConfig(bots=["random"], episodes=1, optimal_rate=False), seed=0)
    assert "toy_nim/win_now" not in off.metrics  # the switch named by enabled_by


TOY_OBJECTIVE = '''
from dataclasses import dataclass

from stlm_selfplay.objectives.base import Batch, Objective, ObjectiveOutput
from stlm_selfplay.objectives.registry import register
from stlm_selfplay.options import option


@register("toy_logit_l2")
class LogitL2(Objective):
    """coef * mean over every logit of logit^2."""

    @dataclass
    class Options:
        coef: float = option(1.0, "weight of the mean squared logit")
        reduce: str = option("mean", "how the squares are reduced", choices=("mean",))

    def forward(self, output, batch: Batch) -> ObjectiveOutput:
        loss = self.options.coef * output.logits.float().square().mean()
        return ObjectiveOutput(loss, {"loss": loss.item()})
'''


def test_a_new_objective_is_one_file(plugin):
    from stlm_selfplay.errors import UserError
    from stlm_selfplay.objectives import Batch, build_objectives

    plugin("toy_objective", TOY_OBJECTIVE)
    logits = torch.arange(12, dtype=torch.float32).reshape(1, 3, 4) / 4
    batch = Batch(input_ids=torch.tensor([[1, 2, 3]]))
    out = build_objectives([{"name": "ce"}, {"name": "toy_logit_l2", "weight": 0.5, "coef": 2.0}])(
        SimpleNamespace(logits=logits), batch)
    by_hand = sum(v * v for v in (torch.arange(12) / 4).tolist()) / 12 * 2.0
    assert out.metrics["toy_logit_l2/loss"] == pytest.approx(by_hand)
    assert out.metrics["loss"] == pytest.approx(out.metrics["ce/loss"] + 0.5 * by_hand, rel=1e-6)
    with pytest.raises(UserError, match="objective 'toy_logit_l2' has no option 'coeff'"):
        build_objectives([{"name": "toy_logit_l2", "coeff": 1.0}])
    with pytest.raises(UserError, match="objective 'toy_logit_l2': reduce must be one of mean, got 'sum'"):
        build_objectives([{"name": "toy_logit_l2", "reduce": "sum"}])


TOY_SOURCE = '''
from stlm_selfplay.data.sources import register_source


@register_source("toy_counting", keys=("text_field",))
def documents(cfg):
    for i in range(cfg.max_documents or 3):
        yield "count " * (i + 1)
'''


def test_a_new_data_source_is_one_file(plugin, tmp_path):
    from stlm_selfplay.config import load_config
    from stlm_selfplay.data.cache import prepare_data, read_meta

    plugin("toy_source", TOY_SOURCE)
    cfg = load_config(None, ["data.source=toy_counting", "data.max_documents=4", f"data.cache_dir={tmp_path}/cache",
                             "data.val_fraction=0.0"])
    meta = read_meta(prepare_data(cfg.data))
    assert meta["documents"] == 4
    assert meta["bytes"] == sum(len("count " * (i + 1)) for i in range(4))  # every byte of every document
    assert meta["inputs"]["text_field"] == "text" and "path" not in meta["inputs"]  # its keys, and only those,
    #                                                                                  key the cache


TOY_MODEL_OPTION = '''
from stlm_selfplay.model.config import STLMConfig
from stlm_selfplay.model.modeling import STLMForCausalLM
from stlm_selfplay.options import option


class ToyConfig(STLMConfig):
    """STLMConfig with one more option, declared as the README's recipe says."""

    model_type = "stlm_toy_option"
    head_gain: float = option(1.0, "multiplies every byte logit (a toy option)")
    gain_mode: str = option("scale", "how head_gain acts", choices=("scale",))


class ToyModel(STLMForCausalLM):
    config_class = ToyConfig

    def head(self, hidden):  # read where it acts: every path to logits goes through head()
        return super().head(hidden) * self.config.head_gain
'''


def test_a_new_model_option_is_one_field(plugin, tmp_path):
    """The model-option recipe on a subclass in a temporary module: the field is an option with its
    help, its declared choices are checked by `validate`, it is saved in the checkpoint's
    config.json and loaded back, and it acts where it is read."""
    from stlm_selfplay.options import schema_options

    toy = plugin("toy_model_option", TOY_MODEL_OPTION)
    fields = dict(schema_options(toy.ToyConfig))
    assert fields["head_gain"].metadata["help"] == "multiplies every byte logit (a toy option)"
    with pytest.raises(ValueError, match="gain_mode"):
        toy.ToyConfig(d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, d_ff=64, d_local=16, local_heads=2,
                      gain_mode="square")
    small = dict(d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, d_ff=64, d_local=16, local_heads=2, max_seq_len=32)
    torch.manual_seed(0)
    model = toy.ToyModel(toy.ToyConfig(**small, head_gain=3.0)).eval()
    model.save_pretrained(tmp_path / "toy")
    loaded = toy.ToyModel.from_pretrained(tmp_path / "toy").eval()
    assert loaded.config.head_gain == 3.0
    ids = torch.tensor([list(b"ttt x ...|...|... ?012345678>")])
    with torch.no_grad():
        gained, plain = loaded(ids).logits, toy.ToyModel(toy.ToyConfig(**small)).eval()
        plain.load_state_dict(loaded.state_dict())
        real = slice(0, 256)  # byte logits (PAD/BOS keep their fixed never-emitted value x gain)
        assert torch.allclose(gained[..., real], 3.0 * plain(ids).logits[..., real], atol=1e-5)
