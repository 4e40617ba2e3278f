"""z_loss, distill and early_exit against hand computations; curricula, layer-dropout rates, teachers."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from stlm_selfplay.cli import main
from stlm_selfplay.errors import UserError
from stlm_selfplay.objectives import Batch, build_objective
from stlm_selfplay.objectives.distill import divergence
from stlm_selfplay.objectives.early_exit import ExitPlan, enabled_exits, layer_dropout_rates


def _batch(vocab: int = 259, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 5, vocab, generator=g) * 2
    ids = torch.tensor([[10, 20, 30, 258, 40], [256, 256, 65, 66, 67]])  # eos in row 0; pads in row 1
    attn = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    return logits, Batch(input_ids=ids, attention_mask=attn)


# target positions (b, t): logits[b, t-1] predicts ids[b, t]; row 1 starts at its first real id
TARGETS = [(0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (1, 3), (1, 4)]


def _nll(logits, b, t, ids):
    row = logits[b, t - 1].tolist()
    return math.log(sum(math.exp(v) for v in row)) - row[int(ids[b, t])]


# ----------------------------------------------------------------------------- z_loss


def test_z_loss_is_coef_times_mean_squared_log_z_and_its_gradient_skips_unmasked_positions():
    logits, batch = _batch()
    logits.requires_grad_(True)
    out = build_objective({"name": "z_loss", "coef": 0.01})[0](SimpleNamespace(logits=logits), batch)
    log_zs = [math.log(sum(math.exp(v) for v in logits[b, t - 1].tolist())) for b, t in TARGETS]
    expected = 0.01 * sum(z * z for z in log_zs) / len(log_zs)
    torch.testing.assert_close(out.loss, torch.tensor(expected), rtol=1e-5, atol=1e-7)
    assert out.metrics["log_z"] == pytest.approx(sum(log_zs) / len(log_zs), rel=1e-5)
    out.loss.backward()
    used = {(b, t - 1) for b, t in TARGETS}
    for b in range(2):
        for t in range(5):
            g = logits.grad[b, t]
            if (b, t) in used:  # d/dz coef/N (lse)^2 = 2 coef lse softmax(z) / N
                lse = torch.logsumexp(logits[b, t].detach(), -1)
                want = 2 * 0.01 * lse * torch.softmax(logits[b, t].detach(), -1) / len(TARGETS)
                torch.testing.assert_close(g, want, rtol=1e-4, atol=1e-8)
            else:
                assert torch.count_nonzero(g) == 0
    assert build_objective({"name": "z_loss"})[0].options.coef == 1e-4


# ----------------------------------------------------------------------------- distill


def _hand_divergence(s_row, t_row, kind, beta, tau):
    def softmax(row):
        m = max(row)
        e = [math.exp((v - m) / tau) for v in row]
        return [x / sum(e) for x in e]

    q, p = softmax(s_row), softmax(t_row)
    kl = lambda a, b: sum(x * math.log(x / y) for x, y in zip(a, b) if x > 0)  # noqa: E731  (0 log 0 = 0)
    if kind == "forward_kl":
        return kl(p, q)
    if kind == "reverse_kl":
        return kl(q, p)
    m = [beta * x + (1 - beta) * y for x, y in zip(p, q)]
    return beta * kl(p, m) + (1 - beta) * kl(q, m)


@pytest.mark.parametrize("kind,beta,tau", [("forward_kl", 0.5, 1.0), ("reverse_kl", 0.5, 2.0), ("jsd", 0.3, 1.5),
                                           ("jsd", 0.9, 1.0)])
def test_divergence_equals_hand_formula(kind, beta, tau):
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(3, 6, generator=g), torch.randn(3, 6, generator=g) * 2
    got = divergence(s, t, kind, beta, tau)
    want = torch.tensor([_hand_divergence(s[i].tolist(), t[i].tolist(), kind, beta, tau) for i in range(3)])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.fixture
def stlm_teacher(tmp_path, tiny_model):
    model = tiny_model(seed=3)
    folder = tmp_path / "teacher"
    model.save_pretrained(str(folder))
    return folder, model.eval()


def test_distill_from_stlm_checkpoint_matches_hand_loss_and_teacher_is_frozen(stlm_teacher):
    folder, reference = stlm_teacher
    obj = build_objective({"name": "distill", "teacher": str(folder), "loss": "jsd", "beta": 0.4,
                           "temperature": 2.0})[0]
    logits, batch = _batch(seed=5)
    logits.requires_grad_(True)
    out = obj(SimpleNamespace(logits=logits), batch)
    with torch.no_grad():
        t_logits = reference(batch.input_ids, attention_mask=batch.attention_mask).logits
    terms = [_hand_divergence(logits[b, t - 1].tolist(), t_logits[b, t - 1].tolist(), "jsd", 0.4, 2.0)
             for b, t in TARGETS]
    torch.testing.assert_close(out.loss, torch.tensor(4.0 * sum(terms) / len(terms)), rtol=1e-4, atol=1e-6)
    out.loss.backward()
    teacher = obj.teacher()
    assert not teacher.training and all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert logits.grad is not None and torch.count_nonzero(logits.grad[0, 0]) > 0
    assert list(obj.parameters()) == [] and obj.state_dict() == {}  # never trained, never checkpointed
    assert obj.spec.kind == "stlm"


def test_distill_gradient_reaches_the_student_model_only(stlm_teacher, tiny_model):
    folder, _ = stlm_teacher
    student = tiny_model(seed=4)
    obj = build_objective({"name": "distill", "teacher": str(folder)})[0]
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    obj(student(ids), Batch(ids)).loss.backward()
    assert all(p.grad is not None for n, p in student.named_parameters() if "lora" not in n)
    assert all(p.grad is None for p in obj.teacher().parameters())


def _hf_teacher(folder, byte_vocab: bool):
    """A tiny GPT-2 teacher saved with a WordLevel tokenizer: byte tokens chr(b) at id b+3, or words."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    vocab.update({chr(b): b + 3 for b in range(256)} if byte_vocab else {"the": 3, "cat": 4})
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="<unk>")),
                                  pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(6)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(vocab), n_positions=32, n_embd=8, n_layer=1, n_head=2,
                                      bos_token_id=1, eos_token_id=1, pad_token_id=0))
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return model.eval()


def test_distill_from_byte_level_hf_model_uses_byte_targets_renormalized(tmp_path):
    reference = _hf_teacher(tmp_path / "hf", byte_vocab=True)
    obj = build_objective({"name": "distill", "teacher": str(tmp_path / "hf"), "loss": "reverse_kl"})[0]
    assert obj.spec.kind == "hf" and obj.spec.byte_ids == [b + 3 for b in range(256)]
    logits, batch = _batch(seed=7)
    out = obj(SimpleNamespace(logits=logits), batch)
    mapped = torch.where(batch.input_ids < 256, batch.input_ids + 3, torch.tensor(1))  # pad -> <pad>=0 below
    mapped = torch.where(batch.input_ids == 256, torch.tensor(0), mapped)
    with torch.no_grad():
        t_logits = reference(input_ids=mapped, attention_mask=batch.attention_mask).logits[..., 3:]
    byte_targets = [(b, t) for b, t in TARGETS if batch.input_ids[b, t] < 256]  # the eos target is skipped
    terms = [_hand_divergence(logits[b, t - 1, :256].tolist(), t_logits[b, t - 1].tolist(), "reverse_kl", 0.5, 1.0)
             for b, t in byte_targets]
    torch.testing.assert_close(out.loss, torch.tensor(sum(terms) / len(terms)), rtol=1e-4, atol=1e-6)


def test_distill_teacher_without_byte_vocabulary_is_one_line_user_error(tmp_path, capsys):
    _hf_teacher(tmp_path / "words", byte_vocab=False)
    with pytest.raises(UserError) as err:
        build_objective({"name": "distill", "teacher": str(tmp_path / "words")})
    assert "does not map one-to-one onto bytes 0-255" in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "c.yaml").write_text("run: {name: x}\n")
    capsys.readouterr()
    code = main(["pretrain", "--print-config", str(tmp_path / "c.yaml"),
                 f"objectives=[{{name: distill, teacher: {tmp_path / 'words'}}}]"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "one-to-one onto bytes" in lines[0]
    for bad in ({"teacher": ""}, {"teacher": str(tmp_path / "nowhere")}):
        with pytest.raises(UserError):
            build_objective({"name": "distill", **bad})


def test_distill_option_errors():
    with pytest.raises(UserError, match="loss must be one of"):
        build_objective({"name": "distill", "teacher": "x", "loss": "kl"})
    with pytest.raises(UserError, match="beta must be in"):
        build_objective({"name": "distill", "teacher": "x", "beta": 1.0})


# ----------------------------------------------------------------------------- early_exit


def test_early_exit_with_only_the_last_layer_on_equals_ce():
    logits, batch = _batch()
    others = torch.randn(2, 2, 5, 259)
    batch.step, batch.total_steps = 0, 100  # gradual at t=0: only layer L-1
    ce = build_objective({"name": "ce"})[0](SimpleNamespace(logits=logits), batch)
    ee = build_objective({"name": "early_exit", "curriculum": "gradual", "scale": "linear_l"})[0]
    for exits in ({0: others[0], 1: others[1], 2: logits}, [others[0], None, logits], (None, None, logits)):
        out = ee(SimpleNamespace(logits=logits, exit_logits=exits), batch)
        torch.testing.assert_close(out.loss, ce.loss)
        assert out.metrics["bpb"] == pytest.approx(ce.metrics["bpb"]) and out.metrics["exits_on"] == 1


@pytest.mark.parametrize("scale,f", [("uniform", lambda n: 1.0), ("linear_l", lambda n: n),
                                     ("sum_l", lambda n: n * (n + 1) / 2), ("sqrt_l", math.sqrt),
                                     ("inv_l", lambda n: 1 / n)])
def test_early_exit_loss_is_normalized_scaled_sum_of_exit_ces(scale, f):
    g = torch.Generator().manual_seed(2)
    exits = [torch.randn(2, 5, 259, generator=g) for _ in range(4)]
    _, batch = _batch()
    obj = build_objective({"name": "early_exit", "scale": scale, "e_scale": 0.5})[0]
    out = obj(SimpleNamespace(logits=exits[-1], exit_logits=dict(enumerate(exits))), batch)
    raw = [0.5 * f(1), 0.5 * f(2), 0.5 * f(3), f(4)]  # curriculum none: all on; e_scale on l < L-1
    ces = [sum(_nll(x, b, t, batch.input_ids) for b, t in TARGETS) / len(TARGETS) for x in exits]
    expected = sum(r * c for r, c in zip(raw, ces)) / sum(raw)
    torch.testing.assert_close(out.loss, torch.tensor(expected), rtol=1e-5, atol=1e-6)


def test_curricula_enable_the_layers_of_the_formula():
    assert enabled_exits("none", 7, 10, 4) == [0, 1, 2, 3]
    assert [enabled_exits("rotational", t, 10, 4) for t in range(5)] == [[0, 3], [1, 3], [2, 3], [0, 3], [1, 3]]
    # gradual, L=5, T=100: layer l on once t/T >= 0.5 (4 - l)/4, i.e. l=3 at 12.5%, 2 at 25%, 1 at 37.5%, 0 at 50%
    expected = {0: [4], 12: [4], 13: [3, 4], 24: [3, 4], 25: [2, 3, 4], 37: [2, 3, 4], 38: [1, 2, 3, 4],
                49: [1, 2, 3, 4], 50: [0, 1, 2, 3, 4], 99: [0, 1, 2, 3, 4]}
    assert {t: enabled_exits("gradual", t, 100, 5) for t in expected} == expected
    assert enabled_exits("rotational", 3, 10, 1) == enabled_exits("gradual", 0, 10, 1) == [0]
    plan = build_objective({"name": "early_exit", "curriculum": "rotational"})[0].model_kwargs(Batch(torch.zeros(1, 2).long(), step=5))
    assert isinstance(plan["exit_layers"], ExitPlan) and plan["exit_layers"](4) == [2, 3]


def test_early_exit_gradient_reaches_enabled_exits_only():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 8, generator=g)
    heads = [torch.randn(8, 259, generator=g).requires_grad_(True) for _ in range(4)]
    _, batch = _batch()
    batch.step = 1  # rotational at t=1: exits 1 and 3
    obj = build_objective({"name": "early_exit", "curriculum": "rotational"})[0]
    exits = {l: x @ w for l, w in enumerate(heads)}
    obj(SimpleNamespace(logits=exits[3], exit_logits=exits), batch).loss.backward()
    assert heads[0].grad is None and heads[2].grad is None
    assert torch.count_nonzero(heads[1].grad) > 0 and torch.count_nonzero(heads[3].grad) > 0


def test_early_exit_errors():
    logits, batch = _batch()
    obj = build_objective({"name": "early_exit"})[0]
    with pytest.raises(UserError, match="per-layer exit logits"):
        obj(SimpleNamespace(logits=logits, exit_logits=None), batch)
    with pytest.raises(ValueError, match=r"layers \[1\]"):
        obj(SimpleNamespace(logits=logits, exit_logits={0: logits, 2: logits}), batch)
    for bad in ({"curriculum": "rot"}, {"scale": "sum"}, {"e_scale": -1.0}):
        with pytest.raises(UserError):
            build_objective({"name": "early_exit", **bad})


def test_layer_dropout_rates_follow_the_formula():
    rates = layer_dropout_rates(step=5, total_steps=10, n_layers=4, p_max=0.2, from_scratch=True)
    s = math.exp(5 * math.log(2) / 10) - 1
    want = [s * (math.exp(l * math.log(2) / 3) - 1) * 0.2 for l in range(4)]
    assert rates == pytest.approx(want, rel=1e-12)
    assert rates[0] == 0.0 and layer_dropout_rates(10, 10, 4, 0.2, True)[-1] == pytest.approx(0.2)
    assert layer_dropout_rates(0, 10, 4, 0.2, True) == [0.0] * 4  # S(0) = 0 from scratch
    assert layer_dropout_rates(0, 10, 4, 0.2, False) == pytest.approx([(2 ** (l / 3) - 1) * 0.2 for l in range(4)])
    assert layer_dropout_rates(3, 10, 1, 0.5, True) == [0.0]


# ----------------------------------------------------------------------------- mtp


@pytest.mark.parametrize("anneal,w", [("none", 1.0), ("linear", 0.75), ("cosine", (1 + math.cos(math.pi / 4)) / 2)])
def test_mtp_is_annealed_sum_of_head_ces(anneal, w):
    g = torch.Generator().manual_seed(8)
    heads = [torch.randn(2, 5, 259, generator=g).requires_grad_(True) for _ in range(2)]
    logits, batch = _batch()
    batch.step, batch.total_steps = 25, 100
    out = build_objective({"name": "mtp", "anneal": anneal})[0](SimpleNamespace(logits=logits, mtp_logits=heads), batch)
    ces = [sum(_nll(h.detach(), b, t, batch.input_ids) for b, t in TARGETS) / len(TARGETS) for h in heads]
    torch.testing.assert_close(out.loss, torch.tensor(w * sum(ces)), rtol=1e-5, atol=1e-6)
    out.loss.backward()
    assert all(torch.count_nonzero(h.grad) > 0 for h in heads)
    with pytest.raises(UserError, match="multi-byte prediction heads"):
        build_objective({"name": "mtp"})[0](SimpleNamespace(logits=logits, mtp_logits=None), batch)
